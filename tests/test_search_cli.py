"""``crdiff search --dry-run``: the whole plan is validated and printed, nothing starts."""

from __future__ import annotations

import json
import os
import sys

import pytest

from crdiff_search.cli import main


def test_dry_run_prints_the_testbed_plan(capsys, tmp_path):
    rc = main(["search", "--dry-run", "--trials", "5", "--sampler", "tpe", "--out", str(tmp_path)])
    assert rc == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["model"] == "testbed" and plan["resolution"] == "24x24"
    assert list(plan["groups"]) == ["down", "mid", "up"]
    assert plan["groups"]["mid"] == [0.0, 0.95]
    assert (plan["trials"], plan["sampler"], plan["prompts"]) == (5, "tpe", 64)
    assert plan["rerank"] == {
        "top_k": 3,
        "weights": [1.0, 1.5],
        "prompts": 128,
        "seed": 10_000,
        "file": None,
    }
    assert plan["output"] == str(tmp_path)
    assert not any(tmp_path.iterdir())  # nothing written
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


@pytest.mark.parametrize(
    "sampler, warned", [("anneal", True), ("anneal-paper", True), ("tpe", False)]
)
def test_dry_run_warns_that_annealing_with_early_stopping_was_measured_poor(
    capsys, tmp_path, sampler, warned
):
    argv = ["search", "--dry-run", "--sampler", sampler, "--set", "search.early_stopping=true"]
    argv += ["--out", str(tmp_path)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["early_stopping"] is True
    message = f"warning: search.early_stopping with sampler {sampler!r}"
    assert (message in captured.err) is warned
    if warned:
        assert "sampler 'tpe'" in captured.err and "+0.007" in captured.err


def test_resume_without_a_study_is_a_usage_error(capsys, tmp_path):
    rc = main(["search", "--resume", "--no-tracking", "--out", str(tmp_path / "none")])
    assert rc == 2
    assert "no study to resume" in capsys.readouterr().err


def _fake_study(monkeypatch, tmp_path, calls):
    import pandas as pd

    import crdiff_search.rerank as rerank_module
    import crdiff_search.runner as runner
    from crdiff_search.rerank import RerankResult
    from crdiff_search.runner.study import StudyResult

    def run_study(config, **kwargs):
        calls.append(("search", str(kwargs["out_dir"])))
        return StudyResult(
            tmp_path / "trials.parquet", tmp_path, {"down": 0.9}, 0.6, 0.5, "t1", None, 4,
            {"COMPLETE": 4},
        )  # fmt: skip

    def rerank(study_dir, **kwargs):
        calls.append(("rerank", str(study_dir), kwargs["address"]))
        table = pd.DataFrame(
            [{"rank": 1, "kind": "poa", "trial_id": "t1", "w": 1.5, "score": 0.6,
              "score_delta": 0.1, "search_score": 0.6, "ratio.down": 0.9}]
        )  # fmt: skip
        winner = {"trial_id": "t1", "w": 1.5, "score": 0.6, "score_delta": 0.1,
                  "pruned_score": 0.58, "delta_low": 0.05, "delta_high": 0.15,
                  "p_vs_dense": 1e-4, "wins": 30, "ties": 90, "losses": 8}  # fmt: skip
        verdict = {"status": "repaired", "message": "trial t1 at w=1.5 beats the dense model"}
        return RerankResult(table, winner, 0.5, tmp_path, None, [], verdict)

    monkeypatch.setattr(runner, "run_study", run_study)
    monkeypatch.setattr(rerank_module, "rerank", rerank)


def test_search_ends_with_the_held_out_verdict(capsys, tmp_path, monkeypatch):
    calls = []
    _fake_study(monkeypatch, tmp_path, calls)
    out = str(tmp_path / "study")
    assert main(["search", "--no-tracking", "--out", out, "--address", "auto"]) == 0
    assert calls == [("search", out), ("rerank", out, "auto")]
    printed = capsys.readouterr().out.strip().splitlines()
    assert any("on 128 prompts the search never saw" in line for line in printed)
    assert printed[-1] == "verdict: REPAIRED: trial t1 at w=1.5 beats the dense model"
    calls.clear()
    assert main(["search", "--no-tracking", "--out", out, "--no-rerank"]) == 0
    assert calls == [("search", out)]
    assert "verdict" not in capsys.readouterr().out


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dry_run_checks_the_tracking_server_in_seconds_with_one_line(capsys, tmp_path):
    import socket
    import time

    from crdiff_search.errors import UsageError
    from crdiff_search.tracking import check_tracking_uri

    refused = f"http://127.0.0.1:{_free_port()}"
    start = time.monotonic()
    with pytest.raises(UsageError, match="not reachable"):
        check_tracking_uri(refused)
    assert time.monotonic() - start < 5  # the check itself: seconds, not minutes
    rc = main(["search", "--dry-run", "--tracking-uri", refused, "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert refused in err and "not reachable" in err and len(err.splitlines()) == 1
    assert "Traceback" not in err

    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        start = time.monotonic()
        rc = main(["search", "--dry-run", "--tracking-uri", uri, "--out", str(tmp_path)])
        took = time.monotonic() - start
    err = capsys.readouterr().err.strip()
    assert rc == 2 and took < 30 and "did not answer" in err and uri in err

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # running as root: permissions do not bind
            return
        rc = main(["search", "--dry-run", "--tracking-uri", f"sqlite:///{locked}/m.db"])
        assert rc == 2 and "cannot write in" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


def _study_folder(tmp_path):
    """A study folder as `crdiff search` leaves it, without having run anything."""
    from crdiff_search.config import load_experiment

    out = tmp_path / "study"
    config = load_experiment(None, out=str(out))
    (out / "ray" / config.study / "PruningTrainable_00000").mkdir(parents=True)
    (out / "experiment.toml").write_text(config.to_toml())
    (out / "study.json").write_text(
        json.dumps({"study_id": "testbed-0", "study": config.study, "folder": str(out)})
    )
    pd = __import__("pandas")
    pd.DataFrame({"trial_id": ["a"], "trial_index": [0], "state": ["COMPLETE"]}).to_parquet(
        out / "trials.parquet"
    )
    return out


def _damage(out, case):
    if case == "zero-byte table":
        (out / "trials.parquet").write_bytes(b"")
    elif case == "truncated table":
        data = (out / "trials.parquet").read_bytes()
        (out / "trials.parquet").write_bytes(data[: len(data) // 2])
    elif case == "binary experiment":
        (out / "experiment.toml").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    elif case == "latin-1 experiment":
        (out / "experiment.toml").write_bytes('study = "caf\xe9"\n'.encode("latin-1"))
    elif case == "missing table":
        (out / "trials.parquet").unlink()
    elif case == "missing study file":
        (out / "study.json").unlink()
    elif case == "corrupt study file":
        (out / "study.json").write_text("{not json")
    elif case == "moved folder":
        (out / "study.json").write_text(json.dumps({"study_id": "x", "folder": "/elsewhere"}))


DAMAGE = {
    "zero-byte table": "damaged or not a Parquet file",
    "truncated table": "damaged or not a Parquet file",
    "binary experiment": "is not UTF-8 text",
    "latin-1 experiment": "is not UTF-8 text",
    "missing study file": "study.json is missing",
    "corrupt study file": "is not valid JSON",
    "moved folder": "moved or copied",
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_study_folders_are_refused_before_ray_with_one_line(case, capsys, tmp_path):
    out = _study_folder(tmp_path)
    _damage(out, case)
    rc = main(["search", "--out", str(out), "--resume", "--no-tracking"])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert DAMAGE[case] in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


@pytest.mark.parametrize("case", ["zero-byte table", "binary experiment", "corrupt study file"])
def test_rerank_and_export_refuse_damaged_folders_with_one_line(case, capsys, tmp_path):
    out = _study_folder(tmp_path)
    _damage(out, case)
    for argv in (["rerank", str(out)], ["export", str(out), "--allow-null"]):
        rc = main(argv)
        err = capsys.readouterr().err.strip()
        assert rc == 2 and DAMAGE[case] in err and "Traceback" not in err, (argv, err)


def test_a_missing_trial_table_is_rebuilt_from_rays_results(tmp_path, capsys):
    import pandas as pd

    from crdiff_search.records import table_columns
    from crdiff_search.runner.study import check_resumable

    out = _study_folder(tmp_path)
    (out / "trials.parquet").unlink()
    trial = next((out / "ray").glob("*/PruningTrainable_00000"))
    done = {"trial_id": "a1", "experiment_tag": "1_down=0", "score": 0.4, "score_delta": 0.0,
            "chunk": 1, "n_images": 64, "ratio.down": 0.0, "ratio.mid": 0.0, "ratio.up": 0.0,
            "t_total": 3.0, "finished_at": 1764687430.5}  # fmt: skip
    (trial / "result.json").write_text(json.dumps({**done, "chunk": 0}) + "\n" + json.dumps(done))
    # as Tune names a trial's folder, with no experiment_tag in its results
    named = trial.parent / "PruningTrainable_c3_2_down=0.3000_2026-12-02_15-40-58"
    named.mkdir()
    tagless = {**done, "trial_id": "c3", "ratio.down": 0.3, "score": 0.6}
    del tagless["experiment_tag"]
    (named / "result.json").write_text(json.dumps(tagless) + "\n")
    unfinished = trial.parent / "PruningTrainable_00001"
    unfinished.mkdir()
    (unfinished / "result.json").write_text(json.dumps({**done, "trial_id": "b2", "chunk": 0}))
    check_resumable(out)
    assert "rebuilt it from Ray's results" in capsys.readouterr().err
    table = pd.read_parquet(out / "trials.parquet")
    assert table["trial_id"].tolist() == ["a1", "c3"]
    assert table["state"].tolist() == ["COMPLETE", "COMPLETE"]
    assert table["trial_index"].tolist() == [0, 1] and table["score"].tolist() == [0.4, 0.6]
    assert list(table.columns) == table_columns(["down", "mid", "up"])
