"""StudyTracker against SQLite: idempotent parent/child runs, nesting, params/metrics, images."""

from __future__ import annotations

import io
import os
import socket
import time
import warnings
from pathlib import Path

import pytest
from PIL import Image

from crdiff_search.errors import UsageError
from crdiff_search.tracking import (
    KIND_TAG,
    PARENT_TAG,
    STUDY_TAG,
    TRIAL_TAG,
    StudyTracker,
    TrackingError,
    default_tracking_uri,
    image_grid,
    resolve_tracking_uri,
)


@pytest.fixture(scope="module")
def db_uri(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    StudyTracker(uri, "crdiff-test")  # create the schema once for the module
    return uri


def _studies(tracker, study_id):
    return tracker._search(f"tags.`{STUDY_TAG}` = '{study_id}' and tags.`{KIND_TAG}` = 'study'")


def _tiles(n, size=16):
    colours = ["red", "green", "blue", "yellow", "white", "black"]
    return [Image.new("RGB", (size, size), colours[i % len(colours)]) for i in range(n)]


def test_resume_never_duplicates_parent_or_child_runs(db_uri):
    first = StudyTracker(db_uri, "crdiff-test")
    parent = first.start_study(
        "s-resume", {"sampler": "anneal", "trials": 4}, {"model": "tiny"}, "a = 1\n"
    )
    for i in range(3):
        first.log_trial(parent, f"t{i}", {"down": 0.1 * i}, {"score": float(i)}, {"prune": 0.01})

    # A restarted driver: a fresh tracker on the same store replays every trial and adds one.
    second = StudyTracker(db_uri, "crdiff-test")
    again = second.start_study(
        "s-resume", {"sampler": "anneal", "trials": 4}, {"model": "tiny"}, "a = 1\n"
    )
    assert again == parent
    ids = [
        second.log_trial(parent, f"t{i}", {"down": 0.1 * i}, {"score": float(i) + 10}, {})
        for i in range(4)
    ]
    assert len(set(ids)) == 4
    assert len(_studies(second, "s-resume")) == 1
    children = second.trial_runs(parent)
    assert sorted(children) == ["t0", "t1", "t2", "t3"]
    from mlflow.entities import ViewType

    runs = second.client.search_runs(
        [second.experiment_id], f"tags.`{PARENT_TAG}` = '{parent}'", run_view_type=ViewType.ALL
    )
    assert len(runs) == 4  # t0..t2 updated in place, t3 new; none created and deleted
    # updated, not duplicated: the latest score wins
    assert second.client.get_run(children["t1"]).data.metrics["score"] == 11.0
    tags = second.client.get_run(parent).data.tags
    assert tags["crdiff.resumes"] == "1"
    assert second.client.get_run(parent).info.status == "RUNNING"


def test_child_runs_nest_under_parent_with_params_metrics_timings(db_uri):
    tracker = StudyTracker(db_uri, "crdiff-test")
    parent = tracker.start_study(
        "s-nest", {"objective": "clip"}, {"resolution": "64x64"}, "x = 2\n"
    )
    run_id = tracker.log_trial(
        parent,
        "trial_00001",
        {"down": 0.2, "mid": 0.0, "up": 0.35},
        {"score": 0.75, "score_delta": -0.05, "sparsity": 0.18, "n_images": 4},
        {"load": 1.5, "t_prune": 0.02, "generate": 0.9, "score": 0.3},
    )
    run = tracker.client.get_run(run_id)
    assert run.data.tags[PARENT_TAG] == parent
    assert run.data.tags[TRIAL_TAG] == "trial_00001"
    assert run.data.tags[STUDY_TAG] == "s-nest"
    assert run.data.params == {"down": "0.2", "mid": "0.0", "up": "0.35"}
    metrics = run.data.metrics
    assert metrics["score"] == 0.75 and metrics["sparsity"] == 0.18 and metrics["n_images"] == 4
    assert metrics["t_load"] == 1.5 and metrics["t_prune"] == 0.02
    assert metrics["t_generate"] == 0.9 and metrics["t_score"] == 0.3
    assert run.info.status == "FINISHED"

    parent_run = tracker.client.get_run(parent)
    assert parent_run.data.params == {"objective": "clip"}
    assert parent_run.data.tags["resolution"] == "64x64"
    assert parent_run.data.tags["crdiff.version"]
    if "crdiff.git_commit" in parent_run.data.tags:
        assert len(parent_run.data.tags["crdiff.git_commit"]) == 40
    local = tracker.client.download_artifacts(parent, "experiment.toml")
    assert Path(local).read_text() == "x = 2\n"

    failed = tracker.log_trial(
        parent, "trial_00002", {"down": 0.9}, {}, {}, state="FAILED", error="CUDA out of memory"
    )
    run = tracker.client.get_run(failed)
    assert run.info.status == "FAILED" and run.data.tags["crdiff.error"] == "CUDA out of memory"

    tracker.finish_study(parent, "COMPLETE")
    assert tracker.client.get_run(parent).info.status == "FINISHED"
    with pytest.raises(UsageError, match="valid"):
        tracker.finish_study(parent, "DONE-ISH")


def test_image_grids_logged_as_png_artifacts(db_uri):
    tracker = StudyTracker(db_uri, "crdiff-test")
    parent = tracker.start_study("s-images", {}, {}, None)
    tracker.log_dense_baseline(parent, {"score": 0.8}, _tiles(4), [f"prompt {i}" for i in range(4)])
    trial = tracker.log_trial(parent, "t-best", {"down": 0.3}, {"score": 0.9}, {})
    tracker.log_best(parent, "t-best", 0.9, {"down": 0.3}, _tiles(4), [f"p{i}" for i in range(4)])

    assert tracker.client.get_run(parent).data.metrics["dense.score"] == 0.8
    assert tracker.client.get_run(parent).data.tags["crdiff.best1.trial_id"] == "t-best"
    # a best trial logged without images gets the grid its trial run already holds
    tracker.log_trial(
        parent, "t-second", {"down": 0.1}, {"score": 0.85}, {}, _tiles(2), captions=["x", "y"]
    )
    tracker.log_best(parent, "t-second", 0.85, {"down": 0.1}, rank=2)
    names = {a.path for a in tracker.client.list_artifacts(parent, "images")}
    assert names == {"images/dense.png", "images/best1.png", "images/best2.png"}
    assert {a.path for a in tracker.client.list_artifacts(trial, "images")} == {
        "images/samples.png"
    }
    png = tracker.client.download_artifacts(parent, "images/dense.png")
    with Image.open(png) as grid:
        assert grid.format == "PNG"
        # 4 tiles of 16 px enlarged to 128 px, 2 x 2, plus caption and title bands
        assert grid.width >= 2 * 128 and grid.height > 2 * 128


def test_image_grid_layout_and_captions():
    plain = image_grid(_tiles(3, 32), min_tile=32)
    captioned = image_grid(_tiles(3, 32), ["a red one", "green", "blue"], min_tile=32, title="t")
    assert plain.size[0] == captioned.size[0] == 2 * 34 + 2
    assert captioned.size[1] > plain.size[1]
    # a red tile sits at the top-left, after the 2-px padding
    assert plain.getpixel((5, 5)) == (255, 0, 0)
    import torch

    grid = image_grid([torch.ones(3, 8, 8), torch.zeros(8, 8, 3)], min_tile=8, ncols=2)
    assert grid.getpixel((3, 3)) == (255, 255, 255) and grid.getpixel((14, 3)) == (0, 0, 0)
    with pytest.raises(ValueError, match="captions"):
        image_grid(_tiles(2), ["only one"])
    buf = io.BytesIO()
    captioned.save(buf, format="PNG")
    assert buf.getvalue()[:4] == b"\x89PNG"


def test_racing_duplicates_are_collapsed_to_the_oldest(db_uri):
    tracker = StudyTracker(db_uri, "crdiff-test")
    parent = tracker.start_study("s-race", {}, {}, None)
    # Simulate another process that created the same study run concurrently.
    time.sleep(0.01)
    dup = tracker.client.create_run(
        tracker.experiment_id, tags={STUDY_TAG: "s-race", KIND_TAG: "study"}
    ).info.run_id
    with pytest.warns(UserWarning, match="duplicate"):
        assert tracker.find_study("s-race") == parent
    assert tracker.client.get_run(dup).info.lifecycle_stage == "deleted"
    assert len(_studies(tracker, "s-race")) == 1


def test_uri_resolution_and_errors_name_the_uri(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert default_tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert resolve_tracking_uri(None) == default_tracking_uri()
    assert resolve_tracking_uri("sqlite:///rel/m.db") == f"sqlite:///{tmp_path.resolve()}/rel/m.db"
    assert resolve_tracking_uri("store.db") == f"sqlite:///{tmp_path.resolve()}/store.db"
    assert resolve_tracking_uri("http://host:5000") == "http://host:5000"
    with pytest.raises(UsageError, match="no scheme"):
        resolve_tracking_uri("somewhere")
    with pytest.raises(UsageError, match="unknown scheme 'ftp'"):
        resolve_tracking_uri("ftp://x/y")

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    uri = f"http://127.0.0.1:{port}"
    start = time.monotonic()
    with pytest.raises(TrackingError, match=f"tracking URI {uri}"):
        StudyTracker(uri, "crdiff-test")
    assert time.monotonic() - start < 30


def test_mlflow_makes_no_network_calls_of_its_own():
    from mlflow.telemetry.utils import is_telemetry_disabled

    from crdiff_search.tracking import MLFLOW_ENV_DEFAULTS

    assert is_telemetry_disabled()
    for key in ("MLFLOW_DISABLE_TELEMETRY", "MLFLOW_HTTP_REQUEST_MAX_RETRIES"):
        assert key in MLFLOW_ENV_DEFAULTS and key in os.environ


@pytest.mark.slow
def test_processes_sharing_a_new_sqlite_store(tmp_path):
    """Drivers and workers that open the same new store at once (a grid's jobs, a study's
    trial workers): the tables are created once and the study run stays unique."""
    import subprocess
    import sys

    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    code = (
        "import sys\n"
        "from crdiff_search.tracking import StudyTracker\n"
        f"t = StudyTracker({uri!r}, 'shared')\n"
        "p = t.start_study('s', {}, {}, None)\n"
        "t.log_trial(p, sys.argv[1], {'down': 0.1}, {'score': 1.0}, {})\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, f"t{i}"], stderr=subprocess.PIPE)
        for i in range(2)
    ]
    errors = [p.communicate(timeout=300)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    tracker = StudyTracker(uri, "shared")
    assert len(_studies(tracker, "s")) == 1
    assert sorted(tracker.trial_runs(tracker.find_study("s"))) == ["t0", "t1"]


def test_background_logging_keeps_order_and_flushes(db_uri):
    tracker = StudyTracker(db_uri, "crdiff-test")
    parent = tracker.start_study("s-async", {}, {}, None)
    futures = [
        tracker.log_trial_async(
            parent, f"t{i % 3}", {"down": 0.1 * (i % 3)}, {"score": float(i)}, {}
        )
        for i in range(6)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no duplicate made and removed along the way
        assert tracker.flush(timeout=120) == []
    assert all(f.done() for f in futures)
    runs = tracker.trial_runs(parent)
    assert sorted(runs) == ["t0", "t1", "t2"]
    # in order: the last write of each trial wins
    assert tracker.client.get_run(runs["t2"]).data.metrics["score"] == 5.0
    bad = tracker.log_trial_async(parent, "t9", {}, {}, {}, state="NOT-A-STATE")
    errors = tracker.flush(timeout=60)
    assert len(errors) == 1 and isinstance(errors[0], UsageError) and bad.done()


def test_driver_writes_trials_whose_worker_write_was_lost(db_uri, tmp_path):
    import pandas as pd

    from crdiff_search.runner.study import _reconcile_tracking

    tracker = StudyTracker(db_uri, "crdiff-test")
    parent = tracker.start_study("s-reconcile", {}, {}, None)
    tracker.log_trial(parent, "done", {"ratio.down": 0.1}, {"score": 0.5}, {"generate": 1.0})
    tracker.log_trial(parent, "half", {"ratio.down": 0.2}, {}, {}, state="RUNNING")
    rows = [
        ("done", "COMPLETE", 0.1, 0.9),  # already FINISHED in MLflow: left alone
        ("half", "COMPLETE", 0.2, 0.7),  # the worker died mid-write: completed in place
        ("lost", "COMPLETE", 0.3, 0.6),  # the write never started: created
        ("bad", "FAILED", 0.4, float("nan")),  # failures are the driver's own business
    ]
    table = tmp_path / "trials.parquet"
    pd.DataFrame(
        [
            {
                "trial_id": t,
                "state": st,
                "ratio.down": r,
                "score": sc,
                "score_delta": 0.0,
                "n_images": 2,
                "t_generate": 1.5,
                "started_at": pd.Timestamp.now(tz="UTC"),
            }
            for t, st, r, sc in rows
        ]
    ).to_parquet(table)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no duplicate run made along the way
        assert _reconcile_tracking(tracker, parent, table, ["down"]) == 2
    statuses = tracker.trial_statuses(parent)
    assert statuses == {"done": "FINISHED", "half": "FINISHED", "lost": "FINISHED"}
    runs = tracker.trial_runs(parent)
    done = tracker.client.get_run(runs["done"]).data
    assert done.metrics["score"] == 0.5 and "crdiff.logged_by" not in done.tags
    for trial, score, ratio in (("half", 0.7, "0.2"), ("lost", 0.6, "0.3")):
        data = tracker.client.get_run(runs[trial]).data
        assert data.metrics["score"] == score and data.metrics["t_generate"] == 1.5
        assert data.params["ratio.down"] == ratio
        assert data.tags["crdiff.logged_by"] == "driver"
    # Run again: everything is FINISHED, nothing is written.
    assert _reconcile_tracking(tracker, parent, table, ["down"]) == 0


def test_a_rerank_logged_twice_is_one_run_under_its_study(db_uri):
    tracker = StudyTracker(db_uri, "crdiff-test")
    parent = tracker.start_study("s-rerank", {"trials": 2}, {}, "a = 1\n")
    kwargs = dict(name="rerank s", params={"top_k": 3}, dicts={"rerank.json": {"a": 1}})
    first = tracker.log_rerank("s-rerank", "key-a", metrics={"winner_score": 0.5}, **kwargs)
    again = StudyTracker(db_uri, "crdiff-test").log_rerank(
        "s-rerank", "key-a", metrics={"winner_score": 0.7}, **kwargs
    )
    other = tracker.log_rerank("s-rerank", "key-b", metrics={"winner_score": 0.1}, **kwargs)
    assert first == again != other
    run = tracker.client.get_run(first)
    assert run.data.tags[PARENT_TAG] == parent and run.data.tags[KIND_TAG] == "rerank"
    assert run.data.metrics["winner_score"] == 0.7 and run.info.status == "FINISHED"
    reranks = tracker._search(f"tags.`{STUDY_TAG}` = 's-rerank' and tags.`{KIND_TAG}` = 'rerank'")
    assert len(reranks) == 2


def test_failed_background_writes_are_counted_and_the_driver_says_so_once(db_uri, tmp_path, capsys):
    from crdiff_search.runner.table import TrialTable

    tracker = StudyTracker(db_uri, "crdiff-test")

    def down():
        raise ConnectionError("server gone")

    tracker.submit(down)
    tracker.submit(down)
    errors = tracker.flush(timeout=10)
    assert errors and tracker.failures == 2  # flush returns those still pending
    assert tracker.last_failure == "ConnectionError: server gone"

    table = TrialTable(
        tmp_path / "trials.parquet", groups=["down"], sampler="anneal", seed=0, n_chunks=1, budget=2
    )
    result = {"tracking_failures": 2, "tracking_error": tracker.last_failure}
    table._check_tracking(result)
    table._check_tracking({**result, "tracking_failures": 3})
    err = capsys.readouterr().err
    assert err.count("MLflow writes are failing") == 1
    assert "server gone" in err and f"--out {tmp_path} --resume" in err


def test_resume_replays_a_trial_whose_result_reached_mlflow_but_not_the_table(db_uri, tmp_path):
    import pandas as pd

    from crdiff_search.config import load_experiment
    from crdiff_search.runner.spec import TrackingTarget
    from crdiff_search.runner.study import _completed

    tracker = StudyTracker(db_uri, "crdiff-test")
    parent = tracker.start_study("s-replay", {}, {}, "a = 1\n")
    tracker.log_trial(parent, "t0", {"ratio.down": 0.0}, {"score": 0.5}, {"total": 1.0})
    tracker.log_trial(
        parent, "t1", {"ratio.down": 0.3}, {"score": 0.7, "n_images": 4}, {"generate": 2.0}
    )
    tracker.log_trial(parent, "t2", {"ratio.down": 0.4}, state="FAILED", error="boom")
    table = tmp_path / "trials.parquet"
    pd.DataFrame(
        {"trial_id": ["t0", "t1"], "trial_index": [0, 1], "state": ["COMPLETE", "RUNNING"],
         "ratio.down": [0.0, 0.3], "score": [0.5, None]}
    ).to_parquet(table)  # fmt: skip
    config = load_experiment(None)
    target = TrackingTarget(db_uri, "crdiff-test", parent)
    done = _completed(table, ["down"], config, tracker, target)
    assert set(done) == {"t0", "t1"}  # t1 from MLflow; the failed t2 runs again
    replay = done["t1"]
    assert replay["ratios"] == {"down": 0.3}
    assert replay["metrics"]["score"] == 0.7 and replay["metrics"]["n_images"] == 4
    assert replay["metrics"]["chunk"] == len(config.chunks())
    assert replay["metrics"]["t_generate"] == 2.0
