"""Grid files for `crdiff launch`: validation before Ray, study planning, submission ids."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pandas as pd
import pytest

from crdiff_search.cli import main
from crdiff_search.errors import UsageError
from crdiff_search.launch import load_grid, plan_grid

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


def _write(folder: Path, grid: str, experiment: str = EXPERIMENT) -> Path:
    (folder / "tiny.toml").write_text(experiment)
    path = folder / "grid.toml"
    path.write_text(grid)
    return path


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


TWO = """\
version = 1
out = "results"
[defaults]
trials = 2
[[study]]
experiment = "tiny.toml"
[[study]]
experiment = "tiny.toml"
resolution = "32x64"
sampler = "tpe"
"""


def test_plan_two_studies(tmp_path):
    grid = load_grid(_write(tmp_path, TWO), cwd=tmp_path)
    plans = plan_grid(grid)
    assert [p.name for p in plans] == ["tiny", "tiny-32x64"]
    assert [p.resolution for p in plans] == ["64x64", "32x64"]
    assert [p.trials for p in plans] == [2, 2]
    assert plans[0].out_dir == tmp_path / "results" / "tiny"
    assert plans[1].study_file == tmp_path / "results" / "_launch" / "tiny-32x64.toml"
    assert (
        'sampler = "tpe"' in plans[1].study_toml and 'resolution = "32x64"' in plans[1].study_toml
    )
    assert plans[0].entrypoint.startswith("crdiff search ")
    assert f"--out {tmp_path / 'results' / 'tiny'} " in plans[0].entrypoint
    assert plans[0].entrypoint.endswith("--address auto")
    # without a tracking URI anywhere, the grid's studies share one store next to the outputs
    assert f'uri = "sqlite:///{tmp_path / "results" / "mlflow.db"}"' in plans[0].study_toml
    ids = [p.submission_id for p in plans]
    assert ids[0].startswith("crdiff-tiny-") and ids[1].startswith("crdiff-tiny-32x64-")
    # ids are a function of the resolved study: same grid -> same ids; a change -> a new id
    assert [
        p.submission_id for p in plan_grid(load_grid(tmp_path / "grid.toml", cwd=tmp_path))
    ] == ids
    changed = _write(tmp_path, TWO.replace("trials = 2", "trials = 5"))
    assert plan_grid(load_grid(changed, cwd=tmp_path))[0].submission_id != ids[0]


def test_finished_table_counts_terminal_trials(tmp_path):
    plan = plan_grid(load_grid(_write(tmp_path, TWO), cwd=tmp_path))[0]
    assert plan.trials_done() == 0 and not plan.table_complete() and not plan.has_state()
    plan.out_dir.mkdir(parents=True)
    table = pd.DataFrame(
        {"trial_id": ["a", "b"], "state": ["COMPLETE", "RUNNING"], "score": [0.5, float("nan")]}
    )
    table.to_parquet(plan.out_dir / "trials.parquet")
    assert plan.trials_done() == 1 and not plan.table_complete() and not plan.has_state()
    (plan.out_dir / "experiment.toml").write_text("")
    (plan.out_dir / "ray" / plan.name).mkdir(parents=True)
    assert plan.has_state()  # what `crdiff search --resume` needs
    table.loc[1, "state"] = "FAILED"
    table.to_parquet(plan.out_dir / "trials.parquet")
    assert plan.table_complete()
    assert plan.best() == (0.5, 1)


BAD_GRIDS = {
    "unknown top-level": ("colour = 1\n[[study]]\nexperiment = 'tiny.toml'\n", "unknown key"),
    "no studies": ("version = 1\n", "at least one"),
    "missing experiment": ("[[study]]\nexperiment = 'nope.toml'\n", "does not exist"),
    "experiment not a string": ("[[study]]\nexperiment = 3\n", "experiment ="),
    "bad version": ("version = 7\n[[study]]\nexperiment = 'tiny.toml'\n", "version = 7"),
    "bad resolution": ("[[study]]\nexperiment = 'tiny.toml'\nresolution = 'huge'\n", "huge"),
    "unknown override": ("[[study]]\nexperiment = 'tiny.toml'\ncolour = 'red'\n", "colour"),
    "duplicate names": (
        "[[study]]\nexperiment = 'tiny.toml'\n[[study]]\nexperiment = 'tiny.toml'\n",
        "both named 'tiny'",
    ),
    "bad name": ("[[study]]\nexperiment = 'tiny.toml'\nname = 'a b'\n", "name 'a b'"),
    "env not strings": ("[env]\nX = 1\n[[study]]\nexperiment = 'tiny.toml'\n", "env"),
    "not toml": ("[[study\n", "not valid TOML"),
}


@pytest.mark.parametrize("case", sorted(BAD_GRIDS))
def test_bad_grid_is_a_usage_error(tmp_path, case):
    text, match = BAD_GRIDS[case]
    path = _write(tmp_path, text)
    with pytest.raises(UsageError, match=match):
        plan_grid(load_grid(path, cwd=tmp_path))


def test_bad_grid_exits_2_before_contacting_ray(tmp_path, capsys):
    path = _write(tmp_path, BAD_GRIDS["bad resolution"][0])
    start = time.monotonic()
    # the address is a closed port: reaching Ray would fail differently (exit 1)
    assert main(["launch", str(path), "--address", _closed_port()]) == 2
    assert "huge" in capsys.readouterr().err
    assert main(["launch", str(tmp_path / "missing.toml")]) == 2
    assert time.monotonic() - start < 60
    assert main(["launch", str(path), "--address", "ray://head:10001"]) == 2
    assert "http://HEAD:8265" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["launch", str(path), "--poll-interval", "0"])
    assert exc.value.code == 2


def test_unreachable_ray_names_the_address(tmp_path, capsys):
    path = _write(tmp_path, TWO)
    address = _closed_port()
    assert main(["launch", str(path), "--address", address, "--poll-interval", "0.1"]) == 1
    err = capsys.readouterr().err
    assert f"cannot reach the Ray Jobs API at {address}" in err


def test_dry_run_prints_jobs_and_submits_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path, TWO)
    assert main(["launch", str(path), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert err.count("crdiff search ") == 2 and "[0/2 trials on disk]" in err
    assert not (tmp_path / "results").exists()


def test_latest_attempt_picks_the_newest_resubmission():
    from types import SimpleNamespace

    from crdiff_search.launch import latest_attempt

    jobs = [
        SimpleNamespace(submission_id=sid, status=st)
        for sid, st in [
            ("crdiff-a-1234", "FAILED"),
            ("crdiff-a-1234-r3", "RUNNING"),
            ("crdiff-a-1234-r2", "FAILED"),
            ("crdiff-a-12345", "SUCCEEDED"),  # another study whose id extends this one
            ("crdiff-a-1234-rx", "SUCCEEDED"),
        ]
    ]
    attempt, job = latest_attempt("crdiff-a-1234", jobs)
    assert attempt == 3 and job.status == "RUNNING"
    assert latest_attempt("crdiff-b-1", jobs) == (0, None)


def test_shipped_grid_plans_one_job_per_model_and_resolution(tmp_path):
    root = Path(__file__).resolve().parent.parent
    plans = plan_grid(load_grid(root / "experiments" / "grid.toml", cwd=tmp_path))
    assert len(plans) >= 2
    keys = [(p.model, p.resolution) for p in plans]
    assert len(set(keys)) == len(keys)
    assert len({p.submission_id for p in plans}) == len(plans)
    assert all(p.out_dir.parent == tmp_path / "runs" for p in plans)
