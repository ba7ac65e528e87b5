"""Live services: a local Ray head (Jobs API) and an `mlflow server`, started once for the module.

* StudyTracker against the tracking server (SQLite backend in a temp folder);
* `crdiff launch` of a grid on the Ray head: resubmission of a failed study and skipping of
  finished ones (with a stand-in CLI), then two real `crdiff search` studies (a tiny
  pipeline at two resolutions) logging to the tracking server.

Both services bind 127.0.0.1 on free ports; the Ray head has its own temp dir (so no other Ray
user of the machine connects to it) and is stopped by pid, never with `ray stop` (which stops
every Ray instance on the machine).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from crdiff_search.launch import launch
from crdiff_search.tracking import PARENT_TAG, StudyTracker

VENV_BIN = Path(sys.executable).parent


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _stop_tree(root_pid: int, tracked: set[int]) -> None:
    """Stop a service started here: its process and every descendant, by pid."""
    import psutil

    procs = {}
    for pid in tracked | {root_pid}:
        try:
            proc = psutil.Process(pid)
            procs[pid] = proc
            for child in proc.children(recursive=True):
                procs[child.pid] = child
        except psutil.Error:
            continue
    for proc in procs.values():
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(list(procs.values()), timeout=4)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)


def _descendants(pid: int) -> set[int]:
    import psutil

    try:
        return {c.pid for c in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return set()


def _start_ray_head(temp: Path, log) -> tuple[subprocess.Popen, str]:
    """`ray start --head --block` with the dashboard (Jobs API) and every port free."""
    names = ("port", "dash", "agent", "agent_grpc", "metrics", "renv", "nm", "om", "client")
    ports = dict(zip(names, _free_ports(len(names)), strict=True))
    env = dict(
        os.environ,
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
    )
    env.pop("RAY_ADDRESS", None)
    cmd = [
        str(VENV_BIN / "ray"), "start", "--head", "--block",
        "--node-ip-address", "127.0.0.1", "--port", str(ports["port"]),
        "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
        "--dashboard-port", str(ports["dash"]),
        "--dashboard-agent-listen-port", str(ports["agent"]),
        "--dashboard-agent-grpc-port", str(ports["agent_grpc"]),
        "--metrics-export-port", str(ports["metrics"]),
        "--runtime-env-agent-port", str(ports["renv"]),
        "--node-manager-port", str(ports["nm"]), "--object-manager-port", str(ports["om"]),
        "--ray-client-server-port", str(ports["client"]),
        "--num-cpus", "2", "--num-gpus", "0", "--temp-dir", str(temp), "--disable-usage-stats",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=temp, start_new_session=True
    )
    return proc, f"http://127.0.0.1:{ports['dash']}"


def _start_mlflow(folder: Path, log) -> tuple[subprocess.Popen, str]:
    (port,) = _free_ports(1)
    env = dict(
        os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true"
    )
    cmd = [
        str(VENV_BIN / "mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
        "--artifacts-destination", str(folder / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder, start_new_session=True
    )
    return proc, f"http://127.0.0.1:{port}"


def _ray_ready(address: str) -> bool:
    from ray.job_submission import JobSubmissionClient

    try:
        JobSubmissionClient(address)
        return True
    except Exception:
        return False


def _mlflow_ready(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


class _Service:
    """A process started here, with the pids of everything it spawned."""

    def __init__(self, proc: subprocess.Popen, url: str, log, log_path: Path, temp=None):
        self.proc, self.url, self.log, self.log_path = proc, url, log, log_path
        self.temp = temp  # a folder to remove once stopped
        self.tracked: set[int] = set()

    def note_children(self) -> None:
        self.tracked |= _descendants(self.proc.pid)

    def stop(self) -> None:
        self.note_children()
        _stop_tree(self.proc.pid, self.tracked)
        self.log.close()
        if self.temp is not None:
            shutil.rmtree(self.temp, ignore_errors=True)


def _new_ray_head() -> _Service:
    temp = Path(tempfile.mkdtemp(prefix="crl", dir="/tmp"))  # short: Ray socket paths are limited
    log = open(temp / "head.log", "wb")  # noqa: SIM115 - closed by stop()
    proc, url = _start_ray_head(temp, log)
    return _Service(proc, url, log, temp / "head.log", temp)


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    """Start the Ray head and the MLflow server side by side; stop both by pid afterwards.

    `ray start` gives the raylet a fixed 30 s to register and exits when a busy machine is
    slower than that: the head is then started again (up to three times).
    """
    folder = tmp_path_factory.mktemp("mlflow-server")
    mlflow_log = open(folder / "server.log", "wb")  # noqa: SIM115 - closed by stop()
    mlflow = _Service(*_start_mlflow(folder, mlflow_log), mlflow_log, folder / "server.log")
    heads = [_new_ray_head()]
    try:
        deadline = time.monotonic() + 240
        ray_up = mlflow_up = False
        while not (ray_up and mlflow_up):
            head = heads[-1]
            for svc in (head, mlflow):
                svc.note_children()
            if not ray_up and head.proc.poll() is not None:
                if len(heads) == 3:
                    raise RuntimeError("ray head exited:\n" + head.log_path.read_text()[-3000:])
                head.stop()
                heads.append(_new_ray_head())
                continue
            if mlflow.proc.poll() is not None:
                raise RuntimeError("mlflow exited:\n" + mlflow.log_path.read_text()[-3000:])
            ray_up = ray_up or (
                "Ray runtime started" in head.log_path.read_text(errors="replace")
                and _ray_ready(head.url)
            )
            mlflow_up = mlflow_up or _mlflow_ready(mlflow.url)
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"services not up after 240 s (ray {ray_up}, mlflow {mlflow_up})"
                )
            time.sleep(0.5)
        yield SimpleNamespace(ray=heads[-1].url, mlflow=mlflow.url, mlflow_folder=folder)
    finally:
        for svc in (*heads, mlflow):
            svc.stop()


def test_tracker_against_tracking_server(services):
    uri, folder = services.mlflow, services.mlflow_folder
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


STUB = textwrap.dedent(
    """\
    import sys, tomllib
    from pathlib import Path
    import pandas as pd

    args = sys.argv[1:]
    assert args[0] == "search", args
    study = tomllib.loads(Path(args[1]).read_text())
    out = Path(args[args.index("--out") + 1])
    out.mkdir(parents=True, exist_ok=True)
    marker = out / "attempts"
    attempts = int(marker.read_text()) if marker.exists() else 0
    marker.write_text(str(attempts + 1))
    (out / "argv").write_text(" ".join(args))
    if study["study"].startswith("flaky") and attempts == 0:
        (out / "experiment.toml").write_text(Path(args[1]).read_text())
        (out / "ray" / study["study"]).mkdir(parents=True)
        sys.exit("flaky study: first attempt fails")
    n = study["search"]["trials"]
    pd.DataFrame({"trial_id": [f"t{i}" for i in range(n)], "state": ["COMPLETE"] * n,
                  "score": [0.1 * i for i in range(n)]}).to_parquet(out / "trials.parquet")
    print("stub search done", study["study"], study["resolution"])
    """
)

EXPERIMENT = """\
study = "tiny"
resolution = "64x64"
[model]
source = "testbed"
steps = 2
[prompts]
count = 2
[search]
sampler = "random"
trials = 3
"""


def test_launch_grid_resubmits_failed_and_skips_finished(services, tmp_path, monkeypatch):
    address = services.ray
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stub.py").write_text(STUB)
    (tmp_path / "tiny.toml").write_text(EXPERIMENT)
    grid = tmp_path / "grid.toml"
    grid.write_text(
        f'command = "{sys.executable} {tmp_path / "stub.py"}"\n'
        'out = "results"\n'
        '[[study]]\nexperiment = "tiny.toml"\nresolution = "32x32"\n'
        '[[study]]\nexperiment = "tiny.toml"\nname = "flaky"\ntrials = 2\n'
    )
    out = io.StringIO()
    states, code = launch(grid, address=address, poll_interval=0.5, out=out)
    by_name = {s.plan.name: s for s in states}
    assert by_name["tiny-32x32"].status == "SUCCEEDED", out.getvalue()
    assert by_name["flaky"].status == "FAILED" and code == 1
    assert "first attempt fails" in out.getvalue()  # the failure reason is in the summary
    results = tmp_path / "results"
    assert (results / "tiny-32x32" / "trials.parquet").is_file()
    assert 'resolution = "32x32"' in (results / "_launch" / "tiny-32x32.toml").read_text()

    out = io.StringIO()
    states, code = launch(grid, address=address, poll_interval=0.5, out=out)
    by_name = {s.plan.name: (s.action, s.status) for s in states}
    assert by_name == {
        "tiny-32x32": ("skipped", "SUCCEEDED"),
        "flaky": ("resubmitted", "SUCCEEDED"),
    }, out.getvalue()
    assert code == 0, out.getvalue()
    assert [s.submission_id.endswith("-r2") for s in states] == [False, True]
    assert (results / "flaky" / "argv").read_text().endswith("--address auto --resume")
    assert (results / "tiny-32x32" / "attempts").read_text() == "1"

    out = io.StringIO()
    states, code = launch(grid, address=address, poll_interval=0.5, out=out)
    assert code == 0 and [s.action for s in states] == ["skipped", "skipped"]
    assert "submitted" not in out.getvalue().split("study")[0]
    assert (results / "flaky" / "attempts").read_text() == "2"
    summary = out.getvalue()
    assert "tiny-32x32" in summary and "flaky" in summary and "0.2 (3 trials)" in summary


REAL_EXPERIMENT = """\
study = "tinysd"
resolution = "32x32"
[model]
source = "{source}"
steps = 1
device = "cpu"
[prompts]
items = ["a red circle"]
count = 1
[search]
sampler = "random"
trials = 2
[rerank]
after_search = false    # no held-out prompts for this stand-in model
"""


@pytest.mark.slow
def test_launch_two_real_studies_logging_to_a_tracking_server(services, tmp_path, monkeypatch):
    """Two `crdiff search` jobs (one model at two resolutions) on the Ray head, both logging
    to the MLflow server; launching again skips both and adds no MLflow run."""
    from crdiff_search.testing import tiny_sd_pipeline

    address = services.ray
    uri = services.mlflow
    monkeypatch.chdir(tmp_path)
    tiny_sd_pipeline(seed=0).save_pretrained(str(tmp_path / "tiny-sd"))
    (tmp_path / "tiny.toml").write_text(REAL_EXPERIMENT.format(source=tmp_path / "tiny-sd"))
    grid = tmp_path / "grid.toml"
    grid.write_text(
        f'out = "runs"\ntracking_uri = "{uri}"\n'
        '[[study]]\nexperiment = "tiny.toml"\n'
        '[[study]]\nexperiment = "tiny.toml"\nresolution = "32x64"\n'
    )
    out = io.StringIO()
    states, code = launch(grid, address=address, poll_interval=1.0, out=out)
    assert code == 0, out.getvalue()
    assert [(s.plan.name, s.status) for s in states] == [
        ("tinysd", "SUCCEEDED"),
        ("tinysd-32x64", "SUCCEEDED"),
    ]
    import pandas as pd

    for name in ("tinysd", "tinysd-32x64"):
        table = pd.read_parquet(tmp_path / "runs" / name / "trials.parquet")
        assert list(table["state"]) == ["COMPLETE", "COMPLETE"]

    def mlflow_runs():
        found = {}
        for name in ("tinysd", "tinysd-32x64"):
            tracker = StudyTracker(uri, name)
            studies = tracker.client.search_runs([tracker.experiment_id])
            found[name] = sorted(r.data.tags.get("crdiff.kind", "") for r in studies)
        return found

    expected = {n: ["study", "trial", "trial"] for n in ("tinysd", "tinysd-32x64")}
    assert mlflow_runs() == expected

    out = io.StringIO()
    states, code = launch(grid, address=address, poll_interval=1.0, out=out)
    assert code == 0 and [s.action for s in states] == ["skipped", "skipped"], out.getvalue()
    assert mlflow_runs() == expected
