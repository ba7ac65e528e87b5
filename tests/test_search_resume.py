"""The driver killed with SIGKILL mid-search, then ``crdiff search --resume``: exactly the
budget, no finished trial run again, the annealing chain continuing, no duplicate MLflow runs.

Both drivers are real ``crdiff search`` processes. This module is the experiment's plugin: it
registers the slow stand-in objective in the drivers and in their Ray workers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crdiff_search.objectives import register_objective
from crdiff_search.objectives.base import Objective

REPO = Path(__file__).resolve().parent.parent
BUDGET = 6


class SlowBrightness(Objective):
    """Mean brightness after ``delay`` seconds; appends one JSON line per call to ``log``."""

    name = "test-slow-brightness"

    def __init__(self, log: str = "", delay: float = 0.0):
        self.log, self.delay = log, delay

    def score(self, images, prompts):
        time.sleep(self.delay)
        if self.log:
            with open(self.log, "a") as f:
                f.write(json.dumps({"pid": os.getpid(), "t": time.time()}) + "\n")
        return np.array([np.asarray(im, dtype=np.float64).mean() / 255.0 for im in images])


register_objective("test-slow-brightness", SlowBrightness, replace=True)


def crdiff(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent), RAY_AUTH_MODE="disabled")
    return subprocess.Popen(
        [sys.executable, "-m", "crdiff_search", "search", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def complete_rows(table: Path) -> pd.DataFrame | None:
    try:
        frame = pd.read_parquet(table)
    except Exception:  # not written yet
        return None
    return frame[frame["state"] == "COMPLETE"]


def _experiment(tmp_path, tracking_uri=None):
    """A study of BUDGET trials on a tiny saved pipeline, each scoring call taking 1 s."""
    from crdiff_search.testing import tiny_sd_pipeline

    model = tmp_path / "model"
    tiny_sd_pipeline().save_pretrained(model)
    out, calls = tmp_path / "study", tmp_path / "calls.jsonl"
    db = tmp_path / "mlflow.db"
    exp = tmp_path / "resume.toml"
    exp.write_text(
        textwrap.dedent(f"""
        study = "resume"
        resolution = "32x32"
        plugins = ["{Path(__file__).stem}"]
        [model]
        source = "{model}"
        steps = 2
        guidance = 1.0
        device = "cpu"
        [prompts]
        items = ["a red cat", "a blue bus"]
        [objective]
        name = "test-slow-brightness"
        options = {{ log = "{calls}", delay = 1.0 }}
        [search]
        sampler = "anneal"
        trials = {BUDGET}
        concurrency = 1
        [tracking]
        uri = "{tracking_uri or f"sqlite:///{db}"}"
        [rerank]
        after_search = false
    """)
    )
    return out, calls, db, exp


@pytest.mark.slow
def test_sigkill_then_resume(tmp_path):
    out, calls, db, exp = _experiment(tmp_path)
    args = [str(exp), "--out", str(out)]

    first = crdiff(args)
    deadline = time.time() + 400
    before = None
    while time.time() < deadline and first.poll() is None:
        rows = complete_rows(out / "trials.parquet")
        if rows is not None and len(rows) >= 2:
            before = rows
            break
        time.sleep(0.2)
    assert before is not None, "the first driver finished no trials:\n" + (
        first.stdout.read() if first.poll() is not None else "(still running)"
    )
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    killed_at = time.time()
    before = complete_rows(out / "trials.parquet")  # what was finished when the driver died
    assert 2 <= len(before) < BUDGET

    second = crdiff([*args, "--resume"])
    log, _ = second.communicate(timeout=400)
    assert second.returncode == 0, log
    assert "Failed to fetch metrics" not in log  # Ray's note on the unfinished trials: hidden

    table = pd.read_parquet(out / "trials.parquet")
    shown = table[["trial_id", "trial_index", "state", "attempts", "error"]].to_string()
    assert len(table) == BUDGET, shown + "\n" + log
    assert sorted(table["trial_index"]) == list(range(BUDGET))
    assert table["trial_id"].is_unique
    assert (table["state"] == "COMPLETE").all(), table[["trial_index", "state", "error"]]

    # Trials finished before the kill kept their results and were not executed again.
    after = table.set_index("trial_id").loc[before["trial_id"]]
    assert list(after["finished_at"]) == list(before["finished_at"])
    assert list(after["score"]) == list(before["score"])
    records = [json.loads(line) for line in calls.read_text().splitlines()]
    # Workers of the killed driver may finish the call they were in; count the new workers'.
    old_pids = {r["pid"] for r in records if r["t"] <= killed_at}
    resumed_calls = [r for r in records if r["pid"] not in old_pids]
    # Each trial not finished before the kill once, plus at most one dense baseline per new worker.
    unfinished = BUDGET - len(before)
    assert unfinished <= len(resumed_calls) <= unfinished + 1

    # The annealing chain continued: the searcher came back with the finished trials in its
    # Optuna study (numbers run on, the dense point enqueued once), rather than starting over.
    import pickle

    state_file = sorted((out / "ray" / "resume").glob("searcher-state-*.pkl"))[-1]
    study = pickle.loads(state_file.read_bytes())["_ot_study"]
    trials = study.get_trials(deepcopy=False)
    assert [t.number for t in trials] == list(range(BUDGET))
    assert [t.number for t in trials if t.system_attrs.get("fixed_params")] == [0]
    groups = [c.split(".", 1)[1] for c in table.columns if c.startswith("ratio.")]
    by_index = table.set_index("trial_index")
    for t in trials:
        assert t.params == {g: pytest.approx(by_index.loc[t.number, f"ratio.{g}"]) for g in groups}

    # MLflow: one study run, one child run per trial, however often the driver started.
    from crdiff_search.tracking import KIND_TAG, StudyTracker

    tracker = StudyTracker(f"sqlite:///{db}", "resume")
    runs = tracker.client.search_runs([tracker.experiment_id])
    kinds = [r.data.tags.get(KIND_TAG) for r in runs]
    assert kinds.count("study") == 1
    assert kinds.count("trial") == BUDGET
    # ... each one complete: a write the killed workers still had queued was made good.
    for run in runs:
        if run.data.tags.get(KIND_TAG) == "trial":
            assert run.info.status == "FINISHED", run.data.tags
            assert "score" in run.data.metrics and "ratio.down" in run.data.params


def test_trial_a_killed_driver_left_running_is_taken_over_by_its_index(tmp_path):
    """A driver killed between writing a trial's RUNNING row and saving Tune's state: on
    resume the trial comes back under a new id with the same index, and the table keeps one
    row for it (the budget's count stays exact)."""
    from types import SimpleNamespace

    from crdiff_search.runner.table import TrialTable

    def trial(trial_id, index):
        return SimpleNamespace(
            trial_id=trial_id, experiment_tag=f"{index + 1}_down=0.1", config={"down": 0.1}
        )

    path = tmp_path / "trials.parquet"
    first = TrialTable(path, groups=["down"], sampler="anneal", seed=0, n_chunks=1, budget=3)
    first.setup()
    first.on_trial_start(0, [], trial("a", 0))
    first.on_trial_complete(
        0, [], SimpleNamespace(**vars(trial("a", 0)), last_result={"score": 1.0, "chunk": 1})
    )
    first.on_trial_start(0, [], trial("b", 1))  # then the driver dies
    resumed = TrialTable(path, groups=["down"], sampler="anneal", seed=0, n_chunks=1, budget=3)
    resumed.setup()
    resumed.on_trial_start(0, [], trial("c", 1))
    table = pd.read_parquet(path)
    assert table["trial_id"].tolist() == ["a", "c"]
    assert table["state"].tolist() == ["COMPLETE", "RUNNING"]


def test_a_replayed_trial_keeps_its_recorded_row_exactly(tmp_path):
    from types import SimpleNamespace

    from crdiff_search.runner.table import TrialTable

    tag = {"experiment_tag": "1_down=0.1", "config": {"down": 0.1}}
    path = tmp_path / "trials.parquet"
    first = TrialTable(path, groups=["down"], sampler="anneal", seed=0, n_chunks=1, budget=2)
    first.setup()
    first.on_trial_start(0, [], SimpleNamespace(trial_id="a", **tag))
    done = {"score": 0.25, "chunk": 1, "finished_at": 1764687430.1287801}
    first.on_trial_complete(0, [], SimpleNamespace(trial_id="a", last_result=done, **tag))
    recorded = pd.read_parquet(path)
    resumed = TrialTable(path, groups=["down"], sampler="anneal", seed=0, n_chunks=1, budget=2)
    resumed.setup()
    resumed.on_trial_start(0, [], SimpleNamespace(trial_id="a", **tag))
    replay = {**done, "finished_at": 1764687430.1287803, "replayed": True}  # a float round trip
    resumed.on_trial_complete(0, [], SimpleNamespace(trial_id="a", last_result=replay, **tag))
    pd.testing.assert_frame_equal(pd.read_parquet(path), recorded)


@pytest.mark.slow
def test_ctrl_c_exits_130_says_how_to_resume_and_a_copy_is_refused(tmp_path):
    import shutil

    out, _, _, exp = _experiment(tmp_path)
    first = crdiff([str(exp), "--out", str(out)])
    deadline = time.time() + 400
    while time.time() < deadline and first.poll() is None:
        rows = complete_rows(out / "trials.parquet")
        if rows is not None and len(rows) >= 1:
            break
        time.sleep(0.2)
    os.kill(first.pid, signal.SIGINT)
    log, _ = first.communicate(timeout=300)
    assert first.returncode == 130, log
    assert f"crdiff search --out {out} --resume" in log and "interrupted after" in log
    assert "Tuner.restore" not in log  # Ray's advice is not ours

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    refused = crdiff(["--out", str(copy), "--resume"])
    text, _ = refused.communicate(timeout=120)
    assert refused.returncode == 2 and "moved or copied" in text and "Traceback" not in text
    before = pd.read_parquet(out / "trials.parquet")

    changed = crdiff(["--out", str(out), "--resume", "--trials", str(BUDGET + 3)])
    text, _ = changed.communicate(timeout=120)
    assert changed.returncode == 2 and f"search.trials ({BUDGET} -> {BUDGET + 3})" in text
    pd.testing.assert_frame_equal(pd.read_parquet(out / "trials.parquet"), before)

    second = crdiff(["--out", str(out), "--resume"])  # the saved experiment: nothing retyped
    log, _ = second.communicate(timeout=400)
    assert second.returncode == 0, log
    table = pd.read_parquet(out / "trials.parquet")
    assert len(table) == BUDGET and (table["state"] == "COMPLETE").all()


def _mlflow_server(folder: Path, port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
         "--default-artifact-root", str(folder / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    import urllib.request

    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return server
        except OSError:
            time.sleep(0.5)
    os.killpg(server.pid, signal.SIGKILL)
    raise AssertionError("the MLflow server did not start")


@pytest.mark.slow
def test_tracking_server_down_mid_study_then_resume_backfills(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    out, _, _, exp = _experiment(tmp_path, tracking_uri=uri)
    server = _mlflow_server(tmp_path, port)
    try:
        first = crdiff([str(exp), "--out", str(out)])
        deadline = time.time() + 400
        while time.time() < deadline and first.poll() is None:
            rows = complete_rows(out / "trials.parquet")
            if rows is not None and len(rows) >= 2:
                break
            time.sleep(0.2)
        os.killpg(server.pid, signal.SIGKILL)  # the server goes away mid-study
        server.wait()
        log, _ = first.communicate(timeout=600)
        # the study itself is not harmed: every trial completes, and the user is told how
        # MLflow gets its missing runs
        assert first.returncode == 0, log
        table = pd.read_parquet(out / "trials.parquet")
        assert len(table) == BUDGET and (table["state"] == "COMPLETE").all()
        assert f"crdiff search --out {out} --resume" in log, log

        server = _mlflow_server(tmp_path, port)
        second = crdiff(["--out", str(out), "--resume"])
        log, _ = second.communicate(timeout=400)
        assert second.returncode == 0, log
        from crdiff_search.tracking import KIND_TAG, StudyTracker

        tracker = StudyTracker(uri, "resume")
        runs = tracker.client.search_runs([tracker.experiment_id])
        trials = [r for r in runs if r.data.tags.get(KIND_TAG) == "trial"]
        studies = [r for r in runs if r.data.tags.get(KIND_TAG) == "study"]
        assert len(studies) == 1 and studies[0].info.status == "FINISHED"
        assert len(trials) == BUDGET and all(r.info.status == "FINISHED" for r in trials)
        assert all("score" in r.data.metrics for r in trials)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
