"""``crdiff bake RECIPE --model M --out FOLDER``: a recipe baked into a plain diffusers folder."""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bake",
        help="save a model pruned by a recipe as a plain diffusers folder",
        description=(
            "Prune MODEL by RECIPE (a recipe JSON file, or 'registry' with --resolution) and save "
            "the pipeline with save_pretrained into --out, so that DiffusionPipeline."
            "from_pretrained(FOLDER) loads it without this package. The pruned weights are "
            "saved at w = 1; a recipe's POA setting is written beside them (crdiff-poa.json)."
        ),
    )
    parser.add_argument("recipe", help="a recipe JSON file, or 'registry'")
    parser.add_argument(
        "--model", required=True, help="the base model: a pipeline folder or hub id"
    )
    parser.add_argument("--out", required=True, help="the folder to write")
    parser.add_argument("--resolution", default=None, help="WIDTHxHEIGHT (with 'registry')")
    parser.add_argument(
        "--registry", default=None, help="registry URI (default sqlite:///<cwd>/mlflow.db)"
    )
    parser.add_argument("--dtype", default="float32", help="float32 (default), float16, bfloat16")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from crdiff_search import progress
    from crdiff_search.bake import bake
    from crdiff_search.resolution import parse_resolution

    resolution = parse_resolution(args.resolution) if args.resolution else None
    say = progress.Reporter("bake")
    say.phase(f"loading {args.model} and pruning it by the recipe")
    result = bake(
        args.model,
        args.recipe,
        args.out,
        resolution=resolution,
        registry=args.registry,
        dtype=args.dtype,
        overwrite=args.overwrite,
        warn=lambda message: print(f"warning: {message}", file=sys.stderr),
    )
    ratios = ", ".join(f"{g}={r:g}" for g, r in result.recipe.ratios.items())
    print(f"recipe: {result.source} ({ratios}; POA w={result.recipe.poa_w:g})")
    print(f"wrote {result.folder} (DiffusionPipeline.from_pretrained loads it)")
    return 0
