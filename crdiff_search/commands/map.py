"""``crdiff map GRID|STUDY...``: the repair map of a launched grid (one study per resolution)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "map",
        help="one table and figure of dense vs repaired across a grid's resolutions",
        description=(
            "Collect the held-out re-ranking of every study of a grid file (or of the given "
            "study folders) into one table and figure: per resolution the dense model, the best "
            "pruned and pruned + POA candidates, the winner's difference from dense with its "
            "interval and p-value, its ratios, and the share of the gap to the training-size "
            "score it closes. Writes OUT/map.csv, map.png and map.md."
        ),
    )
    parser.add_argument(
        "sources", nargs="+", metavar="GRID|STUDY", help="a grid TOML file, or study folders"
    )
    parser.add_argument("--out", default=None, help="output folder (default: <grid out>/map)")
    parser.add_argument(
        "--training-resolution",
        default=None,
        metavar="WxH",
        help="the model's training size, the ceiling (default: read from the model's config)",
    )
    parser.add_argument("--title", default="", help="figure title")
    parser.set_defaults(func=_run)


def _folders(sources: list[str]) -> tuple[list[Path], Path | None]:
    """Study folders and the default output folder: a grid's studies, or folders as given."""
    from crdiff_search.errors import UsageError

    if len(sources) == 1 and Path(sources[0]).is_file():
        from crdiff_search.launch import load_grid, plan_grid

        grid = load_grid(sources[0])
        return [plan.out_dir for plan in plan_grid(grid)], grid.out / "map"
    missing = [s for s in sources if not Path(s).is_dir()]
    if missing:
        raise UsageError(f"{', '.join(map(repr, missing))}: neither a grid file nor a study folder")
    return [Path(s) for s in sources], None


def _run(args: argparse.Namespace) -> int:
    from crdiff_search.analysis.repair_map import build_map, format_markdown, write_map
    from crdiff_search.errors import UsageError
    from crdiff_search.model_info import training_resolution
    from crdiff_search.rerank import load_study
    from crdiff_search.resolution import parse_resolution
    from crdiff_search.study_folder import StudyFolder

    folders, default_out = _folders(args.sources)
    missing = [f for f in folders if not StudyFolder(f).rerank_json.is_file()]
    if missing:
        raise UsageError(
            "no held-out re-ranking yet in "
            + ", ".join(str(f) for f in missing)
            + ": run `crdiff rerank STUDY` for each (or launch with rerank.after_search = true)"
        )
    config = load_study(folders[0])[0]
    if args.training_resolution:
        training = parse_resolution(args.training_resolution)
    else:
        training = training_resolution(config.model.source)
    out = Path(args.out) if args.out else default_out
    if out is None:
        raise UsageError("--out DIR is needed when the map is built from study folders")
    table = build_map(folders, training=training)
    title = args.title or (
        f"Repair map of {config.model.source}"
        + (f" (trained at {training[0]}x{training[1]})" if training else "")
        + f": held-out prompts, {int(table['n_prompts'].min())} per resolution"
    )
    paths = write_map(table, out, training=training, title=title)
    sys.stdout.write(format_markdown(table))
    print(f"saved: {', '.join(str(p) for p in paths)}")
    return 0
