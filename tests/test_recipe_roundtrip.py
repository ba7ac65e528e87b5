"""Recipe: validation, dict/JSON round-trip, tamper and malformed-input rejection."""

from __future__ import annotations

import json

import pytest

from crdiff_search.errors import UsageError
from crdiff_search.recipe import (
    PartitionSpec,
    Recipe,
    RecipeError,
)
from crdiff_search.resolution import parse_resolution
from crdiff_search.version import code_version


def make_recipe(**changes) -> Recipe:
    base = dict(
        model="testbed",
        model_revision="sha256:" + "ab" * 32,
        width=64,
        height=48,
        partition=PartitionSpec("paper"),
        ratios={"down": 0.3, "mid": 0.25, "up": 0.4},
        poa_w=1.5,
        poa_window=(0.2, 1.0),
        objective="scene",
        scores={"dense": 0.41, "pruned": 0.52, "recipe": 0.55},
        steps=20,
        guidance=5.0,
        study_id="study-1",
        run_id="abc123",
        trial_id="t7",
        code_version="0.1.0",
        created_at="2026-11-28T16:00:00+00:00",
    )
    base.update(changes)
    return Recipe(**base)


def test_round_trip_dict_json_and_file(tmp_path):
    recipe = make_recipe()
    data = recipe.to_dict()
    assert data["checksum"] == recipe.checksum and len(data["checksum"]) == 64
    assert data["partition"] == {"granularity": "paper", "include": None, "n_groups": None}
    assert data["poa_window"] == [0.2, 1.0]
    assert Recipe.from_dict(data) == recipe
    assert Recipe.from_json(recipe.to_json()) == recipe
    path = recipe.save(tmp_path / "r" / "recipe.json")
    loaded = Recipe.load(path)
    assert loaded == recipe and loaded.resolution == (64, 48) and loaded.resolution_str == "64x48"
    assert json.loads(path.read_text())["schema_version"] == 1


def test_checksum_detects_tampering(tmp_path):
    data = make_recipe().to_dict()
    data["ratios"]["up"] = 0.7
    with pytest.raises(RecipeError, match="checksum mismatch"):
        Recipe.from_dict(data)
    data = make_recipe().to_dict()
    data.pop("checksum")
    with pytest.raises(RecipeError, match="no checksum"):
        Recipe.from_dict(data)
    assert Recipe.from_dict(data, verify=False) == make_recipe()
    path = make_recipe().save(tmp_path / "recipe.json")
    path.write_text(path.read_text().replace('"poa_w": 1.5', '"poa_w": 3.0'))
    with pytest.raises(RecipeError, match="modified after export"):
        Recipe.load(path)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"ratios": {"down": 1.0}}, "valid ratios are in"),
        ({"ratios": {}}, "non-empty"),
        ({"width": 0}, "positive integer"),
        ({"criterion": "l2"}, "criterion 'l2' is unknown"),
        ({"poa_w": float("inf")}, "poa_w"),
        ({"poa_window": (0.9, 0.1)}, "poa_window"),
        ({"scores": {"dense": float("nan")}}, "finite"),
        ({"partition": {"granularity": "layer"}}, "granularity 'layer' is unknown"),
        ({"schema_version": 99}, "schema_version 99"),
        ({"model": ""}, "model"),
    ],
)
def test_invalid_fields_are_rejected_with_a_clear_error(change, message):
    with pytest.raises(RecipeError, match=message):
        make_recipe(**change)


def test_malformed_documents_are_rejected(tmp_path):
    assert issubclass(RecipeError, UsageError)
    with pytest.raises(RecipeError, match="not valid JSON"):
        Recipe.from_json("{not json")
    with pytest.raises(RecipeError, match="JSON object"):
        Recipe.from_json("[1, 2]")
    with pytest.raises(RecipeError, match="unknown fields"):
        Recipe.from_dict({**make_recipe().to_dict(), "extra": 1})
    with pytest.raises(RecipeError, match="missing required fields"):
        Recipe.from_dict({"model": "testbed"}, verify=False)
    with pytest.raises(RecipeError, match="schema_version 2"):
        Recipe.from_dict({**make_recipe().to_dict(), "schema_version": 2})
    with pytest.raises(RecipeError, match="does not exist"):
        Recipe.load(tmp_path / "missing.json")


def test_resolution_parsing_and_code_version():
    assert parse_resolution("768x512") == (768, 512)
    assert parse_resolution([64, 32]) == (64, 32)
    for bad in ("768", "axb", "0x64", (1, 2, 3)):
        with pytest.raises(UsageError):
            parse_resolution(bad)
    assert code_version().startswith("0.1.0")
