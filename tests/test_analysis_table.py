"""The tidy comparison table: rows, columns, running totals, labels and bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crdiff_search.analysis import combine_studies, load_table, save_table, tidy_study
from crdiff_search.analysis.synthetic import study_table
from crdiff_search.errors import UsageError


def test_combined_table_has_one_row_per_finished_trial_with_running_totals(tmp_path):
    raw = study_table(
        [1.0, None, 3.0, 2.0],
        sampler="tpe",
        seed=3,
        n_images=[4, 4, 2, 2],
        t_total=[1.0, 2.0, 3.0, 4.0],
    )
    raw.loc[4] = raw.loc[3]
    raw.loc[4, ["trial_index", "state", "trial_id"]] = [4, "RUNNING", "unfinished"]
    path = tmp_path / "tpe-s3" / "trials.parquet"
    path.parent.mkdir()
    raw.to_parquet(path)

    table = combine_studies([path])

    assert len(table) == 4  # the RUNNING trial is not a result
    assert table["study"].unique().tolist() == ["tpe-s3"]
    assert table["method"].unique().tolist() == ["tpe"]
    assert table["seed"].unique().tolist() == [3]
    assert table["trial_number"].tolist() == [1, 2, 3, 4]
    assert table["cum_images"].tolist() == [4, 8, 10, 12]
    assert table["elapsed_s"].tolist() == pytest.approx([1.0, 3.0, 6.0, 10.0])
    assert table["cum_trial_s"].tolist() == pytest.approx([1.0, 3.0, 6.0, 10.0])
    # The failed trial keeps the best where it was.
    assert table["best_so_far"].tolist() == [1.0, 1.0, 3.0, 3.0]
    assert table["dense_score"].tolist()[0] == pytest.approx(0.0)
    for col in (
        "ratio.down",
        "ratio.mid",
        "ratio.up",
        "sparsity",
        "t_generate",
        "score_delta",
        "early_stopping",
        "started_at",
        "finished_at",
    ):
        assert col in table.columns


def test_timestamps_as_iso_strings_or_epoch_seconds_give_the_same_elapsed_time():
    raw = study_table([1.0, 2.0, 3.0], sampler="random", seed=0, t_total=[5.0, 1.0, 2.0])
    as_text = raw.assign(
        started_at=raw["started_at"].map(lambda t: t.isoformat()),
        finished_at=raw["finished_at"].map(lambda t: t.isoformat()),
    )
    epoch = raw.assign(
        started_at=raw["started_at"].map(lambda t: t.timestamp()),
        finished_at=raw["finished_at"].map(lambda t: t.timestamp()),
    )
    for frame in (raw, as_text, epoch):
        assert tidy_study(frame)["elapsed_s"].tolist() == pytest.approx([5.0, 6.0, 8.0])


def test_parallel_trials_count_wall_time_not_summed_trial_time():
    raw = study_table([1.0, 2.0], sampler="tpe", seed=0, t_total=[4.0, 4.0])
    raw["started_at"] = raw["started_at"].iloc[0]  # both started together
    raw["finished_at"] = [raw["started_at"].iloc[0] + pd.Timedelta(seconds=s) for s in (4.0, 5.0)]
    table = tidy_study(raw)
    assert table["elapsed_s"].tolist() == pytest.approx([4.0, 5.0])
    assert table["cum_trial_s"].tolist() == pytest.approx([4.0, 8.0])


def test_early_stopped_studies_are_labelled_and_inferred():
    plain = study_table([1.0, 2.0], sampler="tpe", seed=0)
    asha = study_table(
        [1.0, 0.5, 2.0],
        sampler="tpe",
        seed=0,
        states=["COMPLETE", "PRUNED", "COMPLETE"],
        n_images=[8, 2, 8],
    )
    table = combine_studies({"a": plain, "b": asha})
    assert table.drop_duplicates("study")["method"].tolist() == ["tpe", "tpe+asha"]
    assert table.groupby("method")["early_stopping"].first().to_dict() == {
        "tpe": False,
        "tpe+asha": True,
    }
    # A pruned trial's partial score never becomes the best.
    assert table.loc[table["method"] == "tpe+asha", "best_so_far"].tolist() == [1.0, 1.0, 2.0]


def test_overrides_label_a_table_without_sampler_columns():
    raw = study_table([1.0], sampler="x", seed=0).drop(columns=["sampler", "seed"])
    with pytest.raises(UsageError, match="sampler"):
        tidy_study(raw)
    table = combine_studies({"s": raw}, labels={"s": {"sampler": "anneal", "seed": 7}})
    assert (table["method"].iloc[0], table["seed"].iloc[0]) == ("anneal", 7)


def test_bad_tables_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="score"):
        tidy_study(pd.DataFrame({"trial_index": [0], "state": ["COMPLETE"]}))
    twin = study_table([1.0], sampler="tpe", seed=0)
    with pytest.raises(UsageError, match="same"):
        combine_studies({"a": twin, "b": twin})
    with pytest.raises(UsageError, match="no trial table"):
        combine_studies([tmp_path / "missing"])
    with pytest.raises(UsageError, match="not a comparison table"):
        twin.to_parquet(tmp_path / "raw.parquet")
        load_table(tmp_path / "raw.parquet")


def test_saved_table_round_trips(tmp_path):
    table = combine_studies(
        {f"s{i}": study_table(list(np.arange(3.0) + i), sampler="tpe", seed=i) for i in range(2)}
    )
    back = load_table(save_table(table, tmp_path / "comparison.parquet"))
    pd.testing.assert_frame_equal(back, table)
