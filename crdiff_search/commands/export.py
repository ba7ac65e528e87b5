"""``crdiff export STUDY``: register the study's winner as a recipe for (model, resolution)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="register a study's winner as a recipe in the registry",
        description=(
            "Write the re-ranked winner of STUDY (STUDY/rerank.json, from `crdiff rerank`) as a "
            "recipe into the registry: a new version of the base model's registered model, with "
            "the resolution's alias pointing at it. --no-rerank exports the search's best trial "
            "without POA instead. A winner that does not beat the dense model on held-out "
            "prompts with an interval excluding zero is refused unless --allow-null."
        ),
    )
    parser.add_argument("study", metavar="STUDY", help="a study output folder")
    parser.add_argument(
        "--registry", default=None, help="registry URI (default sqlite:///<cwd>/mlflow.db)"
    )
    parser.add_argument(
        "--no-rerank", action="store_true", help="export the best search trial (w = 1)"
    )
    parser.add_argument(
        "--allow-null",
        action="store_true",
        help="register a winner the held-out check did not confirm (or never ran)",
    )
    parser.add_argument("--recipe-out", default=None, help="also write the recipe JSON here")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from crdiff_search.registry import Registry
    from crdiff_search.rerank import recipe_from_study

    recipe = recipe_from_study(
        args.study, use_rerank=not args.no_rerank, allow_null=args.allow_null
    )
    entry = Registry(args.registry).export(recipe)
    if args.recipe_out:
        recipe.save(args.recipe_out)
    scores = ", ".join(f"{k} {v:.4f}" for k, v in recipe.scores.items())
    print(
        f"registered {entry.name} version {entry.version} (alias {entry.resolution_str}): "
        f"{recipe.model} at {recipe.resolution_str}, ratios "
        + ", ".join(f"{g}={r:.3f}" for g, r in recipe.ratios.items())
        + f", POA w={recipe.poa_w:g}; {recipe.objective}: {scores}"
    )
    return 0
