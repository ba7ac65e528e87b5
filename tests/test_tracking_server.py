"""StudyTracker against a real `mlflow server` on 127.0.0.1 (SQLite backend in a temp folder)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from crdiff_search.tracking import PARENT_TAG, StudyTracker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    env = dict(
        os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true"
    )
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    log = open(folder / "server.log", "wb")  # noqa: SIM115 - closed in teardown
    proc = subprocess.Popen(
        [
            str(mlflow_bin), "server",
            "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
            "--artifacts-destination", str(folder / "artifacts"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=folder,
        start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError((folder / "server.log").read_text()[-3000:])
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not start in 90 s")
            time.sleep(0.3)
        yield uri, folder
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def test_study_logged_through_tracking_server(mlflow_server):
    uri, folder = mlflow_server
    tracker = StudyTracker(uri, "crdiff-server-test")
    parent = tracker.start_study("server-study", {"sampler": "tpe"}, {"model": "tiny"}, "[model]\n")
    tracker.log_dense_baseline(parent, {"score": 0.5}, [Image.new("RGB", (8, 8), "red")] * 2)
    for i in range(3):
        tracker.log_trial(parent, f"t{i}", {"down": i / 10}, {"score": 0.5 + i}, {"generate": 0.1})
    # a resumed driver on another machine talks to the same server: nothing duplicates
    again = StudyTracker(uri, "crdiff-server-test")
    assert again.start_study("server-study", {"sampler": "tpe"}, {}, "[model]\n") == parent
    again.log_trial(parent, "t2", {"down": 0.2}, {"score": 9.0}, {})
    again.finish_study(parent)

    children = again.trial_runs(parent)
    assert sorted(children) == ["t0", "t1", "t2"]
    run = again.client.get_run(children["t2"])
    assert run.data.tags[PARENT_TAG] == parent and run.data.metrics["score"] == 9.0
    assert run.data.metrics["t_generate"] == 0.1
    assert again.client.get_run(parent).info.status == "FINISHED"
    # artifacts are proxied by the server into its own artifact folder
    assert {a.path for a in again.client.list_artifacts(parent, "images")} == {"images/dense.png"}
    stored = {p.name for p in (folder / "artifacts").rglob("*") if p.is_file()}
    assert {"dense.png", "experiment.toml"} <= stored
