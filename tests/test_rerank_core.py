"""Re-ranking pieces without Ray: candidate choice, held-out prompts, one candidate's rows, and
the recipe built from a re-ranked study folder."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from crdiff_search.config import load_experiment
from crdiff_search.errors import UsageError
from crdiff_search.rerank import (
    HELDOUT_SEED_OFFSET,
    _task_settings,
    evaluate_candidate,
    heldout_prompts,
    parse_weights,
    recipe_from_study,
    top_trials,
)

GROUPS = ("down", "mid", "up")


def _trials() -> pd.DataFrame:
    rows = [
        ("t0", 0, "COMPLETE", 0.50, (0.0, 0.0, 0.0)),
        ("t1", 1, "COMPLETE", 0.70, (0.3, 0.2, 0.1)),
        ("t2", 2, "FAILED", None, (0.5, 0.5, 0.5)),
        ("t3", 3, "COMPLETE", 0.40, (0.1, 0.1, 0.1)),
        ("t4", 4, "COMPLETE", 0.70, (0.2, 0.2, 0.2)),
    ]
    return pd.DataFrame(
        [
            {
                "trial_id": t,
                "trial_index": i,
                "state": s,
                "score": sc,
                **{f"ratio.{g}": r for g, r in zip(GROUPS, ratios, strict=True)},
            }
            for t, i, s, sc, ratios in rows
        ]
    )


def test_top_trials_skips_dense_failed_and_orders_by_mode():
    best = top_trials(_trials(), GROUPS, 2, "max")
    assert [b["trial_id"] for b in best] == ["t1", "t4"]  # tie -> earlier trial first
    assert best[0]["ratios"] == {"down": 0.3, "mid": 0.2, "up": 0.1}
    assert [b["trial_id"] for b in top_trials(_trials(), GROUPS, 5, "min")] == ["t3", "t1", "t4"]
    with pytest.raises(UsageError, match="at least 1"):
        top_trials(_trials(), GROUPS, 0, "max")


def test_weights_and_heldout_prompts(tmp_path):
    assert parse_weights("1.0, 1.5,1.5,2") == (1.0, 1.5, 2.0)
    with pytest.raises(UsageError):
        parse_weights("1.0,inf")
    config = load_experiment(None, trials=4)
    prompts, seeds = heldout_prompts(config, n=None, prompts_file=None)
    assert len(prompts) == max(64, 2 * config.prompts.count)
    assert seeds[0] == config.search.seed + HELDOUT_SEED_OFFSET
    assert not set(seeds) & set(config.seed_list())
    assert prompts[: config.prompts.count] != config.prompt_list()
    file = tmp_path / "p.txt"
    file.write_text("a red circle\n# comment\ntwo blue squares\n")
    assert heldout_prompts(config, n=None, prompts_file=str(file))[0] == [
        "a red circle",
        "two blue squares",
    ]


def test_evaluate_candidate_rows_in_process():
    config = load_experiment(
        None, trials=4, **{"model.steps": 2, "model.device": "cpu", "resolution": "32x32"}
    )
    prompts, seeds = ["a red circle", "two blue squares"], [11, 12]
    settings = _task_settings(config, prompts, seeds)
    (dense,) = evaluate_candidate(settings, None, (1.0, 1.5))
    cand = {"trial_id": "t1", "ratios": {"down": 0.3, "mid": 0.3, "up": 0.5}}
    rows = evaluate_candidate(settings, cand, (1.0, 1.5))
    assert dense["kind"] == "dense" and dense["model_revision"].startswith("sha256:")
    assert [(r["kind"], r["w"]) for r in rows] == [("pruned", 1.0), ("poa", 1.5)]
    assert all(np.isfinite(r["score"]) and "obj.scene" in r for r in rows)
    for row in (dense, *rows):  # per-image values whose mean is the row's score
        assert len(row["image_scores"]) == 2
        assert np.mean(row["image_scores"]) == pytest.approx(row["score"], abs=1e-12)
    arrays = [
        np.asarray(im) for im in (dense["images"][0], rows[0]["images"][0], rows[1]["images"][0])
    ]
    assert not np.array_equal(arrays[0], arrays[1]) and not np.array_equal(arrays[1], arrays[2])
    # the worker's model is dense again afterwards: same images as the dense row
    (again,) = evaluate_candidate(settings, None, (1.0,))
    assert np.array_equal(np.asarray(again["images"][0]), arrays[0])


def test_recipe_from_study_folder(tmp_path):
    from crdiff_search.recipe import Recipe

    config = load_experiment(None, trials=4, resolution="48x48", tracking_uri=None)
    config = config.replace(**{"tracking.enabled": False})
    (tmp_path / "experiment.toml").write_text(config.to_toml())
    (tmp_path / "study.json").write_text(json.dumps({"study_id": "sid-1", "study": "testbed"}))
    _trials().to_parquet(tmp_path / "trials.parquet")
    with pytest.raises(UsageError, match="crdiff rerank"):
        recipe_from_study(tmp_path)
    plain = recipe_from_study(tmp_path, use_rerank=False)
    assert plain.ratios == {"down": 0.3, "mid": 0.2, "up": 0.1} and plain.poa_w == 1.0
    assert plain.scores["dense"] == 0.5 and plain.resolution == (48, 48)
    (tmp_path / "rerank.json").write_text(
        json.dumps(
            {
                "dense_score": 0.45,
                "model_revision": "sha256:00",
                "winner": {
                    "trial_id": "t4",
                    "w": 1.5,
                    "ratios": {"down": 0.2, "mid": 0.2, "up": 0.2},
                    "score": 0.8,
                    "pruned_score": 0.75,
                    "search_score": 0.7,
                    "score_delta": 0.35,
                    "secondary": {"obj.scene": 0.8},
                },
            }
        )
    )
    recipe = recipe_from_study(tmp_path)
    assert (recipe.trial_id, recipe.poa_w, recipe.study_id) == ("t4", 1.5, "sid-1")
    assert recipe.scores == {
        "dense": 0.45,
        "pruned": 0.75,
        "recipe": 0.8,
        "search": 0.7,
        "secondary.obj.scene": 0.8,
    }
    assert (
        recipe.objective == "scene"
        and recipe.model == "testbed"
        and recipe.steps == config.model.steps
    )
    assert Recipe.from_json(recipe.to_json()) == recipe


def test_paired_stats_against_dense_and_pruned():
    from crdiff_search.rerank import _image_table, _paired_stats

    dense = [0.0, 0.5, 1.0, 0.5] * 8
    pruned = [v + 0.1 for v in dense]
    poa = [v + 0.3 for v in dense]
    per = {("dense", None): dense, ("t1", 1.0): pruned, ("t1", 1.5): poa}
    stats = _paired_stats(per, "max")
    assert set(stats) == {("t1", 1.0), ("t1", 1.5)}
    s = stats[("t1", 1.5)]
    assert s["delta_low"] == pytest.approx(0.3) and s["delta_high"] == pytest.approx(0.3)
    assert s["poa_gain"] == pytest.approx(0.2) and s["wins"] == 32 and s["losses"] == 0
    assert s["p_vs_dense"] < 1e-6
    assert "poa_gain" not in stats[("t1", 1.0)]
    # lower is better: the same differences count as losses
    assert _paired_stats(per, "min")[("t1", 1.5)]["losses"] == 32
    # a set metric (no per-image values) gives no statistics and no per-image table
    assert _paired_stats({**per, ("t1", 2.0): None}, "max") == {}
    assert _image_table({("dense", None): None}, ["p"], [1]) is None
    table = _image_table(per, [f"p{i}" for i in range(32)], list(range(100, 132)))
    assert len(table) == 96 and set(table["kind"]) == {"dense", "pruned", "poa"}
    assert table[table["kind"] == "poa"]["seed"].tolist() == list(range(100, 132))


def test_image_values_only_for_mean_of_per_image_objectives():
    from crdiff_search.runner.worker import WorkerState
    from objectives.base import Objective

    class Const(Objective):
        name = "const"

        def score(self, images, prompts):
            return np.ones(len(images))

    class SetMetric(Const):
        per_image = False

    class Median(Const):
        def aggregate(self, scores):
            return float(np.median(scores))

    def state(objectives):
        return WorkerState(None, None, objectives, {}, "cpu", 0.0)

    per = {"a": np.array([1.0, 3.0]), "b": np.array([0.0, 2.0])}
    values = state([("a", 1.0, Const()), ("b", -0.5, Const())]).image_values(per)
    assert values.tolist() == [1.0, 2.0]
    assert state([("a", 1.0, Const()), ("b", 1.0, SetMetric())]).image_values(per) is None
    assert state([("a", 1.0, Median())]).image_values(per) is None
