"""Best-so-far curves and their median/IQR bands, checked against numbers worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crdiff_search.analysis import best_so_far, combine_studies, curve_bands
from crdiff_search.analysis.synthetic import study_table
from crdiff_search.errors import UsageError

A_SCORES = {0: [1.0, 3.0, 2.0, 5.0], 1: [2.0, 2.0, 4.0, 4.0], 2: [0.0, 6.0, 1.0, 1.0]}


def _table():
    studies = {
        f"a-s{s}": study_table(v, sampler="a", seed=s, n_images=[4, 4, 2, 2])
        for s, v in A_SCORES.items()
    }
    # b is a worse copy of a: every score 10 lower.
    studies |= {
        f"b-s{s}": study_table([x - 10 for x in v], sampler="b", seed=s)
        for s, v in A_SCORES.items()
    }
    return combine_studies(studies)


def test_best_so_far_per_study_by_hand():
    curves = best_so_far(_table(), "trial")
    a = curves[curves["method"] == "a"]
    assert a[a["seed"] == 0]["best"].tolist() == [1, 3, 3, 5]
    assert a[a["seed"] == 1]["best"].tolist() == [2, 2, 4, 4]
    assert a[a["seed"] == 2]["best"].tolist() == [0, 6, 6, 6]
    assert curves[curves["method"] == "b"]["x"].tolist() == [1, 2, 3, 4] * 3


def test_median_and_iqr_over_seeds_by_hand():
    bands = curve_bands(_table(), "trial")
    a = bands[bands["method"] == "a"]
    # trial 1: bests (1, 2, 0); trial 2: (3, 2, 6); trial 3: (3, 4, 6); trial 4: (5, 4, 6).
    assert a["median"].tolist() == [1.0, 3.0, 4.0, 5.0]
    # Three values, linear interpolation: q25 halfway between the two lowest.
    assert a["q25"].tolist() == [0.5, 2.5, 3.5, 4.5]
    assert a["q75"].tolist() == [1.5, 4.5, 5.0, 5.5]
    assert a["n"].tolist() == [3, 3, 3, 3]


def test_dominating_sampler_is_above_everywhere():
    bands = curve_bands(_table(), "trial").set_index(["method", "x"])
    a, b = bands.loc["a"], bands.loc["b"]
    assert (a["median"] > b["median"]).all()
    assert (a["q25"] > b["q75"]).all()


def test_images_axis_steps_at_cumulative_images():
    # a spends 4, 8, 10, 12 images; b spends 4 per trial (4, 8, 12, 16).
    bands = curve_bands(_table(), "images", grid=[4, 9, 12, 16]).set_index(["method", "x"])
    assert bands.loc[("a", 9.0), "median"] == 3.0  # x <= 9: after two trials
    assert bands.loc[("a", 12.0), "median"] == 5.0
    assert np.isnan(bands.loc[("a", 16.0), "median"])  # a's budget ended at 12 images
    assert bands.loc[("a", 16.0), "n"] == 0
    assert bands.loc[("b", 16.0), "median"] == 5.0 - 10


def test_wall_axis_orders_trials_by_finish_time():
    raw = study_table([5.0, 1.0], sampler="p", seed=0)
    start = raw["started_at"].iloc[0]
    raw["started_at"] = start
    raw["finished_at"] = [start + pd.Timedelta(seconds=9), start + pd.Timedelta(seconds=2)]
    curves = best_so_far(combine_studies({"p": raw}), "wall")
    assert curves["x"].tolist() == [2.0, 9.0]
    assert curves["best"].tolist() == [1.0, 5.0]


def test_band_is_undefined_until_every_seed_has_a_completed_trial():
    studies = {
        "s0": study_table([None, 2.0], sampler="a", seed=0),
        "s1": study_table([1.0, 3.0], sampler="a", seed=1),
    }
    bands = curve_bands(combine_studies(studies), "trial")
    assert np.isnan(bands["median"].iloc[0]) and bands["n"].iloc[0] == 1
    assert bands["median"].iloc[1] == 2.5


def test_minimisation_tracks_the_lowest_score():
    table = combine_studies(
        {"s": study_table([3.0, 1.0, 2.0], sampler="a", seed=0)}, maximize=False
    )
    assert table["best_so_far"].tolist() == [3.0, 1.0, 1.0]
    assert curve_bands(table, "trial", maximize=False)["median"].tolist() == [3.0, 1.0, 1.0]


def test_unknown_axis_is_a_usage_error():
    with pytest.raises(UsageError, match="images"):
        best_so_far(_table(), "epochs")
