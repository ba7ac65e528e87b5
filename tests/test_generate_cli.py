"""`crdiff generate`: PNGs from a recipe file or the registry, and the labelled compare grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from crdiff_search.cli import main
from crdiff_search.recipe import Recipe

RATIOS = {"down": 0.3, "mid": 0.5, "up": 0.4}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from crdiff_search.testing import tiny_sd_pipeline

    folder = tmp_path_factory.mktemp("tiny-sd")
    tiny_sd_pipeline(seed=3).save_pretrained(folder)
    return folder


def _recipe(model, **kw) -> Recipe:
    base = dict(
        model=str(model), width=16, height=16, ratios=RATIOS, poa_w=1.5, steps=2, guidance=4.0
    )
    base.update(kw)
    return Recipe(**base)


def test_generate_from_file_with_compare_grid(model_dir, tmp_path, capsys):
    recipe_path = _recipe(model_dir).save(tmp_path / "recipe.json")
    out = tmp_path / "out"
    code = main(
        [
            "generate",
            "--model",
            str(model_dir),
            "--resolution",
            "16x16",
            "--prompt",
            "a red circle",
            "--prompt",
            "two blue squares",
            "--recipe",
            str(recipe_path),
            "--compare",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["000-a-red-circle.png", "001-two-blue-squares.png", "compare.png"]
    assert Image.open(out / "000-a-red-circle.png").size == (16, 16)
    grid = Image.open(out / "compare.png")
    # three 192-px columns (16 px tiles scaled x12) with 8-px gutters, two rows of tiles
    assert grid.size[0] == 3 * (192 + 8) + 8
    assert grid.size[1] > 2 * 192
    # the first row of tiles sits under the title and the headers, at the same height in
    # every column: find it from the POA column, which is the file written for prompt 0
    pixels = np.asarray(grid)
    poa = np.asarray(Image.open(out / "000-a-red-circle.png").resize((192, 192), Image.NEAREST))
    x = [8 + c * 200 for c in range(3)]
    rows = [
        y
        for y in range(pixels.shape[0] - 192)
        if np.array_equal(pixels[y, x[2] : x[2] + 192], poa[0])
    ]
    top = next(y for y in rows if np.array_equal(pixels[y : y + 192, x[2] : x[2] + 192], poa))
    tiles = [pixels[top : top + 192, x0 : x0 + 192] for x0 in x]
    assert not np.array_equal(tiles[0], tiles[1]) and not np.array_equal(tiles[1], tiles[2])
    meta = json.loads((out / "generation.json").read_text())
    assert meta["poa_w"] == 1.5 and meta["steps"] == 2 and meta["seeds"] == [0, 1]
    assert Recipe.load(out / "recipe.json") == _recipe(model_dir)


def test_generate_from_registry_nearest_and_strict(model_dir, tmp_path, capsys):
    from test_registry_core import fresh_registry_uri

    from crdiff_search.registry import Registry

    uri = fresh_registry_uri(tmp_path / "reg")
    Registry(uri).export(_recipe(model_dir, width=16, height=16))
    out = tmp_path / "out"
    code = main(
        [
            "generate",
            "--model",
            str(model_dir),
            "--resolution",
            "24x16",
            "--prompt",
            "a green square",
            "--registry",
            uri,
            "--poa-w",
            "2",
            "--out",
            str(out),
            "--seed",
            "7",
            "--fallback",
            "nearest",
        ]
    )
    assert code == 0
    err = capsys.readouterr().err
    assert "nearest registered resolution 16x16" in err
    image = Image.open(out / "000-a-green-square.png")
    assert image.size == (24, 16)
    meta = json.loads((out / "generation.json").read_text())
    assert meta["poa_w"] == 2.0 and meta["recipe"].endswith("version 1 (16x16)")
    code = main(
        [
            "generate",
            "--model",
            str(model_dir),
            "--resolution",
            "24x16",
            "--strict",
            "--prompt",
            "x",
            "--registry",
            uri,
            "--out",
            str(out),
        ]
    )
    assert code == 2
    assert "strict" in capsys.readouterr().err
    # the default: interpolated from 16x16 and the tiny model's training size as a dense anchor
    code = main(
        ["generate", "--model", str(model_dir), "--resolution", "24x16", "--prompt", "x",
         "--registry", uri, "--out", str(tmp_path / "interp")]
    )  # fmt: skip
    assert code == 0
    assert "interpolated from" in capsys.readouterr().err
    meta = json.loads((tmp_path / "interp" / "generation.json").read_text())
    assert meta["recipe"] == "interpolated from the recipes registered at 16x16"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--resolution", "16by16", "--prompt", "x"], "WIDTHxHEIGHT"),
        (["--resolution", "16x16"], "at least one --prompt"),
        (["--resolution", "16x16", "--prompt", "x", "--poa-w", "nan"], "finite"),
        (
            ["--resolution", "16x16", "--prompt", "x", "--recipe", "none", "--compare"],
            "needs a recipe",
        ),
        (["--resolution", "16x16", "--prompt", "x", "--recipe", "missing.json"], "does not exist"),
    ],
)
def test_generate_rejects_bad_input_before_loading(argv, message, capsys):
    assert main(["generate", "--model", "nowhere", *argv]) == 2
    assert message in capsys.readouterr().err


def test_compare_grid_headers_carry_scores_ratios_and_a_legible_font():
    """The grid says what each column is (label, ratios, mean score), each image's score and
    the prompt, in a scalable font; small images are enlarged without smoothing."""
    import numpy as np
    from PIL import Image, ImageFont

    from crdiff_search.images import compare_grid, legible_font

    assert isinstance(legible_font(14), ImageFont.FreeTypeFont)
    rng = np.random.default_rng(0)
    tile = Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8))
    columns = {"dense": [tile, tile], "pruned": [tile, tile]}
    plain = compare_grid(columns, ["a red cube", "two blue spheres"])
    scored = compare_grid(
        columns,
        ["a red cube", "two blue spheres"],
        title="testbed at 24x24",
        notes={"pruned": ["down 0.90, mid 0.10, up 0.35"]},
        scores={"dense": [0.5, 0.25], "pruned": [1.0, 0.5]},
    )
    assert scored.size[1] > plain.size[1]  # title, notes, score lines take room
    assert plain.size[0] >= 2 * 192  # 24 px tiles enlarged to at least 192
    # nearest neighbour: no colour that is not in the tile, except the text's greys
    tile_colours = {tuple(c) for c in np.asarray(tile).reshape(-1, 3)}
    seen = {tuple(c) for c in np.asarray(scored).reshape(-1, 3)}
    assert {c for c in seen if len(set(c)) > 1} <= tile_colours
