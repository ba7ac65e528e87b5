"""Registry over MLflow's Model Registry: export, get, nearest resolution, strict, list, tamper,
and two exports from two processes at once."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_recipe_roundtrip import make_recipe

from crdiff_search.errors import UsageError
from crdiff_search.recipe import RecipeError
from crdiff_search.registry import (
    InterpolatedRecipeWarning,
    NearestResolutionWarning,
    RecipeNotFoundError,
    Registry,
    nearest_resolution,
    registered_name,
)

_TEMPLATE: list[Path] = []


def fresh_registry_uri(folder: Path) -> str:
    """A registry URI on a new SQLite file copied from an empty, migrated one: creating MLflow's
    schema takes seconds, copying it milliseconds."""
    if not _TEMPLATE:
        import tempfile

        template = Path(tempfile.mkdtemp(prefix="crdiff-reg-template-")) / "mlflow.db"
        client = Registry(f"sqlite:///{template}").client
        client.search_experiments()
        client.search_registered_models()
        _TEMPLATE.append(template)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(_TEMPLATE[0], folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """A registry with testbed recipes at 64x48 (two exports) and 96x96, and one SDXL recipe."""
    reg = Registry(fresh_registry_uri(tmp_path_factory.mktemp("reg")))
    first = reg.export(make_recipe(poa_w=1.25))
    second = reg.export(make_recipe(poa_w=1.5, study_id="study-2"))
    square = reg.export(make_recipe(width=96, height=96, poa_w=2.0))
    xl = reg.export(
        make_recipe(
            model="stabilityai/stable-diffusion-xl-base-1.0",
            width=512,
            height=512,
            ratios={"down": 0.1, "mid": 0.2, "up": 0.3},
        )
    )
    return reg, (first, second, square, xl)


def test_export_versions_and_aliases(filled):
    reg, (first, second, square, xl) = filled
    assert first.name == "crdiff-testbed" and (first.version, second.version, square.version) == (
        1,
        2,
        3,
    )
    assert xl.name == "crdiff-stabilityai--stable-diffusion-xl-base-1.0" and xl.version == 1
    registered = reg.client.get_registered_model("crdiff-testbed")
    assert {a: int(v) for a, v in registered.aliases.items()} == {"64x48": 2, "96x96": 3}
    assert registered.tags["crdiff.base_model"] == "testbed"
    mv = reg.client.get_model_version("crdiff-testbed", "1")
    assert (
        mv.tags["crdiff.resolution"] == "64x48"
        and mv.tags["crdiff.checksum"] == first.recipe.checksum
    )


def test_get_exact_returns_the_latest_export_for_that_resolution(filled):
    reg, _ = filled
    recipe = reg.get("testbed", "64x48")
    assert recipe == make_recipe(poa_w=1.5, study_id="study-2")
    assert reg.get("testbed", (96, 96), strict=True).poa_w == 2.0


def test_get_nearest_resolution_warns_and_strict_raises(filled):
    reg, _ = filled
    # 96x72 has the aspect ratio of 64x48: chosen over 96x96 although 96x96 is closer in area
    with pytest.warns(
        NearestResolutionWarning, match=r"at 96x72; using the nearest registered resolution 64x48"
    ):
        recipe = reg.get("testbed", "96x72", fallback="nearest")
    assert recipe.resolution == (64, 48)
    with pytest.warns(NearestResolutionWarning, match="96x96"):
        assert reg.get("testbed", "100x100", fallback="nearest").resolution == (96, 96)
    with pytest.raises(RecipeNotFoundError, match=r"strict.*registered resolutions: 64x48, 96x96"):
        reg.get("testbed", "96x72", strict=True)
    with pytest.raises(RecipeNotFoundError, match="no recipes registered for model 'other'"):
        reg.get("other", "64x64")
    # the default fallback interpolates (the training size, 32x32, joins as a dense anchor)
    with pytest.warns(InterpolatedRecipeWarning, match="at 96x72; interpolated from 64x48="):
        between = reg.get("testbed", "96x72")
    assert between.resolution == (96, 72) and between.trial_id.startswith("interpolated:")
    with pytest.raises(UsageError, match="fallback 'closest'"):
        reg.get("testbed", "96x72", fallback="closest")


def test_list_and_show(filled):
    reg, _ = filled
    rows = [e.to_row() for e in reg.list()]
    assert [(r["model"], r["resolution"], r["version"]) for r in rows] == [
        ("stabilityai/stable-diffusion-xl-base-1.0", "512x512", 1),
        ("testbed", "64x48", 2),
        ("testbed", "96x96", 3),
    ]
    assert rows[1]["score"] == pytest.approx(0.55) and rows[1]["dense_score"] == pytest.approx(0.41)
    every = [e.to_row() for e in reg.list("testbed", all_versions=True)]
    assert len(every) == 3
    # the versions the aliases point at are current, the superseded one is not
    current = {(r["resolution"], r["version"]): r["current"] for r in every}
    assert current == {("64x48", 2): True, ("96x96", 3): True, ("64x48", 1): False}
    entry = reg.show("testbed", version=1)
    assert entry.recipe.poa_w == 1.25 and entry.resolution_str == "64x48"
    with pytest.raises(RecipeNotFoundError, match="no registry version 9"):
        reg.show("testbed", version=9)


def test_recipe_model_loads_as_pyfunc_and_exports_quietly(tmp_path):
    import warnings

    import mlflow

    uri = fresh_registry_uri(tmp_path)
    reg = Registry(uri)
    recipe = make_recipe(poa_w=1.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reg.export(recipe)
    hints = [str(w.message) for w in caught if "type hint" in str(w.message)]
    assert hints == []  # MLflow's signature-inference warnings would only confuse users
    mlflow.set_registry_uri(uri)
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model("models:/crdiff-testbed@64x48")
    assert model.predict([]) == [recipe.to_dict()]


def test_replaced_artifact_is_rejected(tmp_path):
    reg = Registry(fresh_registry_uri(tmp_path))
    entry = reg.export(make_recipe())
    source = Path(reg.client.get_model_version(entry.name, "1").source)
    artifact = source / "artifacts" / "recipe.json"
    data = json.loads(artifact.read_text())
    data["ratios"]["up"] = 0.75
    artifact.write_text(json.dumps(data))
    with pytest.raises(RecipeError, match="checksum mismatch"):
        reg.get("testbed", "64x48")
    # a consistent but different recipe (checksum recomputed) still disagrees with the registered tag
    from crdiff_search.recipe import Recipe

    forged = Recipe.from_dict(data, verify=False)
    artifact.write_text(forged.to_json())
    with pytest.raises(RecipeError, match="replaced after export"):
        reg.get("testbed", "64x48")


def test_nearest_resolution_and_names():
    assert nearest_resolution("1024x768", ["512x512", "800x600", "1024x1024"]) == (800, 600)
    assert nearest_resolution("1024x768", ["640x480", "1024x1024"]) == (1024, 1024)
    assert nearest_resolution((768, 768), ["512x512", "1024x1024"]) == (1024, 1024)
    assert registered_name("org/model:v1") == "crdiff-org--model--v1"


def test_two_concurrent_exports_lose_nothing(tmp_path):
    uri = fresh_registry_uri(tmp_path)
    tests_dir = Path(__file__).parent
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        sys.path.insert(0, {str(tests_dir)!r})
        from crdiff_search.registry import Registry
        from test_recipe_roundtrip import make_recipe
        width = int(sys.argv[1])
        reg = Registry({uri!r})
        reg.client.search_registered_models()
        import mlflow.pyfunc  # imports done: now wait for the other process
        Path({str(tmp_path)!r}, f"ready{{width}}").touch()
        while len(list(Path({str(tmp_path)!r}).glob("ready*"))) < 2:
            time.sleep(0.01)
        for i in range(2):
            reg.export(make_recipe(width=width, study_id=f"s{{width}}-{{i}}"))
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(w)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in (64, 80)
    ]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-2000:]
    reg = Registry(uri)
    versions = reg.list("testbed", all_versions=True)
    assert sorted(e.version for e in versions) == [1, 2, 3, 4]
    assert sorted(e.study_id for e in versions) == ["s64-0", "s64-1", "s80-0", "s80-1"]
    current = {e.resolution_str: e for e in reg.list("testbed")}
    assert set(current) == {"64x48", "80x48"}
    # each alias sits on the newer of its resolution's two versions
    for res, entry in current.items():
        mine = [e.version for e in versions if e.resolution_str == res]
        assert entry.version == max(mine)
        assert reg.get("testbed", res, strict=True).study_id.endswith("-1")
