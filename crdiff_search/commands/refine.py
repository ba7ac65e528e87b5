"""``crdiff refine --model M --resolution WxH --prompt TEXT``: the shared recipe, refined for a
prompt. The work is :func:`crdiff_search.refine.refine`."""

from __future__ import annotations

import argparse
import sys

from crdiff_search.interpolate import FALLBACKS


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "refine",
        help="refine the registry's recipe on your own prompt(s), checked on new seeds",
        description=(
            "A short search on your prompt(s), with several seeds per prompt, starting from the "
            "registry's recipe for MODEL at WxH; then dense, the registry recipe and the refined "
            "one on new seeds of the same prompts, with paired 95 % intervals, and a compare "
            "grid. The refined recipe is saved in the run folder (and --save FILE); it goes to "
            "the shared registry only with --export."
        ),
    )
    from crdiff_search.commands.generate import add_model_and_prompts

    add_model_and_prompts(parser)
    parser.add_argument("--trials", type=int, default=16, help="search trials, dense included (16)")
    parser.add_argument("--seeds", type=int, default=8, help="search seeds per prompt (8)")
    parser.add_argument(
        "--check-seeds", type=int, default=8, help="new seeds per prompt for the verdict (8)"
    )
    parser.add_argument(
        "--recipe", default="registry", help="'registry' (default) or a recipe JSON file"
    )
    parser.add_argument(
        "--registry", default=None, help="registry URI (default sqlite:///<cwd>/mlflow.db)"
    )
    parser.add_argument(
        "--fallback",
        choices=FALLBACKS,
        default="interpolate",
        help="where the registry has no recipe at WxH: an interpolated one (default) or the "
        "nearest one",
    )
    parser.add_argument("--sampler", default="anneal", help="search sampler (default anneal)")
    parser.add_argument("--concurrency", type=int, default=2, help="trials at once (2)")
    parser.add_argument(
        "--out", default=None, help="run folder (default runs/refine/<prompt>-<hash>)"
    )
    parser.add_argument("--save", default=None, help="also write the refined recipe here")
    parser.add_argument(
        "--export",
        action="store_true",
        help="register the refined recipe (it becomes the registry's recipe at WxH)",
    )
    parser.add_argument(
        "--tracking", action="store_true", help="log the refinement's study to MLflow"
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from crdiff_search.errors import UsageError
    from crdiff_search.refine import refine
    from crdiff_search.resolution import parse_resolution
    from crdiff_search.samplers import SAMPLER_NAMES

    resolution = parse_resolution(args.resolution)
    if args.sampler not in SAMPLER_NAMES:
        raise UsageError(
            f"--sampler {args.sampler!r} is unknown; valid: {', '.join(SAMPLER_NAMES)}"
        )
    from crdiff_search.commands.generate import prompts_of

    result = refine(
        args.model,
        resolution,
        prompts_of(args),
        trials=args.trials,
        seeds_per_prompt=args.seeds,
        check_seeds=args.check_seeds,
        recipe=args.recipe,
        registry=args.registry,
        fallback=args.fallback,
        sampler=args.sampler,
        concurrency=args.concurrency,
        out=args.out,
        save=args.save,
        export=args.export,
        tracking=args.tracking,
        tracking_uri=args.registry,
        warn=lambda message: print(f"warning: {message}", file=sys.stderr),
    )
    print(f"recipe: {result.source}")
    print(result.summary)
    for path in result.files:
        print(f"saved: {path}")
    if result.exported is not None:
        print(f"exported: {result.exported.name} version {result.exported.version}")
    return 0
