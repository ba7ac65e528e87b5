"""What a user pays: picks at each budget, their held-out gains memoised, the cost summary."""

from __future__ import annotations

import pandas as pd
import pytest

from crdiff_search.analysis.pick_cost import (
    cost_summary,
    load_gain_memo,
    picks_at,
    score_picks,
)


def _table():
    rows = []
    for method, seed, scores in [("a", 0, [0.5, 0.6, 0.55, 0.7]), ("a", 1, [0.5, 0.52, 0.8, 0.6])]:
        for i, score in enumerate(scores):
            rows.append(
                {
                    "study": f"{method}-s{seed}",
                    "method": method,
                    "seed": seed,
                    "trial_index": i,
                    "state": "COMPLETE",
                    "score": score,
                    "n_images": 10,
                    "elapsed_s": 2.0 * (i + 1),
                    "ratio.x": 0.1 * i + 0.01 * seed,
                }
            )
    return pd.DataFrame(rows)


def test_picks_at_keeps_the_best_of_the_first_trials_and_what_they_cost():
    picks = picks_at(_table(), [2, 4], ["x"]).set_index(["study", "budget"])
    assert picks.loc[("a-s0", 2), "pick_trial"] == 1
    assert picks.loc[("a-s0", 4), "pick_trial"] == 3
    assert picks.loc[("a-s1", 4), "pick_trial"] == 2
    assert picks.loc[("a-s0", 2), "images"] == 20
    assert picks.loc[("a-s0", 4), "wall_s"] == pytest.approx(8.0)


class _Held:
    def __init__(self):
        self.calls = []

    def versus(self, ratios):
        self.calls.append(ratios["x"])
        return {"delta": ratios["x"]}


def test_score_picks_scores_each_new_candidate_once_and_builds_the_set_only_on_a_miss(tmp_path):
    picks = picks_at(_table(), [2, 4], ["x"])
    built = []
    memo = {}
    held = _Held()

    def make():
        built.append(1)
        return held

    gains = score_picks(picks, ["x"], memo, make, label=lambda r: r["study"])
    assert gains == pytest.approx(picks["ratio.x"].tolist())
    assert len(held.calls) == len(set(picks["ratio.x"].round(6))) and built == [1]
    path = tmp_path / "costs.csv"
    picks.assign(heldout_gain=gains).to_csv(path, index=False)
    built.clear()
    again = score_picks(
        picks, ["x"], load_gain_memo([(path, "heldout_gain")], ["x"]), make, label=lambda r: ""
    )
    assert again == pytest.approx(gains) and built == []  # all memoised: no held-out set


def test_cost_summary_counts_the_seeds_that_reach_each_share_and_when():
    picks = picks_at(_table(), [2, 4], ["x"])
    picks["heldout_gain"] = [0.02, 0.10, 0.04, 0.05]  # s0 at 2, s0 at 4, s1 at 2, s1 at 4
    summary = cost_summary(picks, [0.5, 0.95], [2, 4]).set_index("share")
    assert summary.loc[0.5, "reached"] == 2  # target 0.05: s0 at 4 trials, s1 at 4
    assert summary.loc[0.5, "median_trials"] == 4
    assert summary.loc[0.95, "reached"] == 1
    assert summary.loc[0.95, "median_images"] == 40
    assert summary.loc[0.95, "final_median_gain"] == pytest.approx(0.075)


def test_a_written_cost_table_memoises_every_pick_it_holds(tmp_path, monkeypatch):
    from crdiff_search.analysis import pick_cost

    table = _table()
    table.loc[table["trial_index"] == 3, "ratio.x"] = 0.061175492331625766  # 6th decimal edge
    folder = tmp_path / "cmp"
    (folder / "tables").mkdir(parents=True)
    table.to_parquet(folder / "comparison.parquet")
    (folder / "compare.json").write_text('{"context": {"resolution": "24x24"}}')
    held = _Held()
    monkeypatch.setattr(
        "crdiff_search.analysis.heldout.HeldOut.at", staticmethod(lambda *a, **k: held)
    )
    assert pick_cost.main([str(folder), "--budgets", "2,4"]) == 0
    first = len(held.calls)
    assert first > 0
    assert pick_cost.main([str(folder), "--budgets", "2,4"]) == 0
    assert len(held.calls) == first  # the second run scored nothing again
