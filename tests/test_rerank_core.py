"""Re-ranking pieces without Ray: candidate choice, held-out prompts, one candidate's rows, and
the recipe built from a re-ranked study folder."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from crdiff_search.config import ExperimentConfig, load_experiment
from crdiff_search.errors import UsageError
from crdiff_search.rerank import (
    NullResultError,
    evaluate_candidate,
    heldout_prompts,
    parse_weights,
    rank_rows,
    recipe_from_study,
    task_spec,
    top_trials,
    verdict_of,
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
    prompts, seeds = heldout_prompts(config)
    # the experiment's [rerank] section names the set: 128 captions, seeds 10000 + i
    assert len(prompts) == config.rerank.prompts == 128
    assert seeds == [10_000 + i for i in range(128)]
    assert not set(seeds) & set(config.seed_list())
    # other captions: none of the search's, and the same set for every search seed
    assert not set(prompts) & set(config.prompt_list())
    other = load_experiment(None, seed=3)
    assert not set(heldout_prompts(other)[0]) & set(other.prompt_list())
    assert heldout_prompts(config, n=5, seed=77) == (
        prompts_at(config, 5, 77),
        [77 + i for i in range(5)],
    )
    file = tmp_path / "p.txt"
    file.write_text("a red circle\n# comment\ntwo blue squares\n")
    assert heldout_prompts(config, n=None, prompts_file=str(file))[0] == [
        "a red circle",
        "two blue squares",
    ]
    from_file = config.replace(**{"rerank.file": str(file)})
    assert heldout_prompts(from_file)[0] == ["a red circle", "two blue squares"]


def prompts_at(config, n, seed):
    from crdiff_search.testbed.scenes import sample_captions

    return sample_captions(n, seed, exclude=config.prompt_list())


def _rows(*rows):
    return pd.DataFrame([{"kind": k, "trial_id": t, "w": w, "score": s} for k, t, w, s in rows])


def test_rank_rows_breaks_ties_for_dense_then_the_cheaper_row():
    table = _rows(
        ("poa", "t1", 2.0, 0.6),
        ("poa", "t1", 1.5, 0.6),
        ("pruned", "t1", 1.0, 0.6),
        ("dense", "dense", None, 0.6),
        ("pruned", "t2", 1.0, 0.4),
        ("poa", "t2", 1.5, 0.7),
    )
    ranked = rank_rows(table, "max")
    assert list(zip(ranked["kind"], ranked["w"].fillna(0), strict=True)) == [
        ("poa", 1.5),  # the only better row
        ("dense", 0.0),
        ("pruned", 1.0),
        ("poa", 1.5),
        ("poa", 2.0),
        ("pruned", 1.0),
    ]
    assert list(ranked["rank"]) == [1, 2, 3, 4, 5, 6]
    # float noise of an equal mean is a tie too; with "min" the lowest score ranks first
    noisy = _rows(("pruned", "t1", 1.0, 0.3 + 1e-15), ("dense", "dense", None, 0.3))
    assert list(rank_rows(noisy, "max")["kind"]) == ["dense", "pruned"]
    assert list(rank_rows(table, "min")["score"])[0] == 0.4


def test_verdict_needs_an_interval_that_excludes_zero():
    win = {"trial_id": "t1", "w": 1.5, "score_delta": 0.08, "p_vs_dense": 1e-4}
    repaired = verdict_of({**win, "delta_low": 0.02, "delta_high": 0.1}, "max", top_is_dense=False)
    assert repaired["status"] == "repaired" and "+0.0800" in repaired["message"]
    straddles = verdict_of(
        {**win, "delta_low": -0.01, "delta_high": 0.1}, "max", top_is_dense=False
    )
    assert straddles["status"] == "null" and "dense model stays" in straddles["message"]
    tie = verdict_of({**win, "delta_low": 0.0, "delta_high": 0.0}, "max", top_is_dense=True)
    assert tie["status"] == "null"
    # lower is better (FID-like per-image objectives): the interval must lie below zero
    assert (
        verdict_of({**win, "delta_low": -0.3, "delta_high": -0.1}, "min", top_is_dense=False)[
            "status"
        ]
        == "repaired"
    )
    assert (
        verdict_of({**win, "delta_low": 0.1, "delta_high": 0.3}, "min", top_is_dense=False)[
            "status"
        ]
        == "null"
    )
    untested = verdict_of({**win, "delta_low": None, "delta_high": None}, "max", top_is_dense=False)
    assert untested["status"] == "untested"


def test_evaluate_candidate_rows_in_process():
    config = load_experiment(
        None, trials=4, **{"model.steps": 2, "model.device": "cpu", "resolution": "32x32"}
    )
    prompts, seeds = ["a red circle", "two blue squares"], [11, 12]
    settings = task_spec(config, prompts, seeds)
    (dense,) = evaluate_candidate(settings, None, (1.0, 1.5))
    cand = {"trial_id": "t1", "ratios": {"down": 0.3, "mid": 0.3, "up": 0.5}}
    rows = evaluate_candidate(settings, cand, (1.0, 1.5))
    assert dense["kind"] == "dense" and dense["model_revision"].startswith("weights-fp16-sha256:")
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


def _study_folder(tmp_path):
    config = load_experiment(None, trials=4, resolution="48x48", tracking_uri=None)
    config = config.replace(**{"tracking.enabled": False})
    (tmp_path / "experiment.toml").write_text(config.to_toml())
    (tmp_path / "study.json").write_text(json.dumps({"study_id": "sid-1", "study": "testbed"}))
    _trials().to_parquet(tmp_path / "trials.parquet")
    return config


def _rerank_info(low, high, status=None):
    info = {
        "dense_score": 0.45,
        "model_revision": "sha256:00",
        "n_prompts": 128,
        "heldout": {"prompts": 128, "seed": 10_000, "source": "testbed scene grammar"},
        "winner": {
            "trial_id": "t4",
            "w": 1.5,
            "ratios": {"down": 0.2, "mid": 0.2, "up": 0.2},
            "score": 0.8,
            "pruned_score": 0.75,
            "search_score": 0.7,
            "score_delta": 0.35,
            "delta_low": low,
            "delta_high": high,
            "p_vs_dense": 0.001,
            "secondary": {"obj.scene": 0.8},
        },
    }
    if status:
        info["verdict"] = {"status": status, "message": f"{status} (test)"}
    return info


def test_recipe_from_study_folder(tmp_path):
    from crdiff_search.recipe import Recipe

    config = _study_folder(tmp_path)
    with pytest.raises(UsageError, match="crdiff rerank"):
        recipe_from_study(tmp_path)
    with pytest.raises(NullResultError, match="never checked on held-out prompts"):
        recipe_from_study(tmp_path, use_rerank=False)
    plain = recipe_from_study(tmp_path, use_rerank=False, allow_null=True)
    assert plain.ratios == {"down": 0.3, "mid": 0.2, "up": 0.1} and plain.poa_w == 1.0
    assert plain.scores["dense"] == 0.5 and plain.resolution == (48, 48)
    (tmp_path / "rerank.json").write_text(json.dumps(_rerank_info(0.2, 0.5, "repaired")))
    recipe = recipe_from_study(tmp_path)
    assert (recipe.trial_id, recipe.poa_w, recipe.study_id) == ("t4", 1.5, "sid-1")
    # the recipe records the held-out interval, test and prompt set it was chosen on
    assert recipe.scores == {
        "dense": 0.45,
        "pruned": 0.75,
        "recipe": 0.8,
        "search": 0.7,
        "secondary.obj.scene": 0.8,
        "delta_ci_low": 0.2,
        "delta_ci_high": 0.5,
        "p_vs_dense": 0.001,
        "heldout_prompts": 128.0,
        "heldout_seed": 10_000.0,
        "repaired": 1.0,
    }
    assert (
        recipe.objective == "scene"
        and recipe.model == "testbed"
        and recipe.steps == config.model.steps
    )
    assert Recipe.from_json(recipe.to_json()) == recipe


def test_a_null_result_is_not_exported_unless_asked(tmp_path, capsys):
    from crdiff_search.cli import main

    _study_folder(tmp_path)
    (tmp_path / "rerank.json").write_text(json.dumps(_rerank_info(-0.01, 0.5, "null")))
    with pytest.raises(NullResultError, match="null result.*--allow-null"):
        recipe_from_study(tmp_path)
    assert recipe_from_study(tmp_path, allow_null=True).scores["repaired"] == 0.0
    registry = f"sqlite:///{tmp_path / 'reg.db'}"
    assert main(["export", str(tmp_path), "--registry", registry]) == 2
    err = capsys.readouterr().err
    assert "not exporting a null result" in err and "--allow-null" in err
    assert not (tmp_path / "reg.db").exists()  # refused before the registry is touched
    # an older rerank.json without a verdict: judged from its interval
    (tmp_path / "rerank.json").write_text(json.dumps(_rerank_info(-0.01, 0.5)))
    with pytest.raises(NullResultError):
        recipe_from_study(tmp_path)
    (tmp_path / "rerank.json").write_text(json.dumps(_rerank_info(0.1, 0.5)))
    assert recipe_from_study(tmp_path).scores["repaired"] == 1.0


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
    from crdiff_search.objectives import OBJECTIVES
    from crdiff_search.objectives.base import Objective
    from crdiff_search.objectives.composite import CompositeObjective

    class Const(Objective):
        name = "const"

        def score(self, images, prompts):
            return np.ones(len(images))

    class SetMetric(Const):
        per_image = False

    class Median(Const):
        def aggregate(self, scores):
            return float(np.median(scores))

    names = {"t-const-a": Const, "t-const-b": Const, "t-set": SetMetric, "t-median": Median}
    for name, cls in names.items():
        OBJECTIVES.register(name, cls)
    try:

        def composite(*terms):
            return CompositeObjective(terms=[{"name": n, "weight": w} for n, w in terms])

        per = {"t-const-a": np.array([1.0, 3.0]), "t-const-b": np.array([0.0, 2.0])}
        both = composite(("t-const-a", 1.0), ("t-const-b", -0.5))
        assert both.image_values(per).tolist() == [1.0, 2.0]
        assert both.combine(per) == pytest.approx(1.5)
        per_set = {"t-const-a": per["t-const-a"], "t-set": np.array([5.0, 5.0])}
        assert composite(("t-const-a", 1.0), ("t-set", 1.0)).image_values(per_set) is None
        assert composite(("t-median", 1.0)).image_values({"t-median": per["t-const-a"]}) is None
    finally:
        for name in names:
            OBJECTIVES.unregister(name)


def test_relative_objective_from_the_experiment_file_scores_against_dense():
    """``objective.relative`` makes a term score(image) - score(dense image): the dense row
    scores 0 and a candidate exactly its plain score minus the dense plain score."""
    overrides = {"model.steps": 2, "model.device": "cpu", "resolution": "32x32"}
    plain = load_experiment(None, trials=4, **overrides)
    relative = load_experiment(None, trials=4, **overrides, **{"objective.relative": ["scene"]})
    assert "relative" in relative.to_dict()["objective"]
    assert ExperimentConfig.from_toml(relative.to_toml()).objective.relative == ("scene",)
    prompts, seeds = ["a red circle", "two blue squares"], [11, 12]
    cand = {"trial_id": "t1", "ratios": {"down": 0.3, "mid": 0.3, "up": 0.5}}
    spec = task_spec(relative, prompts, seeds)
    assert spec.relative and [t.label for t in spec.terms] == ["scene_rel"]
    (dense_rel,) = evaluate_candidate(spec, None, (1.0,))
    (cand_rel,) = evaluate_candidate(spec, cand, (1.0,))
    plain_spec = task_spec(plain, prompts, seeds)
    (dense_plain,) = evaluate_candidate(plain_spec, None, (1.0,))
    (cand_plain,) = evaluate_candidate(plain_spec, cand, (1.0,))
    assert dense_rel["score"] == 0.0 and "obj.scene_rel" in cand_rel
    assert cand_rel["score"] == pytest.approx(cand_plain["score"] - dense_plain["score"], abs=1e-12)
    assert cand_plain["score"] != dense_plain["score"]  # the check above would be empty otherwise
