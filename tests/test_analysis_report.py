"""Figures (inspected as matplotlib objects) and the written report (Markdown, HTML, PNG, CSV)."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from crdiff_search.analysis import (
    combine_studies,
    curve_bands,
    final_best,
    load_table,
    plots,
    save_table,
    write_report,
)
from crdiff_search.analysis.synthetic import study_table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MEANS = {"anneal": 0.6, "tpe": 0.5, "uniform": 0.1}


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(0)
    studies = {}
    for method, mean in MEANS.items():
        for seed in range(3):
            scores = list(rng.normal(mean, 0.05, 6))
            scores[2] = None  # one failed trial per study
            ratios = rng.uniform(0.1, 0.8, (6, 3))
            if method == "uniform":
                ratios[:, 1:] = ratios[:, :1]
            studies[f"{method}-s{seed}"] = study_table(
                scores, sampler=method, seed=seed, ratios=ratios, dense_score=-0.5
            )
    return combine_studies(studies)


def test_best_so_far_figure_draws_one_median_line_and_one_band_per_method(table):
    fig = plots.best_so_far_figure(curve_bands(table, "trial"), "trial", target=0.5)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.lines]
    assert labels == ["anneal", "tpe", "uniform", "target"]
    assert len(ax.collections) == 3  # the IQR bands
    xs, ys = ax.lines[0].get_data()
    assert list(xs) == [1, 2, 3, 4, 5, 6]
    assert np.isfinite(np.asarray(ys, float)).all()
    assert ax.get_xlabel() == "trials"


def test_final_best_figure_has_a_box_and_a_point_per_seed(table):
    fig = plots.final_best_figure(final_best(table))
    ax = fig.axes[0]
    points = [c.get_offsets() for c in ax.collections]
    assert [len(p) for p in points] == [3, 3, 3]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(MEANS)
    final = final_best(table)
    assert sorted(points[0][:, 1]) == pytest.approx(
        sorted(final.loc[final["method"] == "anneal", "final_best"])
    )


NINE_METHODS = [
    "anneal",
    "anneal-paper",
    "tpe",
    "gp",
    "random",
    "cmaes",
    "uniform",
    "gp+asha",
    "tpe+asha",
]


def _label_boxes_apart(fig) -> bool:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    boxes = [t.get_window_extent(renderer) for t in fig.axes[0].get_xticklabels()]
    return len(boxes) == len(NINE_METHODS) and all(
        a.x1 < b.x0 for a, b in itertools.pairwise(boxes)
    )


def test_per_method_figures_keep_nine_long_method_labels_apart():
    final = pd.DataFrame(
        [
            {"method": m, "seed": s, "final_best": 0.6 + 0.01 * s}
            for m in NINE_METHODS
            for s in range(3)
        ]
    )
    assert _label_boxes_apart(plots.final_best_figure(final, methods=NINE_METHODS))
    picks = pd.DataFrame(
        [
            {"method": m, "seed": s, "heldout_delta": 0.05, "delta_low": 0.01, "delta_high": 0.09}
            for m in NINE_METHODS
            for s in range(3)
        ]
    )
    assert _label_boxes_apart(plots.heldout_picks_figure(picks, methods=NINE_METHODS))


def test_landscape_has_a_panel_per_method_and_pair_with_every_completed_trial(table):
    fig = plots.landscape_figure(table)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 3 * 3  # 3 methods x 3 pairs of (down, mid, up)
    completed = table[table["state"] == "COMPLETE"].groupby("method").size()
    assert all(len(ax.collections[0].get_offsets()) == completed["anneal"] for ax in panels[:3])
    # The uniform sampler's points lie on the diagonal of every projection.
    xy = panels[-1].collections[0].get_offsets()
    assert np.allclose(xy[:, 0], xy[:, 1])


def test_landscape_picks_the_groups_that_matter_when_there_are_many():
    rng = np.random.default_rng(1)
    ratios = rng.uniform(0.1, 0.8, (30, 6))
    scores = list(ratios[:, 4] * 3 + ratios[:, 1] + rng.normal(0, 0.01, 30))
    raw = study_table(
        scores, sampler="tpe", seed=0, ratios=ratios, groups=[f"g{i}" for i in range(6)]
    )
    groups = plots.landscape_groups(combine_studies({"s": raw}), limit=2)
    assert groups == ["ratio.g1", "ratio.g4"]


def test_report_writes_markdown_html_pngs_and_tables(table, tmp_path):
    report = write_report(table, tmp_path, title="demo", context={"resolution": "64x64"})
    text = report.markdown.read_text()
    assert text.startswith("# demo\n")
    assert "- resolution: 64x64" in text
    assert "Highest median final score: anneal" in text
    # 3 seeds a method: no pair can reach p < 0.05 after Holm, so no winner is named
    assert "**No winner**: anneal has the highest median" in text and "**Winner" not in text
    assert "Block-wise vs uniform: the best block-wise method (anneal" in text and "beats" in text
    assert "uniform (median" in text and "p = 0.100 (Holm 0.300): not significant at 0.05" in text
    for name in ("best_vs_trial", "best_vs_images", "best_vs_wall", "final_best", "landscape"):
        path = report.figures[name]
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000
        assert f"](figures/{name}.png)" in text
        with Image.open(io.BytesIO(data)) as img:
            assert 200 < img.width <= 1600 and 150 < img.height <= 1600
    assert "early_stopping" not in report.figures and "## Early stopping" not in text
    summary = pd.read_csv(report.tables["summary"])
    assert summary["method"].tolist() == list(MEANS)
    assert summary["seeds"].tolist() == [3, 3, 3]
    assert summary["failed"].tolist() == [3, 3, 3]
    pairs = pd.read_csv(report.tables["rank_tests"])
    assert len(pairs) == 3 and {"p", "p_holm", "rank_biserial", "shift"} <= set(pairs.columns)
    page = report.html.read_text()
    assert page.count('src="data:image/png;base64,') == 5
    assert "figures/" not in page  # self-contained
    assert "<table>" in page and "<b>No winner</b>" in page


def test_report_rebuilt_from_the_saved_table_is_identical(table, tmp_path):
    first = write_report(table, tmp_path / "a", title="t").markdown.read_text()
    save_table(table, tmp_path / "comparison.parquet")
    again = write_report(load_table(tmp_path / "comparison.parquet"), tmp_path / "b", title="t")
    assert again.markdown.read_text() == first
    assert (tmp_path / "a/tables/summary.csv").read_text() == again.tables["summary"].read_text()


def test_report_has_an_early_stopping_section_when_a_study_stopped_trials(tmp_path):
    studies = {}
    for seed in range(2):
        studies[f"tpe-s{seed}"] = study_table(
            [0.1, 0.3 + seed], sampler="tpe", seed=seed, n_images=8
        )
        studies[f"tpe-asha-s{seed}"] = study_table(
            [0.1, 0.0, 0.3 + seed],
            sampler="tpe",
            seed=seed,
            states=["COMPLETE", "PRUNED", "COMPLETE"],
            n_images=[8, 2, 8],
        )
    report = write_report(combine_studies(studies), tmp_path)
    text = report.markdown.read_text()
    assert "## Early stopping" in text and "tpe+asha" in text
    fig = plots.early_stopping_figure(final_best(combine_studies(studies)))
    assert [len(c.get_offsets()) for c in fig.axes[0].collections] == [2, 2]
    es = pd.read_csv(report.tables["early_stopping"])
    assert es["images_saved"].tolist() == pytest.approx([1 - 18 / 16])


def test_report_states_the_attainable_certainty_and_flags_duplicate_methods(tmp_path):
    ratios = [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]
    studies = {}
    for seed in range(3):
        for sampler in ("tpe", "random"):
            studies[f"{sampler}-{seed}"] = study_table(
                [0.0, 1.0 + seed], sampler=sampler, seed=seed, ratios=ratios
            )
    text = write_report(combine_studies(studies), tmp_path).markdown.read_text()
    assert "With 3 and 3 seeds the smallest attainable p of a pair is 0.1000" in text
    assert "`tpe` and `random` proposed exactly the same ratios" in text


def _seeded_table(means: dict[str, float], seeds: int, spread: float = 0.01):
    rng = np.random.default_rng(1)
    studies = {
        f"{method}-s{seed}": study_table(
            list(rng.normal(mean, spread, 5)), sampler=method, seed=seed, dense_score=0.0
        )
        for method, mean in means.items()
        for seed in range(seeds)
    }
    return combine_studies(studies)


@pytest.mark.parametrize(
    ("seeds", "means", "expected", "absent"),
    [
        (1, {"anneal": 0.9, "tpe": 0.1}, "**No winner can be named**: with 1 seed", "**Winner"),
        (8, {"anneal": 0.9, "tpe": 0.1, "random": 0.2}, "**Winner: anneal**", "No winner"),
        (8, {"anneal": 0.5, "tpe": 0.5}, "**No winner**:", "**Winner"),
    ],
)
def test_report_names_a_winner_only_where_the_seeds_support_one(
    tmp_path, seeds, means, expected, absent
):
    report = write_report(_seeded_table(means, seeds), tmp_path, title="t")
    text = report.markdown.read_text()
    assert expected in text and absent not in text


def test_p_values_read_as_a_phrase_below_the_printed_floor():
    from crdiff_search.analysis.report import _p_is

    assert _p_is(0.0004) == "p < 0.001"
    assert _p_is(0.0421) == "p = 0.042"
    assert _p_is(float("nan")) == "p = n/a"
