"""Recipes for resolutions nobody searched: inverse-distance weights in (log area, log aspect),
the training size as a dense anchor, the registry's ``interpolate`` and ``generate
--fallback interpolate``."""

from __future__ import annotations

import math

import pytest
from test_recipe_roundtrip import make_recipe

from crdiff_search.errors import UsageError
from crdiff_search.interpolate import (
    interpolate_recipe,
    interpolation_weights,
    resolution_coordinates,
)


def _at(w, h, **ratios):
    return make_recipe(width=w, height=h, ratios=ratios or {"down": 0.3, "mid": 0.2, "up": 0.1})


def test_coordinates():
    area, aspect = resolution_coordinates("64x32")
    assert area == pytest.approx(math.log(2048)) and aspect == pytest.approx(math.log(2))


def test_exact_resolution_is_its_own_recipe():
    recipes = [_at(24, 24, down=0.9, mid=0.6, up=0.2), _at(48, 48, down=0.1, mid=0.0, up=0.0)]
    assert interpolate_recipe((24, 24), recipes) is recipes[0]
    assert interpolation_weights((48, 48), ["24x24", "48x48"]) == {1: 1.0}


def test_midpoint_in_log_area_averages_ratios_and_poa():
    small = _at(24, 24, down=0.8, mid=0.4, up=0.2).replace(poa_w=2.0)
    large = _at(48, 48, down=0.2, mid=0.0, up=0.4).replace(poa_w=1.0)
    # 34x34 is not exactly the log-area midpoint of 24x24 and 48x48 (33.9x33.9 is)
    target = (34, 34)
    got = interpolate_recipe(target, [small, large], k=2)
    d_small = abs(math.log(34 * 34) - math.log(24 * 24))
    d_large = abs(math.log(48 * 48) - math.log(34 * 34))
    w_small = (1 / d_small**2) / (1 / d_small**2 + 1 / d_large**2)
    assert got.resolution == target
    assert got.ratios["down"] == pytest.approx(w_small * 0.8 + (1 - w_small) * 0.2)
    assert got.ratios["mid"] == pytest.approx(w_small * 0.4)
    assert got.poa_w == pytest.approx(w_small * 2.0 + (1 - w_small) * 1.0, abs=1e-6)
    assert got.scores == {} and got.study_id is None
    assert got.trial_id.startswith("interpolated:48x48=") and "24x24=" in got.trial_id


def test_aspect_counts_twice_and_k_limits_neighbours():
    square = _at(32, 32, down=0.5, mid=0.5, up=0.5)
    wide = _at(64, 32, down=0.0, mid=0.0, up=0.0)
    tall = _at(32, 64, down=0.9, mid=0.9, up=0.9)
    one = interpolate_recipe((60, 32), [square, wide, tall], k=1)
    assert one.ratios == wide.ratios  # k = 1 is the nearest recipe's ratios
    weights = interpolation_weights((40, 32), ["32x32", "64x32", "32x64"], k=3)
    assert max(weights, key=weights.get) == 0 and sum(weights.values()) == pytest.approx(1)
    assert weights[2] < weights[1]  # the other aspect is farther than the same aspect


def test_training_size_is_a_dense_anchor():
    below = _at(24, 24, down=0.9, mid=0.6, up=0.3)
    near_training = interpolate_recipe((30, 30), [below], training=(32, 32))
    assert all(near_training.ratios[g] < below.ratios[g] for g in below.ratios)
    assert near_training.poa_w < below.poa_w
    assert "32x32=" in near_training.trial_id
    # without the anchor, one recipe is copied
    copied = interpolate_recipe((30, 30), [below])
    assert copied.ratios == below.ratios
    # a recipe registered at the training size is used instead of the anchor
    at_training = _at(32, 32, down=0.2, mid=0.2, up=0.2)
    got = interpolate_recipe((32, 32), [below, at_training], training=(32, 32))
    assert got is at_training


def test_incompatible_recipes_are_refused():
    with pytest.raises(UsageError, match="at least one"):
        interpolate_recipe((24, 24), [])
    with pytest.raises(UsageError, match="prune other groups"):
        interpolate_recipe((30, 30), [_at(24, 24, down=0.1), _at(48, 48, up=0.1)])
    with pytest.raises(UsageError, match="one recipe per resolution"):
        interpolate_recipe((30, 30), [_at(24, 24), _at(24, 24)])
    with pytest.raises(UsageError, match="differ in model"):
        interpolate_recipe((30, 30), [_at(24, 24), _at(48, 48).replace(model="other")])
    with pytest.raises(UsageError, match="k=0"):
        interpolation_weights((30, 30), ["24x24"], k=0)


def test_registry_interpolates_from_its_current_recipes(tmp_path):
    from test_registry_core import fresh_registry_uri

    from crdiff_search.registry import RecipeNotFoundError, Registry

    reg = Registry(fresh_registry_uri(tmp_path / "reg"))
    with pytest.raises(RecipeNotFoundError, match="export"):
        reg.interpolate("testbed", "30x30")
    reg.export(_at(24, 24, down=0.9, mid=0.6, up=0.3))
    reg.export(_at(48, 48, down=0.1, mid=0.0, up=0.0))
    recipe, used = reg.interpolate("testbed", "30x30")  # the testbed trained at 32x32
    assert len(used) == 2 and "32x32=" in recipe.trial_id
    assert recipe.ratios["down"] < 0.9
    exact, used = reg.interpolate("testbed", "48x48")
    assert exact.resolution == (48, 48) and len(used) == 1


def test_generate_rejects_an_unknown_fallback():
    from crdiff_search.generate import resolve_recipe

    with pytest.raises(UsageError, match="fallback 'closest'.*nearest, interpolate"):
        resolve_recipe("testbed", (24, 24), "registry", fallback="closest")
