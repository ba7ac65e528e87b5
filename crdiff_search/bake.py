"""A recipe baked into a plain diffusers folder: the pruned weights (w = 1) saved with
``save_pretrained``, so that a diffusers script without this package can load them.

POA needs the dense and the pruned network side by side at every step, which a plain pipeline
cannot do: a recipe whose POA weight is not 1 is baked at w = 1 and its POA setting is written
beside the weights (``crdiff-poa.json``), with the recipe itself (``crdiff-recipe.json``).

>>> # bake("runs/sd15/model", "recipe.json", "sd15-768-pruned")  # doctest: +SKIP
>>> # DiffusionPipeline.from_pretrained("sd15-768-pruned")       # no crdiff_search needed
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from crdiff_search.errors import UsageError

RECIPE_FILE = "crdiff-recipe.json"
POA_FILE = "crdiff-poa.json"


@dataclass
class BakeResult:
    folder: Path
    recipe: object  # the Recipe baked
    source: str  # where the recipe came from, in words
    poa_dropped: bool  # the recipe's POA weight is not 1: its setting is only written beside


def bake(
    model: str,
    recipe,
    out: str | Path,
    *,
    resolution: tuple[int, int] | None = None,
    registry: str | None = None,
    dtype: str = "float32",
    overwrite: bool = False,
    warn=lambda _: None,
) -> BakeResult:
    """Prune ``model`` (a pipeline folder or hub id) by ``recipe`` (a JSON path, a
    :class:`~crdiff_search.recipe.Recipe`, or ``"registry"`` with ``resolution``) and save the
    pipeline to ``out`` with ``save_pretrained`` (safetensors), plus the recipe and its POA
    setting as JSON files beside it."""
    from crdiff_search.apply import make_pruner
    from crdiff_search.generate import resolve_recipe
    from crdiff_search.models import denoiser_of, load_pipeline
    from crdiff_search.names import DTYPES

    if dtype not in DTYPES:
        raise UsageError(f"dtype {dtype!r} is not valid; valid: {', '.join(DTYPES)}")
    if model == "testbed":
        raise UsageError(
            "the testbed's pipeline is this package's own class, which plain diffusers cannot "
            "load: bake a diffusers pipeline folder or hub id"
        )
    if recipe == "registry" and resolution is None:
        raise UsageError("--recipe registry needs --resolution WxH (which recipe to bake)")
    folder = Path(out)
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise UsageError(f"{folder} exists and is not empty: pass --overwrite or another --out")
    if recipe in (None, "none"):
        raise UsageError("bake needs a recipe (a JSON file or 'registry'), not 'none'")
    if recipe == "registry":
        found, source = resolve_recipe(model, resolution, recipe, registry=registry, warn=warn)
    else:  # read once; resolve_recipe warns when a given resolution is not the recipe's
        from crdiff_search.recipe import Recipe

        given = recipe if isinstance(recipe, Recipe) else Recipe.load(recipe)
        found, source = resolve_recipe(
            model, resolution or given.resolution, given, registry=registry, warn=warn
        )
        source = source if isinstance(recipe, Recipe) else str(recipe)
    pipe = load_pipeline(model, dtype=dtype, device="cpu")
    if type(pipe).__module__.split(".")[0] != "diffusers":
        raise UsageError(
            f"{model} loads as {type(pipe).__name__}, not a diffusers pipeline: plain diffusers "
            "could not load the baked folder"
        )
    pruner = make_pruner(denoiser_of(pipe), found)
    pruner.apply_(found.ratios)
    try:
        if folder.exists() and overwrite:
            shutil.rmtree(folder)
        pipe.save_pretrained(folder, safe_serialization=True)
    finally:
        pruner.restore_()
    found.save(folder / RECIPE_FILE)
    poa = {
        "poa_w": found.poa_w,
        "poa_window": list(found.poa_window) if found.poa_window else None,
        "baked_w": 1.0,
        "note": (
            "the weights here are the pruned network (w = 1); POA at poa_w mixes it with the "
            "dense network at every step: apply the recipe to the base model with "
            "crdiff_search.apply_recipe for that"
        ),
        "attention_scaling": found.attention_scaling,
        "base_model": model,
        "resolution": found.resolution_str,
        "recipe_checksum": found.checksum,
    }
    (folder / POA_FILE).write_text(json.dumps(poa, indent=2) + "\n", encoding="utf-8")
    dropped = found.poa_w != 1.0
    if dropped:
        warn(
            f"the recipe's POA weight is {found.poa_w:g}: the baked folder holds the pruned "
            f"weights (w = 1) and {POA_FILE} keeps the POA setting, which plain diffusers "
            "cannot apply"
        )
    if found.attention_scaling:
        warn(
            f"the recipe also scales attention ({found.attention_scaling}); the factor depends on "
            "the token count of each generation, so it is not in the weights: apply the recipe "
            "with crdiff_search.apply_recipe for it"
        )
    return BakeResult(folder, found, source, dropped)
