"""Generation from a base model plus its recipe (pruning + POA): the ``crdiff generate`` workflow.

The recipe comes from the registry by (model, resolution), falling back to the nearest
registered resolution with a :class:`~crdiff_search.registry.NearestResolutionWarning` unless
``strict``; from a recipe JSON file; or is ``None`` (the dense model). ``compare=True`` also
writes ``compare.png``: dense | pruned | POA side by side, one row per prompt.

Example::

    from crdiff_search.generate import generate
    result = generate("testbed", (24, 24), ["two red circles"], recipe="registry", out="images")
    result.files, result.source
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crdiff_search.errors import UsageError

DEFAULT_OUT = "crdiff-images"


@dataclass
class GenerationResult:
    """What :func:`generate` wrote: image files, where the recipe came from, the metadata."""

    files: list[str]
    source: str
    recipe: Any  # Recipe | None
    meta: dict[str, Any] = field(default_factory=dict)


def sampling_defaults(
    model: str, recipe, steps: int | None, guidance: float | None
) -> tuple[int, float]:
    """Steps and guidance: the given ones, else the recipe's, else the model's own."""
    if steps is None and recipe is not None and recipe.steps:
        steps = recipe.steps
    if guidance is None and recipe is not None and recipe.guidance is not None:
        guidance = recipe.guidance
    from crdiff_search.config import sampling_defaults as model_defaults

    defaults = model_defaults(model)
    return int(defaults[0] if steps is None else steps), float(
        defaults[1] if guidance is None else guidance
    )


def resolve_recipe(
    model: str,
    resolution: tuple[int, int],
    recipe,
    *,
    registry: str | None = None,
    strict: bool = False,
    fallback: str = "interpolate",
    warn: Callable[[str], None] = lambda _: None,
):
    """``(recipe or None, source in words)`` for ``recipe`` = ``"registry"``, a JSON path, a
    :class:`~crdiff_search.recipe.Recipe`, or ``None``/``"none"`` (dense). At a resolution the
    registry does not hold, ``fallback`` takes the ``"nearest"`` registered recipe or
    ``"interpolate"``s one from the registered neighbours."""
    import warnings

    from crdiff_search.interpolate import check_fallback

    check_fallback(fallback)

    from crdiff_search.recipe import Recipe

    if recipe is None or recipe == "none":
        return None, "none"
    if isinstance(recipe, Recipe):
        found, source = recipe, "given"
    elif recipe == "registry":
        from crdiff_search.registry import NearestResolutionWarning, Registry

        reg = Registry(registry)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", NearestResolutionWarning)  # interpolated ones too
            found, source = reg.lookup(model, resolution, strict=strict, fallback=fallback)
        for w in caught:
            if issubclass(w.category, NearestResolutionWarning):
                warn(str(w.message))
        return found, source
    else:
        found, source = Recipe.load(recipe), str(recipe)
    if found.resolution != tuple(resolution):
        warn(
            f"recipe {source} was made for {found.resolution_str}, generating at "
            f"{resolution[0]}x{resolution[1]}"
        )
    return found, source


def generate(
    model: str,
    resolution: tuple[int, int],
    prompts: Sequence[str],
    *,
    recipe="registry",
    registry: str | None = None,
    strict: bool = False,
    fallback: str = "interpolate",
    poa_w: float | None = None,
    poa_window=None,
    compare: bool = False,
    out: str | Path = DEFAULT_OUT,
    seed: int = 0,
    steps: int | None = None,
    guidance: float | None = None,
    dtype: str = "float32",
    device: str = "auto",
    warn: Callable[[str], None] = lambda _: None,
) -> GenerationResult:
    """Generate one PNG per prompt (image ``i`` from seed ``seed + i``) into ``out``, plus
    ``generation.json`` and the recipe used; ``compare`` adds ``compare.png``."""
    from crdiff_search.images import compare_grid
    from crdiff_search.recipe import PoaWindow, check_weight

    width, height = resolution
    prompts = list(prompts)
    if not prompts:
        raise UsageError("give at least one --prompt TEXT or a --prompts FILE")
    if steps is not None and steps < 1:
        raise UsageError(f"--steps {steps} must be at least 1")
    from crdiff_search.names import DTYPES, check_device

    check_device(device)
    if dtype not in DTYPES:
        raise UsageError(f"dtype {dtype!r} is not valid; valid: {', '.join(DTYPES)}")
    poa_w = check_weight(poa_w) if poa_w is not None else None
    window = PoaWindow.parse(poa_window) if poa_window is not None else None
    if compare and (recipe is None or recipe == "none"):
        raise UsageError("--compare needs a recipe (--recipe registry or FILE), not 'none'")
    found, source = resolve_recipe(
        model,
        (width, height),
        recipe,
        registry=registry,
        strict=strict,
        fallback=fallback,
        warn=warn,
    )

    from crdiff_search.models import generate_images, load_pipeline, spatial_factor

    pipe = load_pipeline(model, dtype=dtype, device=device)
    factor = spatial_factor(pipe)
    if width % factor or height % factor:
        raise UsageError(
            f"resolution {width}x{height} is not a multiple of {factor} for {model}; "
            f"e.g. {width // factor * factor or factor}x{height // factor * factor or factor}"
        )
    steps, guidance = sampling_defaults(model, found, steps, guidance)
    seeds = [seed + i for i in range(len(prompts))]
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)

    def run():
        return generate_images(
            pipe, prompts, seeds, width=width, height=height, steps=steps, guidance=guidance
        )

    columns: dict[str, list] = {}
    w_used = None
    if found is None:
        columns["dense"] = run()
    else:
        from crdiff_search.apply import apply_recipe, make_pruner
        from crdiff_search.models import denoiser_of

        w_used = found.poa_w if poa_w is None else poa_w
        pruner = make_pruner(denoiser_of(pipe), found)
        if compare:
            columns["dense"] = run()
            with apply_recipe(pipe, found, poa_w=1.0, pruner=pruner):
                columns["pruned"] = run()
        with apply_recipe(pipe, found, poa_w=w_used, poa_window=window, pruner=pruner):
            columns[f"POA w={w_used:g}" if w_used != 1.0 else "pruned (w=1)"] = run()

    written = []
    main_label = list(columns)[-1]
    for i, (prompt, image) in enumerate(zip(prompts, columns[main_label], strict=True)):
        path = folder / f"{i:03d}-{slug(prompt)}.png"
        image.save(path)
        written.append(str(path))
    if compare:
        from crdiff_search.images import ratio_note

        notes = {label: [ratio_note(found.ratios)] for label in columns if label != "dense"}
        notes["dense"] = ["no pruning"]
        compare_grid(
            columns, prompts, title=f"{model} at {width}x{height}, recipe {source}", notes=notes
        ).save(folder / "compare.png")
        written.append(str(folder / "compare.png"))
    if window is not None:
        window_used = list(window.to_list())
    else:
        window_used = list(found.poa_window) if found and found.poa_window else None
    meta = {
        "model": model,
        "resolution": f"{width}x{height}",
        "recipe": source,
        "recipe_checksum": found.checksum if found else None,
        "poa_w": w_used,
        "poa_window": window_used,
        "steps": steps,
        "guidance": guidance,
        "prompts": prompts,
        "seeds": seeds,
        "files": written,
    }
    (folder / "generation.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if found is not None:
        found.save(folder / "recipe.json")
    return GenerationResult(written, source, found, meta)


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe, lower-case form of a prompt."""
    out = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return out[:limit] or "image"
