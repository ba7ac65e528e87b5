"""The smoothed pick rule: a lone lucky score loses to a plateau of good ones."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crdiff_search.analysis.pick_rules import paired_versus_best, picks_by_rule, smoothed_scores


def _study(name, method, seed, ratios, scores):
    return pd.DataFrame(
        {
            "study": name,
            "method": method,
            "seed": seed,
            "trial_index": range(len(scores)),
            "state": ["COMPLETE"] * len(scores),
            "score": scores,
            "ratio.down": [r[0] for r in ratios],
            "ratio.up": [r[1] for r in ratios],
        }
    )


# a spike at (0.1, 0.1) surrounded by poor scores; a plateau at (0.8, 0.8) slightly lower
RATIOS = [(0.0, 0.0), (0.1, 0.1), (0.12, 0.1), (0.1, 0.12), (0.8, 0.8), (0.82, 0.8), (0.8, 0.82)]
SCORES = [0.50, 0.70, 0.52, 0.51, 0.66, 0.65, 0.66]


def test_smoothed_scores_average_the_neighbours_and_leave_a_lone_point_alone():
    s = smoothed_scores(np.array(RATIOS), np.array(SCORES), 0.05)
    assert s[4] == pytest.approx(np.mean(SCORES[4:]), abs=2e-3)  # a tight plateau: its mean
    assert s[1] < 0.62  # the spike is pulled down by its poor neighbours
    lone = smoothed_scores(np.array([[0.0, 0.0], [0.9, 0.9]]), np.array([0.3, 0.7]), 0.05)
    assert lone == pytest.approx([0.3, 0.7], abs=1e-6)
    with pytest.raises(ValueError, match="bandwidth"):
        smoothed_scores(np.array(RATIOS), np.array(SCORES), 0.0)


def test_picks_by_rule_keeps_the_spike_plainly_and_the_plateau_when_smoothed():
    picks = picks_by_rule(_study("a-s0", "a", 0, RATIOS, SCORES), ["down", "up"], [0.05])
    by_rule = picks.set_index("rule")
    assert by_rule.loc["best", "pick_trial"] == 1
    assert by_rule.loc["h=0.05", "pick_trial"] in (4, 6)
    assert by_rule.loc["h=0.05", "search_score"] == pytest.approx(0.66)


def test_paired_versus_best_counts_better_worse_and_unmoved_picks():
    picks = pd.DataFrame(
        {
            "study": ["s0", "s0", "s1", "s1", "s2", "s2"],
            "rule": ["best", "h=0.1"] * 3,
            "heldout_gain": [0.01, 0.05, 0.04, 0.04, 0.06, 0.05],
        }
    )
    row = paired_versus_best(picks).iloc[0]
    assert (row["better"], row["worse"], row["same_pick"]) == (1, 1, 1)
    assert row["mean_diff"] == pytest.approx((0.04 + 0 - 0.01) / 3)
