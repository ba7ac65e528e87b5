"""The ``crdiff`` command line.

Each sub-command lives in its own module under :mod:`crdiff_search.commands` and exposes
``register(subparsers)``; this module only discovers and dispatches them, so adding a command
never touches this file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from crdiff_search import __version__, commands, progress
from crdiff_search.errors import CrdiffError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crdiff",
        description="Cross-resolution pruning search for diffusion models.",
    )
    parser.add_argument("--version", action="version", version=f"crdiff-search {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    for command in sub.choices.values():  # the output flags every command shares
        command.add_argument(
            "-q", "--quiet", action="store_true", help="no progress output (results still print)"
        )
        command.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            help="also show the INFO lines of Ray, Tune, MLflow and diffusers",
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    progress.configure(mode="quiet" if args.quiet else "auto", verbose=args.verbose)
    try:
        return int(args.func(args) or 0)
    except CrdiffError as exc:  # the library's errors; anything else is a bug: traceback
        print(f"crdiff {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"crdiff {args.command}: interrupted", file=sys.stderr)
        return 130  # 128 + SIGINT, as shells expect


if __name__ == "__main__":
    sys.exit(main())
