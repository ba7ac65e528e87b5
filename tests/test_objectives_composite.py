"""The name table (create/register/cache) and the composite objective, on cheap scorers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from crdiff_search import objectives
from crdiff_search.errors import UsageError
from crdiff_search.objectives import (
    OBJECTIVE_NAMES,
    Objective,
    clear_objective_cache,
    create_objective,
    register_objective,
)


class Brightness(Objective):
    name = "test-brightness"
    built = 0

    def __init__(self, *, scale: float = 1.0):
        type(self).built += 1
        self.scale = scale

    def score(self, images, prompts):
        return np.array([self.scale * np.asarray(im, dtype=float).mean() / 255 for im in images])


class PromptLength(Objective):
    name = "test-length"

    def score(self, images, prompts):
        return np.array([float(len(p)) for p in prompts])


@pytest.fixture(autouse=True)
def cheap_scorers():
    register_objective("test-brightness", Brightness, replace=True)
    register_objective("test-length", f"{__name__}:PromptLength", replace=True)
    clear_objective_cache()
    yield
    for name in ("test-brightness", "test-length"):
        objectives.OBJECTIVES.unregister(name)
    clear_objective_cache()


def _grey(level: int) -> Image.Image:
    return Image.fromarray(np.full((8, 8, 3), level, dtype=np.uint8))


def test_builtin_names_and_registration():
    for name in (
        "imagereward",
        "clip",
        "pickscore",
        "aesthetic",
        "fid",
        "kid",
        "composite",
        "scene",
    ):
        assert name in OBJECTIVE_NAMES
    assert "test-brightness" in OBJECTIVE_NAMES and list(OBJECTIVE_NAMES) == sorted(OBJECTIVE_NAMES)
    with pytest.raises(UsageError, match="already registered"):
        register_objective("test-brightness", Brightness)
    with pytest.raises(UsageError, match="lower-case"):
        register_objective("Bad Name", Brightness)
    with pytest.raises(UsageError, match="callable or 'module:attribute'"):
        register_objective("test-x", 3)


def test_cache_is_keyed_by_name_and_options():
    Brightness.built = 0
    a = create_objective("test-brightness", scale=2.0)
    assert create_objective("TEST-BRIGHTNESS", scale=2.0) is a
    b = create_objective("test-brightness", scale=3.0)
    assert b is not a and Brightness.built == 2
    clear_objective_cache()
    assert create_objective("test-brightness", scale=2.0) is not a


def test_unknown_name_lists_valid_ones_and_bad_options_are_named():
    with pytest.raises(UsageError, match=r"unknown objective 'nope'; valid names: aesthetic, clip"):
        create_objective("nope")
    with pytest.raises(UsageError, match="scale"):
        create_objective("test-brightness", sclae=1.0)


def test_importing_the_table_stays_light():
    code = "import sys, objectives; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_composite_is_the_weighted_sum():
    obj = create_objective("composite", terms={"test-brightness": 2.0, "test-length": -0.5})
    images, prompts = [_grey(0), _grey(255)], ["ab", "abcd"]
    np.testing.assert_allclose(obj.score(images, prompts), [2 * 0 - 1.0, 2 * 1 - 2.0])
    parts = obj.parts(images, prompts)
    assert list(parts.columns) == [
        "test-brightness",
        "test-brightness.weighted",
        "test-length",
        "test-length.weighted",
        "total",
    ]
    # Its scorers come from the shared cache.
    assert obj.scorers[0] is create_objective("test-brightness")
    assert obj.per_image  # every term scores images one by one


def test_relative_terms_subtract_the_dense_score_per_prompt_and_seed():
    obj = create_objective(
        "composite",
        terms=[
            {"name": "test-brightness", "weight": 10.0, "relative": True},
            {"name": "test-length", "weight": 1.0},
        ],
    )
    prompts = ["p", "q", "p"]
    with pytest.raises(UsageError, match="set_dense"):
        obj.score([_grey(0)] * 3, prompts)
    obj.set_dense([_grey(51), _grey(102), _grey(153)], prompts)
    got = obj.score([_grey(102), _grey(102), _grey(102)], prompts)
    np.testing.assert_allclose(got, [10 * 0.2 + 1, 10 * 0.0 + 1, 10 * -0.2 + 1], atol=1e-12)
    # A chunk with one prompt matches that prompt's dense images in order.
    np.testing.assert_allclose(obj.score([_grey(51), _grey(153)], ["p", "p"]), [1.0, 1.0])
    with pytest.raises(UsageError, match="3 images here but 2 dense"):
        obj.score([_grey(0)] * 3, ["p", "p", "p"])


@pytest.mark.parametrize(
    "terms, message",
    [
        ({}, "at least one term"),
        ([{"weight": 1.0}], "needs at least a 'name'"),
        ([{"name": "test-length", "wieght": 1}], "unknown composite term keys"),
        ({"test-length": float("nan")}, "finite"),
        ([{"name": "composite"}], "cannot contain"),
        ([{"name": "test-length"}, {"name": "test-length"}], "repeat"),
        ({"nope": 1.0}, "unknown objective 'nope'"),
    ],
)
def test_composite_rejects_bad_terms(terms, message):
    with pytest.raises(UsageError, match=message):
        create_objective("composite", terms=terms)
