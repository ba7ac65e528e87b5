"""crdiff bake: a recipe baked into a plain diffusers folder that DiffusionPipeline loads and
that generates exactly what apply_recipe generates."""

from __future__ import annotations

import json

import numpy as np
import pytest

from crdiff_search.cli import main
from crdiff_search.recipe import Recipe

RATIOS = {"down": 0.3, "mid": 0.5, "up": 0.6}


def _images(pipe):
    import torch

    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    out = pipe(
        prompt=["a red cube", "two blue spheres"], height=32, width=32, num_inference_steps=2,
        guidance_scale=3.0, generator=gens, output_type="np",
    )  # fmt: skip
    return np.asarray(out.images)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from crdiff_search.testing import tiny_sd_pipeline

    folder = tmp_path_factory.mktemp("base") / "tiny-sd"
    tiny_sd_pipeline(seed=0).save_pretrained(folder)
    return folder


def test_baked_folder_loads_in_plain_diffusers_and_matches_apply_recipe(base, tmp_path, capsys):
    from diffusers import DiffusionPipeline

    import crdiff_search

    recipe = Recipe(model=str(base), width=32, height=32, ratios=RATIOS, poa_w=1.5)
    path = tmp_path / "recipe.json"
    recipe.save(path)
    out = tmp_path / "baked"
    rc = main(["bake", str(path), "--model", str(base), "--out", str(out)])
    assert rc == 0
    err = capsys.readouterr().err
    assert "POA weight is 1.5" in err  # said, not silently dropped
    baked = DiffusionPipeline.from_pretrained(out)
    baked.set_progress_bar_config(disable=True)
    reference = DiffusionPipeline.from_pretrained(base)
    reference.set_progress_bar_config(disable=True)
    dense = _images(reference)
    with crdiff_search.apply_recipe(reference, recipe, poa_w=1.0):
        pruned = _images(reference)
    assert np.array_equal(_images(baked), pruned)
    assert not np.array_equal(pruned, dense)
    poa = json.loads((out / "crdiff-poa.json").read_text())
    assert poa["poa_w"] == 1.5 and poa["baked_w"] == 1.0
    assert Recipe.load(out / "crdiff-recipe.json").checksum == recipe.checksum
    assert list(out.rglob("*.safetensors"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["registry"], "needs --resolution"),
        (["none"], "needs a recipe"),
        (["RECIPE", "--model", "testbed"], "plain diffusers cannot load"),
        (["RECIPE", "--dtype", "float8"], "dtype 'float8' is not valid"),
    ],
)
def test_bake_refuses_bad_input_with_one_line(args, message, base, tmp_path, capsys):
    path = tmp_path / "recipe.json"
    Recipe(model=str(base), width=32, height=32, ratios=RATIOS).save(path)
    args = [str(path) if a == "RECIPE" else a for a in args]
    if "--model" not in args:
        args += ["--model", str(base)]
    rc = main(["bake", *args, "--out", str(tmp_path / "out")])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_bake_does_not_overwrite_a_folder_silently(base, tmp_path, capsys):
    path = tmp_path / "recipe.json"
    Recipe(model=str(base), width=32, height=32, ratios=RATIOS).save(path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["bake", str(path), "--model", str(base), "--out", str(out)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
