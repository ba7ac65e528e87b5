"""Final-best distributions, time to target and rank tests on data with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from crdiff_search.analysis import (
    combine_studies,
    early_stopping_summary,
    final_best,
    rank_tests,
    reach_target,
    summary_table,
    trials_to_reach,
)
from crdiff_search.analysis.stats import _holm
from crdiff_search.analysis.synthetic import study_table


def _two_samplers(a_finals, b_finals, trials=4):
    """Studies whose last trial sets the given final best (earlier trials are lower)."""
    studies = {}
    for name, finals in (("a", a_finals), ("b", b_finals)):
        for seed, top in enumerate(finals):
            scores = [top - 3.0, top - 2.0, top - 1.0, top][-trials:]
            studies[f"{name}-s{seed}"] = study_table(
                scores, sampler=name, seed=seed, dense_score=-100.0
            )
    return combine_studies(studies)


def test_final_best_picks_the_best_completed_trial_and_its_ratios():
    ratios = [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.7, 0.7]]
    raw = study_table([1.0, 4.0, None], sampler="tpe", seed=0, ratios=ratios, n_images=5)
    final = final_best(combine_studies({"s": raw}))
    row = final.iloc[0]
    assert (row["final_best"], row["best_trial"], row["trials"], row["images"]) == (4.0, 2, 3, 15)
    assert (row["ratio.down"], row["ratio.mid"], row["ratio.up"]) == (0.4, 0.5, 0.6)


def test_trials_to_reach_a_share_of_the_best_known_score():
    studies = {
        "s0": study_table([1.0, 9.6, 10.0], sampler="a", seed=0, n_images=[2, 3, 4]),
        "s1": study_table([10.0, 0.0, 0.0], sampler="a", seed=1),
        "s2": study_table([1.0, 2.0, 9.0], sampler="a", seed=2),
    }
    table = combine_studies(studies)  # dense score 0: the target is 0.95 * 10
    reach, target = trials_to_reach(table, 0.95)
    assert target == pytest.approx(9.5)
    by_seed = reach.set_index("seed")
    assert by_seed.loc[0, "trials"] == 2 and by_seed.loc[0, "images"] == 5
    assert by_seed.loc[1, "trials"] == 1
    assert not by_seed.loc[2, "reached"] and math.isinf(by_seed.loc[2, "trials"])
    summary = summary_table(table, share=0.95).iloc[0]
    assert summary["reached"] == "2/3"
    assert summary["trials_to_target"] == 2.0  # median of (2, 1, inf)
    # Everything reaches half of it.
    assert trials_to_reach(table, 0.5)[0]["reached"].all()


def test_target_is_a_share_of_the_improvement_over_the_dense_model():
    table = combine_studies({"s": study_table([2.0, 10.0], sampler="a", seed=0, dense_score=-1.0)})
    assert reach_target(table, 0.95) == pytest.approx(-1.0 + 0.95 * 11.0)
    assert reach_target(table, 1.0) == pytest.approx(10.0)
    assert reach_target(table, 0.5, baseline=0.0, best=4.0) == pytest.approx(2.0)
    low = combine_studies(
        {"s": study_table([5.0, 2.0], sampler="a", seed=0, dense_score=6.0)}, maximize=False
    )
    assert reach_target(low, 0.5, maximize=False) == pytest.approx(4.0)
    reach, _ = trials_to_reach(low, 0.5, maximize=False)
    assert reach["trials"].tolist() == [2.0]
    with pytest.raises(ValueError, match="share"):
        reach_target(table, 0.0)


def test_rank_tests_detect_a_clear_difference():
    final = final_best(_two_samplers([10, 11, 12, 13, 14], [0, 1, 2, 3, 4]))
    kruskal, pairs = rank_tests(final)
    assert kruskal["k"] == 2 and kruskal["n"] == 10
    assert kruskal["p"] < 0.05
    row = pairs.iloc[0]
    assert (row["a"], row["b"]) == ("a", "b")
    assert row["p"] == pytest.approx(2 / 252)  # exact: the most extreme of C(10, 5) orderings
    assert row["p_a_better"] == 1.0 and row["rank_biserial"] == 1.0
    assert row["shift"] == 10.0
    # Minimising flips who is better, not the p-value.
    _, flipped = rank_tests(final, maximize=False)
    assert flipped.iloc[0]["p_a_better"] == 0.0
    assert flipped.iloc[0]["p"] == pytest.approx(row["p"])


def test_rank_tests_do_not_flag_a_null_difference():
    final = final_best(_two_samplers([1, 3, 5, 7, 9], [2, 4, 6, 8, 10]))
    kruskal, pairs = rank_tests(final)
    assert kruskal["p"] > 0.5
    assert pairs.iloc[0]["p"] > 0.5
    assert pairs.iloc[0]["p_a_better"] == pytest.approx(0.4)


def test_rank_tests_on_identical_results_are_not_significant():
    final = final_best(_two_samplers([1, 1, 1], [1, 1, 1]))
    kruskal, pairs = rank_tests(final)
    assert kruskal["p"] == 1.0 and pairs.iloc[0]["p"] == 1.0
    assert pairs.iloc[0]["p_a_better"] == 0.5


def test_holm_adjustment_by_hand():
    assert _holm(np.array([0.01, 0.04, 0.03])).tolist() == pytest.approx([0.03, 0.06, 0.06])
    assert _holm(np.array([0.5, 0.9])).tolist() == pytest.approx([1.0, 1.0])


def test_three_samplers_give_three_pairs_with_holm_at_least_raw():
    table = combine_studies(
        {
            f"{m}-s{s}": study_table([base + s], sampler=m, seed=s)
            for m, base in (("x", 0.0), ("y", 10.0), ("z", 20.0))
            for s in range(4)
        }
    )
    kruskal, pairs = rank_tests(final_best(table))
    assert [(r.a, r.b) for r in pairs.itertuples()] == [("x", "y"), ("x", "z"), ("y", "z")]
    assert (pairs["p_holm"] >= pairs["p"]).all()
    assert kruskal["p"] < 0.01


def test_early_stopping_summary_pairs_each_asha_arm_with_its_sampler():
    studies = {}
    for seed in range(3):
        studies[f"tpe-s{seed}"] = study_table(
            [1.0, 2.0 + seed], sampler="tpe", seed=seed, n_images=8
        )
        studies[f"asha-s{seed}"] = study_table(
            [1.0, 0.2, 2.0 + seed],
            sampler="tpe",
            seed=seed,
            states=["COMPLETE", "PRUNED", "COMPLETE"],
            n_images=[8, 2, 2],
        )
    summary = early_stopping_summary(combine_studies(studies))
    assert len(summary) == 1
    row = summary.iloc[0]
    assert (row["method"], row["base"]) == ("tpe+asha", "tpe")
    assert row["images_median"] == 12 and row["base_images_median"] == 16
    assert row["images_saved"] == pytest.approx(0.25)
    assert row["shift"] == 0.0 and row["p"] > 0.5
    assert row["pruned_share"] == pytest.approx(1 / 3)


def test_smallest_attainable_p_matches_the_exact_test():
    from scipy import stats

    from crdiff_search.analysis.stats import smallest_p

    assert smallest_p(5, 5) == pytest.approx(2 / 252)
    assert smallest_p(5, 5) == pytest.approx(
        stats.mannwhitneyu(range(5), range(10, 15), method="exact").pvalue
    )
    assert smallest_p(1, 1) == 1.0


def test_methods_that_proposed_the_same_ratios_are_found():
    from crdiff_search.analysis.stats import identical_methods

    ratios = [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]
    table = combine_studies(
        {
            "a": study_table([1.0, 2.0], sampler="tpe", seed=0, ratios=ratios),
            "b": study_table([1.0, 2.0], sampler="random", seed=0, ratios=ratios),
            "c": study_table([1.0, 2.0], sampler="anneal", seed=0, ratios=[[0.1, 0.2, 0.3]] * 2),
        }
    )
    assert identical_methods(table) == [("tpe", "random")]


def test_paired_difference_interval_test_and_counts():
    from crdiff_search.analysis.stats import paired_difference

    rng = np.random.default_rng(3)
    base = rng.random(200)
    better = base + 0.05 + 0.05 * rng.standard_normal(200)
    res = paired_difference(better, base, n_resamples=2000)
    assert res["n"] == 200 and res["wins"] + res["ties"] + res["losses"] == 200
    assert res["ci_low"] < res["delta"] < res["ci_high"]
    assert res["ci_low"] > 0.0 and res["p"] < 1e-6  # a real shift is found
    assert res == paired_difference(better, base, n_resamples=2000)  # seeded: repeatable
    # lower is better: wins and losses swap, the difference keeps its sign
    low = paired_difference(better, base, maximize=False, n_resamples=2000)
    assert (low["wins"], low["losses"]) == (res["losses"], res["wins"])
    assert low["delta"] == res["delta"]
    # noise alone: the interval holds zero
    noise = paired_difference(base + 0.05 * rng.standard_normal(200), base, n_resamples=2000)
    assert noise["ci_low"] < 0.0 < noise["ci_high"] and noise["p"] > 0.01
    # no difference at all
    same = paired_difference(base, base)
    assert same["ci_low"] == same["ci_high"] == 0.0 and same["p"] == 1.0
    assert same["ties"] == 200
    with pytest.raises(ValueError, match="equal lengths"):
        paired_difference(base, base[:10])
    with pytest.raises(ValueError, match="confidence"):
        paired_difference(base, base, confidence=1.5)
