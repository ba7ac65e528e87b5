"""Warm starts from the registry: the points (interpolated first, then the nearest recipes,
clipped, distinct, at most ``warm_start_points``) and the error when there is nothing to start
from. A study whose first trials after the dense one are those points: test_search_runner."""

from __future__ import annotations

import pytest
from test_recipe_roundtrip import make_recipe
from test_registry_core import fresh_registry_uri

from crdiff_search.config import ExperimentConfig
from crdiff_search.errors import UsageError
from crdiff_search.registry import Registry
from crdiff_search.warm_start import plan_warm_start

GROUPS = ("down", "mid", "up")


def _testbed(uri: str, resolution: str, **search) -> ExperimentConfig:
    return ExperimentConfig.from_dict(
        {
            "resolution": resolution,
            "tracking": {"enabled": False, "uri": uri},
            "ratios": {"low": 0.0, "high": 0.9},
            "search": {"warm_start": "registry", **search},
        }
    )


def test_points_are_interpolated_then_nearest_clipped_and_distinct(tmp_path):
    uri = fresh_registry_uri(tmp_path / "reg")
    reg = Registry(uri)
    reg.export(make_recipe(width=24, height=24, ratios={"down": 0.95, "mid": 0.6, "up": 0.2}))
    reg.export(make_recipe(width=48, height=48, ratios={"down": 0.1, "mid": 0.0, "up": 0.0}))
    reg.export(make_recipe(width=28, height=28, ratios={"down": 0.5, "mid": 0.5, "up": 0.5}))
    plan = plan_warm_start(_testbed(uri, "28x28", warm_start_points=3), GROUPS)
    # the study's own resolution is left out: 24x24 and 48x48 (and the 32x32 dense anchor)
    assert len(plan["points"]) == 3 and plan["registry"] == uri
    first, nearest, farther = plan["points"]
    assert plan["sources"][0].startswith("interpolated:")
    assert 0 < first["down"] < 0.9
    assert nearest == {"down": 0.9, "mid": 0.6, "up": 0.2}  # 24x24, clipped to the 0.9 bound
    assert farther == {"down": 0.1, "mid": 0.0, "up": 0.0}
    assert plan["sources"][1].startswith("24x24")
    two = plan_warm_start(_testbed(uri, "28x28", warm_start_points=2), GROUPS)
    assert two["points"] == plan["points"][:2]


def test_nothing_to_start_from_is_a_clear_early_error(tmp_path):
    uri = fresh_registry_uri(tmp_path / "reg")
    reg = Registry(uri)
    with pytest.raises(UsageError, match="no recipe of 'testbed'.*it has: none"):
        plan_warm_start(_testbed(uri, "24x24"), GROUPS)
    reg.export(make_recipe(width=24, height=24))
    with pytest.raises(UsageError, match="another resolution than 24x24"):
        plan_warm_start(_testbed(uri, "24x24"), GROUPS)
    assert plan_warm_start(ExperimentConfig(), GROUPS) is None


def test_config_fields_are_validated():
    with pytest.raises(UsageError, match="search.warm_start.*registry"):
        ExperimentConfig.from_dict({"search": {"warm_start": "cache"}})
    with pytest.raises(UsageError, match="search.warm_start_points"):
        ExperimentConfig.from_dict({"search": {"warm_start_points": 0}})
