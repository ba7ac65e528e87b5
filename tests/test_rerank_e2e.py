"""End to end on the testbed: a small search, rerank (Ray tasks), export, generate from the
registry. Minutes on a loaded 2-core machine, hence ``slow``."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from PIL import Image

from crdiff_search.cli import main
from crdiff_search.config import load_experiment
from crdiff_search.recipe import Recipe
from crdiff_search.registry import Registry

pytestmark = pytest.mark.slow


def test_search_rerank_export_generate(tmp_path, capsys):
    from crdiff_search.runner import run_study

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = load_experiment(
        None,
        trials=3,
        sampler="random",
        tracking_uri=uri,
        **{"resolution": "48x48", "model.steps": 2, "model.device": "cpu", "prompts.count": 2},
    )
    study = tmp_path / "study"
    run_study(config, out_dir=study, progress=False)

    assert main(["rerank", str(study), "--top-k", "1", "--w", "1.0,1.5", "--n-prompts", "3"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "best candidate: trial" in out
    assert out.strip().splitlines()[-1].startswith("verdict: ")
    # progress: a header, then a line per finished task: dense, the candidate at w=1 and 1.5
    assert "(3 tasks) on 3 held-out prompts at 48x48" in captured.err
    assert "[3/3]" in captured.err and "dense: score" in captured.err
    assert " w=1.5: score" in captured.err and " w=1: score" in captured.err
    table = pd.read_parquet(study / "rerank.parquet")
    assert sorted(table["kind"]) == ["dense", "poa", "pruned"]
    assert (table["n_images"] == 3).all() and list(table["rank"]) == [1, 2, 3]
    info = json.loads((study / "rerank.json").read_text())
    assert info["rerank_run_id"] and info["n_prompts"] == 3
    dense = table[table["kind"] == "dense"].iloc[0]
    assert info["dense_score"] == dense["score"] and dense["score_delta"] == 0.0
    assert (table["score_delta"] == table["score"] - dense["score"]).all()
    # the paired per-prompt scores: their means are the table's scores, and the intervals
    # and counts are taken against the dense row over the same prompts
    per = pd.read_parquet(study / "rerank_images.parquet")
    assert len(per) == 3 * len(table) and set(per["prompt_index"]) == {0, 1, 2}
    means = per.groupby(["trial_id", "kind"])["score"].mean()
    for row in table.to_dict("records"):
        assert means[(row["trial_id"], row["kind"])] == pytest.approx(row["score"], abs=1e-12)
    searched = table[table["kind"] != "dense"]
    assert (searched["delta_low"] <= searched["score_delta"] + 1e-12).all()
    assert (searched["score_delta"] <= searched["delta_high"] + 1e-12).all()
    assert (searched[["wins", "ties", "losses"]].sum(axis=1) == 3).all()
    poa = table[table["kind"] == "poa"].iloc[0]
    pruned = table[table["kind"] == "pruned"].iloc[0]
    assert poa["poa_gain"] == pytest.approx(poa["score"] - pruned["score"], abs=1e-12)
    assert info["winner"]["delta_low"] is not None and info["confidence"] == 0.95
    run = Registry(uri).client.get_run(info["rerank_run_id"])
    assert run.data.tags["mlflow.parentRunId"] and "winner_score" in run.data.metrics
    assert run.data.tags["crdiff.verdict"] == info["verdict"]["status"]
    assert (study / "rerank_compare.png").is_file()

    # 3 held-out prompts cannot show a repair: the winner is refused unless asked for
    assert info["verdict"]["status"] == "null"
    assert main(["export", str(study), "--registry", uri]) == 2
    assert "--allow-null" in capsys.readouterr().err
    assert main(["export", str(study), "--registry", uri, "--allow-null"]) == 0
    recipe = Registry(uri).get("testbed", "48x48", strict=True)
    assert recipe.study_id == info["study_id"] and recipe.poa_w == info["winner"]["w"]
    assert recipe.scores["dense"] == info["dense_score"]
    assert recipe.scores["delta_ci_low"] == info["winner"]["delta_low"]
    assert recipe.scores["heldout_prompts"] == 3 and recipe.scores["repaired"] == 0.0
    assert recipe.model_revision.startswith("weights-fp16-sha256:")

    images = tmp_path / "images"
    assert (
        main(
            [
                "generate",
                "--model",
                "testbed",
                "--resolution",
                "48x48",
                "--prompt",
                "two red circles",
                "--registry",
                uri,
                "--compare",
                "--out",
                str(images),
            ]
        )
        == 0
    )
    assert Image.open(images / "000-two-red-circles.png").size == (48, 48)
    assert (images / "compare.png").is_file()
    assert Recipe.load(images / "recipe.json") == recipe
