"""``crdiff generate``: images at a resolution from a base model plus its recipe (pruning + POA).

``--recipe registry`` (default) looks the recipe up in the registry by (model, resolution),
falling back to a recipe interpolated from the registered ones (``--fallback nearest``: the
nearest registered resolution's) with a warning unless ``--strict``;
``--recipe FILE`` reads a recipe JSON; ``--recipe none`` generates with the dense model.
``--compare`` also writes ``compare.png``: dense | pruned | POA side by side, one row per prompt.
The work is :func:`crdiff_search.generate.generate`.
"""

from __future__ import annotations

import argparse
import sys

from crdiff_search.generate import DEFAULT_OUT
from crdiff_search.interpolate import FALLBACKS


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="generate images from a model and its registered (or given) recipe",
        description=(
            "Generate images at WIDTHxHEIGHT with the model pruned and amplified by its recipe. "
            "The recipe comes from the registry (where that resolution has none: one interpolated "
            "from the registered ones, with a warning), from a JSON file, or is 'none' (the "
            "dense model)."
        ),
    )
    add_model_and_prompts(parser)
    parser.add_argument(
        "--recipe", default="registry", help="'registry' (default), a recipe JSON file, or 'none'"
    )
    parser.add_argument(
        "--registry", default=None, help="registry URI (default sqlite:///<cwd>/mlflow.db)"
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="fail when the registry has no recipe at exactly this resolution",
    )
    parser.add_argument(
        "--fallback",
        choices=FALLBACKS,
        default="interpolate",
        help="at a resolution the registry does not hold: a recipe interpolated from the "
        "registered ones and the training size (default), or the nearest registered recipe",
    )
    parser.add_argument(
        "--poa-w", type=float, default=None, help="POA weight (default: the recipe's)"
    )
    parser.add_argument(
        "--poa-window",
        default=None,
        help="LO,HI in normalised diffusion time (default: the recipe's)",
    )
    parser.add_argument(
        "--compare", action="store_true", help="also write compare.png: dense | pruned | POA"
    )
    parser.add_argument(
        "--out", default=DEFAULT_OUT, help=f"output folder (default ./{DEFAULT_OUT})"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the first image; image i uses seed+i"
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="denoising steps (default: the recipe's, else the model's)",
    )
    parser.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="guidance scale (default: the recipe's, else the model's)",
    )
    parser.add_argument("--dtype", default="float32", help="float32 (default), float16, bfloat16")
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (default: the first GPU if there is one, else cpu), cpu, cuda, cuda:N or mps",
    )
    parser.set_defaults(func=_run)


def add_model_and_prompts(parser) -> None:
    """``--model``, ``--resolution``, ``--prompt`` (repeatable) and ``--prompts FILE``."""
    parser.add_argument("--model", required=True, help="'testbed', a pipeline folder or a hub id")
    parser.add_argument("--resolution", required=True, help="WIDTHxHEIGHT, e.g. 768x512")
    parser.add_argument(
        "--prompt", action="append", default=[], help="a prompt (repeat the flag for more)"
    )
    parser.add_argument("--prompts", default=None, help="a text file, one prompt per line")


def prompts_of(args: argparse.Namespace) -> list[str]:
    """The prompts of ``--prompt`` (repeated) followed by the lines of ``--prompts FILE``."""
    prompts = list(args.prompt)
    if args.prompts:
        from crdiff_search.config import read_prompt_file

        prompts += read_prompt_file(args.prompts, "--prompts file")
    return prompts


def _run(args: argparse.Namespace) -> int:
    from crdiff_search.generate import generate
    from crdiff_search.resolution import parse_resolution

    resolution = parse_resolution(args.resolution)
    prompts = prompts_of(args)
    result = generate(
        args.model,
        resolution,
        prompts,
        recipe=args.recipe,
        registry=args.registry,
        strict=args.strict,
        fallback=args.fallback,
        poa_w=args.poa_w,
        poa_window=args.poa_window,
        compare=args.compare,
        out=args.out,
        seed=args.seed,
        steps=args.steps,
        guidance=args.guidance,
        dtype=args.dtype,
        device=args.device,
        warn=lambda message: print(f"warning: {message}", file=sys.stderr),
    )
    print(f"recipe: {result.source}")
    print(f"wrote {len(result.files)} image file(s) to {args.out}")
    return 0
