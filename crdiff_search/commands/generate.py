"""``crdiff generate``: images at a resolution from a base model plus its recipe (pruning + POA).

``--recipe registry`` (default) looks the recipe up in the registry by (model, resolution),
falling back to the nearest registered resolution with a warning unless ``--strict``;
``--recipe FILE`` reads a recipe JSON; ``--recipe none`` generates with the dense model.
``--compare`` also writes ``compare.png``: dense | pruned | POA side by side, one row per prompt.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

DEFAULT_OUT = "crdiff-images"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="generate images from a model and its registered (or given) recipe",
        description=(
            "Generate images at WIDTHxHEIGHT with the model pruned and amplified by its recipe. "
            "The recipe comes from the registry (nearest resolution, with a warning, when that "
            "resolution has none), from a JSON file, or is 'none' (the dense model)."
        ),
    )
    parser.add_argument("--model", required=True, help="'testbed', a pipeline folder or a hub id")
    parser.add_argument("--resolution", required=True, help="WIDTHxHEIGHT, e.g. 768x512")
    parser.add_argument(
        "--prompt", action="append", default=[], help="a prompt (repeat the flag for more)"
    )
    parser.add_argument("--prompts", default=None, help="a text file, one prompt per line")
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
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import warnings

    from crdiff_search.errors import UsageError
    from crdiff_search.recipe import PoaWindow, Recipe, check_weight, parse_resolution

    width, height = parse_resolution(args.resolution)
    prompts = list(args.prompt)
    if args.prompts:
        path = Path(args.prompts)
        if not path.is_file():
            raise UsageError(f"--prompts file {str(path)!r} does not exist")
        prompts += [
            line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
        ]
    if not prompts:
        raise UsageError("give at least one --prompt TEXT or a --prompts FILE")
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps {args.steps} must be at least 1")
    poa_w = check_weight(args.poa_w) if args.poa_w is not None else None
    window = PoaWindow.parse(args.poa_window) if args.poa_window is not None else None

    recipe: Recipe | None = None
    source = args.recipe
    if source == "none":
        if args.compare:
            raise UsageError("--compare needs a recipe (--recipe registry or FILE), not 'none'")
    elif source == "registry":
        from crdiff_search.registry import NearestResolutionWarning, Registry

        registry = Registry(args.registry)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", NearestResolutionWarning)
            entry = registry.resolve(args.model, (width, height), strict=args.strict)
        for w in caught:
            if issubclass(w.category, NearestResolutionWarning):
                print(f"warning: {w.message}", file=sys.stderr)
        recipe = registry.read_recipe(entry)
        source = f"registry {entry.name} version {entry.version} ({entry.resolution_str})"
    else:
        recipe = Recipe.load(source)
        if recipe.resolution != (width, height):
            print(
                f"warning: recipe {source} was made for {recipe.resolution_str}, generating at "
                f"{width}x{height}",
                file=sys.stderr,
            )

    from crdiff_search.models import load_pipeline, spatial_factor

    pipe = load_pipeline(args.model, dtype=args.dtype, device=args.device)
    factor = spatial_factor(pipe)
    if width % factor or height % factor:
        raise UsageError(
            f"resolution {width}x{height} is not a multiple of {factor} for {args.model}; "
            f"e.g. {width // factor * factor or factor}x{height // factor * factor or factor}"
        )
    steps, guidance = _sampling_defaults(args, recipe)
    seeds = [args.seed + i for i in range(len(prompts))]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def generate():
        from crdiff_search.models import generate_images

        return generate_images(
            pipe, prompts, seeds, width=width, height=height, steps=steps, guidance=guidance
        )

    columns: dict[str, list] = {}
    w_used = None
    if recipe is None:
        columns["dense"] = generate()
    else:
        from crdiff_search.apply import apply_recipe, make_pruner
        from crdiff_search.models import denoiser_of

        w_used = recipe.poa_w if poa_w is None else poa_w
        pruner = make_pruner(denoiser_of(pipe), recipe)
        if args.compare:
            columns["dense"] = generate()
            with apply_recipe(pipe, recipe, poa_w=1.0, pruner=pruner):
                columns["pruned"] = generate()
        with apply_recipe(pipe, recipe, poa_w=w_used, poa_window=window, pruner=pruner):
            columns[f"POA w={w_used:g}" if w_used != 1.0 else "pruned (w=1)"] = generate()

    written = []
    main_label = list(columns)[-1]
    for i, (prompt, image) in enumerate(zip(prompts, columns[main_label], strict=True)):
        path = out / f"{i:03d}-{_slug(prompt)}.png"
        image.save(path)
        written.append(str(path))
    if args.compare:
        grid = compare_grid(columns, prompts)
        grid.save(out / "compare.png")
        written.append(str(out / "compare.png"))
    meta = {
        "model": args.model,
        "resolution": f"{width}x{height}",
        "recipe": source,
        "recipe_checksum": recipe.checksum if recipe else None,
        "poa_w": w_used,
        "poa_window": list(window.to_list())
        if window
        else (list(recipe.poa_window) if recipe and recipe.poa_window else None),
        "steps": steps,
        "guidance": guidance,
        "prompts": prompts,
        "seeds": seeds,
        "files": written,
    }
    (out / "generation.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if recipe is not None:
        recipe.save(out / "recipe.json")
    print(f"recipe: {source}")
    print(f"wrote {len(written)} image file(s) to {out}")
    return 0


def _sampling_defaults(args, recipe) -> tuple[int, float]:
    steps = (
        args.steps
        if args.steps is not None
        else (recipe.steps if recipe and recipe.steps else None)
    )
    guidance = (
        args.guidance
        if args.guidance is not None
        else (recipe.guidance if recipe and recipe.guidance is not None else None)
    )
    if steps is None or guidance is None:
        if args.model == "testbed":
            from crdiff_search.testbed import DEFAULT_GUIDANCE, DEFAULT_STEPS

            default_steps, default_guidance = DEFAULT_STEPS, DEFAULT_GUIDANCE
        else:
            default_steps, default_guidance = 30, 7.5
        steps = default_steps if steps is None else steps
        guidance = default_guidance if guidance is None else guidance
    return int(steps), float(guidance)


def _slug(text: str, limit: int = 40) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return slug[:limit] or "image"


def compare_grid(columns: dict[str, list], prompts: list[str], *, min_tile: int = 128):
    """One row per prompt, one labelled column per variant (e.g. dense | pruned | POA)."""
    import textwrap

    from PIL import Image, ImageDraw, ImageFont

    labels = list(columns)
    first = columns[labels[0]][0]
    w, h = first.size
    scale = max(1, -(-min_tile // w))
    tw, th = w * scale, h * scale
    font = ImageFont.load_default()
    pad, header, caption = 4, 18, 28
    grid = Image.new(
        "RGB",
        (len(labels) * (tw + pad) + pad, header + len(prompts) * (th + caption + pad)),
        "white",
    )
    draw = ImageDraw.Draw(grid)
    for c, label in enumerate(labels):
        draw.text((pad + c * (tw + pad), 3), label, fill="black", font=font)
    for r, prompt in enumerate(prompts):
        y = header + r * (th + caption + pad)
        for c, label in enumerate(labels):
            tile = columns[label][r].convert("RGB").resize((tw, th), Image.NEAREST)
            grid.paste(tile, (pad + c * (tw + pad), y))
        text = "\n".join(textwrap.wrap(prompt, width=max(12, (len(labels) * (tw + pad)) // 7))[:2])
        draw.text((pad, y + th + 2), text, fill="black", font=font)
    return grid
