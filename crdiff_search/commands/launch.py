"""``crdiff launch GRID``: one Ray job per (model, resolution) study on a Ray cluster.

The grid file, the planning and the Ray Jobs client live in :mod:`crdiff_search.launch`.
"""

from __future__ import annotations

import argparse
import sys


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "launch",
        help="run a grid of studies as Ray jobs, one per (model, resolution)",
        description=(
            "Submit one Ray job per study of a grid file through the Ray Jobs API, follow them, "
            "and print a summary. Finished studies are skipped when the grid is launched again."
        ),
    )
    parser.add_argument("grid", help="grid file (TOML): a list of [[study]] tables")
    parser.add_argument(
        "--address",
        default=None,
        help="Ray dashboard address, e.g. http://HEAD:8265 (default: RAY_ADDRESS or the local head)",
    )
    parser.add_argument(
        "--poll-interval", type=_positive, default=5.0, help="seconds between status polls (5)"
    )
    parser.add_argument(
        "--no-wait", action="store_true", help="submit and return without following the jobs"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="validate the grid and print the jobs; submit nothing",
    )
    parser.set_defaults(func=_handler)


def _handler(args) -> int:
    from crdiff_search.launch import launch

    try:
        _, code = launch(
            args.grid,
            address=args.address,
            poll_interval=args.poll_interval,
            wait=not args.no_wait,
            dry_run=args.dry_run,
        )
    except ConnectionError as exc:
        print(f"crdiff launch: error: {exc}", file=sys.stderr)
        return 1
    return code
