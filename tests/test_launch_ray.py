"""`crdiff launch` against a real local Ray head (Jobs API on 127.0.0.1, isolated temp dir)."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from crdiff_search.commands.launch import launch

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
    """Stop the Ray head started by the fixture: its process and every descendant, by pid."""
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


@pytest.fixture(scope="module")
def ray_head():
    """A single-node Ray cluster with the dashboard (Jobs API), every port free and private,
    its own temp dir (so no other Ray user on the machine sees it), stopped by pid afterwards
    (never `ray stop`, which would stop every Ray instance of the machine)."""
    import psutil

    temp = tempfile.mkdtemp(prefix="crl", dir="/tmp")  # short: Ray's socket paths are limited
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
        "--num-cpus", "2", "--num-gpus", "0", "--temp-dir", temp, "--disable-usage-stats",
    ]  # fmt: skip
    log = open(Path(temp) / "head.log", "wb")  # noqa: SIM115 - closed in teardown
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=temp, start_new_session=True
    )
    address = f"http://127.0.0.1:{ports['dash']}"
    tracked: set[int] = set()
    try:
        from ray.job_submission import JobSubmissionClient

        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(Path(temp, "head.log").read_text()[-3000:])
            try:
                tracked = {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
                JobSubmissionClient(address)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield address, env
    finally:
        with contextlib.suppress(psutil.Error):
            tracked |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
        _stop_tree(proc.pid, tracked)
        log.close()


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


def test_launch_grid_resubmits_failed_and_skips_finished(ray_head, tmp_path, monkeypatch):
    address, _ = ray_head
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
    }
    assert code == 0, out.getvalue()
    assert (results / "flaky" / "argv").read_text().endswith("--resume")
    assert (results / "tiny-32x32" / "attempts").read_text() == "1"

    out = io.StringIO()
    states, code = launch(grid, address=address, poll_interval=0.5, out=out)
    assert code == 0 and [s.action for s in states] == ["skipped", "skipped"]
    assert "submitted" not in out.getvalue().split("study")[0]
    assert (results / "flaky" / "attempts").read_text() == "2"
    summary = out.getvalue()
    assert "tiny-32x32" in summary and "flaky" in summary and "0.2 (3 trials)" in summary
