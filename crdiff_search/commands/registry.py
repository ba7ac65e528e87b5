"""``crdiff registry list|show``: the recipes in the registry."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "registry",
        help="list or show the registered recipes",
        description="List registered recipes (one per model and resolution) or show one in full.",
    )
    sub = parser.add_subparsers(dest="registry_command", metavar="ACTION")
    lst = sub.add_parser("list", help="the current recipe per (model, resolution)")
    lst.add_argument("--model", default=None, help="only this base model")
    lst.add_argument("--all-versions", action="store_true", help="every exported version")
    lst.add_argument("--json", action="store_true", help="JSON rows instead of a table")
    show = sub.add_parser("show", help="one recipe in full (JSON)")
    show.add_argument("--model", required=True, help="base model id or path")
    show.add_argument("--resolution", default=None, help="WIDTHxHEIGHT")
    show.add_argument("--version", type=int, default=None, help="a registry version instead")
    show.add_argument(
        "--nearest", action="store_true", help="fall back to the nearest registered resolution"
    )
    for p in (lst, show):
        p.add_argument("--registry", default=None, help="URI (default sqlite:///<cwd>/mlflow.db)")
    parser.set_defaults(func=_run, _parser=parser)


def _run(args: argparse.Namespace) -> int:
    from crdiff_search.errors import UsageError

    if args.registry_command is None:
        args._parser.print_help()
        return 2
    if args.registry_command == "show" and args.resolution is None and args.version is None:
        raise UsageError("registry show needs --resolution WxH or --version N")
    if args.registry_command == "show" and args.resolution is not None:
        from crdiff_search.resolution import parse_resolution

        parse_resolution(args.resolution)
    from crdiff_search.registry import Registry

    reg = Registry(args.registry)
    if args.registry_command == "list":
        rows = [e.to_row() for e in reg.list(args.model, all_versions=args.all_versions)]
        if args.json:
            print(json.dumps(rows, indent=2))
        elif not rows:
            print(f"no recipes registered in {reg.uri}")
        else:
            print(format_rows(rows))
        return 0
    entry = reg.show(args.model, args.resolution, version=args.version, strict=not args.nearest)
    print(
        json.dumps(
            {
                "name": entry.name,
                "version": entry.version,
                "aliases": entry.aliases,
                "recipe": entry.recipe.to_dict(),
            },
            indent=2,
        )
    )
    return 0


def format_rows(rows: list[dict]) -> str:
    cols = list(rows[0])
    cells = [[_cell(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
