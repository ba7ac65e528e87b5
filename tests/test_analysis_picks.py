"""The held-out picks: summary per method, rank tests on the held-out gain, and their section,
figure and table in the comparison report (Markdown and HTML alike)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crdiff_search.analysis import combine_studies, plots, write_report
from crdiff_search.analysis.picks import heldout_rank_tests, pick_summary, with_methods
from crdiff_search.analysis.synthetic import study_table

GAINS = {"gp": 0.08, "anneal": 0.03, "uniform": 0.0}


def _picks(gains: dict[str, float], seeds: int, *, asha: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(2)
    rows = []
    for sampler, gain in gains.items():
        for seed in range(seeds):
            delta = gain + rng.normal(0, 0.004)
            rows.append(
                {
                    "study": f"{sampler}-s{seed}",
                    "sampler": sampler,
                    "seed": seed,
                    "early_stopping": asha and sampler == "gp",
                    "search_score": 0.6 + gain,
                    "heldout_prompts": 64,
                    "heldout_delta": delta,
                    "delta_low": delta - 0.02,
                    "delta_high": delta + 0.02,
                }
            )
    return pd.DataFrame(rows)


def _table(methods, seeds: int):
    studies = {
        f"{m}-s{s}": study_table([0.5, 0.6, 0.55], sampler=m, seed=s, dense_score=0.5)
        for m in methods
        for s in range(seeds)
    }
    return combine_studies(studies)


def test_summary_counts_studies_medians_and_picks_above_dense():
    picks = _picks(GAINS, 4)
    rows = {r["method"]: r for r in pick_summary(picks)}
    assert list(rows) == list(GAINS)
    assert rows["gp"]["studies"] == 4
    assert rows["gp"]["held-out delta (median)"] == pytest.approx(0.08, abs=0.01)
    assert rows["gp"]["picks above dense (95 % interval)"] == 4
    assert rows["uniform"]["picks above dense (95 % interval)"] == 0  # interval straddles 0


def test_early_stopped_studies_are_their_own_method_even_when_read_back_from_csv(tmp_path):
    _picks(GAINS, 2, asha=True).to_csv(tmp_path / "picks.csv", index=False)
    picks = pd.read_csv(tmp_path / "picks.csv")
    assert sorted(set(with_methods(picks)["method"])) == ["anneal", "gp+asha", "uniform"]
    picks["early_stopping"] = picks["early_stopping"].astype(str)  # 'True' / 'False' strings
    assert sorted(set(with_methods(picks)["method"])) == ["anneal", "gp+asha", "uniform"]


def test_a_picks_table_without_its_columns_is_refused_by_name():
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['heldout_delta'\]"):
        with_methods(_picks(GAINS, 1).drop(columns="heldout_delta"))


def test_rank_tests_run_on_the_held_out_gain_not_the_search_score():
    picks = _picks(GAINS, 8)
    picks["search_score"] = 0.6  # identical search scores: only the held-out gain differs
    kruskal, pairs = heldout_rank_tests(picks)
    assert kruskal["k"] == 3 and kruskal["n"] == 24 and kruskal["p"] < 0.001
    gp_uniform = pairs[(pairs["a"] == "gp") & (pairs["b"] == "uniform")].iloc[0]
    assert gp_uniform["p_holm"] < 0.05 and gp_uniform["shift"] == pytest.approx(0.08, abs=0.01)


def test_figure_draws_every_pick_with_its_interval_filled_only_above_dense():
    picks = with_methods(_picks(GAINS, 3))
    fig = plots.heldout_picks_figure(picks)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(GAINS)
    points = [c for c in ax.collections if c.get_offsets().shape[0] and hasattr(c, "get_sizes")]
    drawn = np.concatenate([c.get_offsets()[:, 1] for c in points if len(c.get_sizes())])
    assert sorted(drawn) == pytest.approx(sorted(picks["heldout_delta"]))
    assert "128" not in ax.get_title() and "64 held-out prompts" in ax.get_title()


def test_report_puts_the_held_out_section_in_markdown_and_html(tmp_path):
    picks = _picks(GAINS, 8)
    report = write_report(_table(GAINS, 8), tmp_path, title="t", picks=picks)
    text = report.markdown.read_text()
    section = text.split("## The pick, held out")[1].split("## Best so far")[0]
    gp_row = next(line for line in section.splitlines() if line.startswith("| gp |"))
    assert gp_row.endswith("| 8 |") and ("| +0.07" in gp_row or "| +0.08" in gp_row)
    assert "Kruskal-Wallis on the held-out gain" in section
    assert "Held out (64 prompts), the pick a user keeps: highest median gain over dense gp" in text
    assert "**Winner: gp**" in text.split("## Findings")[1].split("## Summary")[0]
    assert "](figures/heldout_picks.png)" in section and report.figures["heldout_picks"].is_file()
    tests = pd.read_csv(report.tables["heldout_rank_tests"])
    assert len(tests) == 3 and (tests["n_a"] == 8).all()
    page = report.html.read_text()
    assert "<h2>The pick, held out</h2>" in page and page.count("data:image/png;base64,") == 6


def test_report_without_picks_has_no_held_out_section(tmp_path):
    report = write_report(_table(GAINS, 2), tmp_path, title="t")
    assert "held out" not in report.markdown.read_text().lower()
    assert "heldout_picks" not in report.figures and "heldout_rank_tests" not in report.tables
