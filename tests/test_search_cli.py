"""``crdiff search --dry-run``: the whole plan is validated and printed, nothing starts."""

from __future__ import annotations

import json
import sys

from crdiff_search.cli import main


def test_dry_run_prints_the_testbed_plan(capsys, tmp_path):
    rc = main(["search", "--dry-run", "--trials", "5", "--sampler", "tpe", "--out", str(tmp_path)])
    assert rc == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["model"] == "testbed" and plan["resolution"] == "48x48"
    assert list(plan["groups"]) == ["down", "mid", "up"]
    assert plan["groups"]["mid"] == [0.0, 0.6]
    assert (plan["trials"], plan["sampler"], plan["prompts"]) == (5, "tpe", 8)
    assert plan["output"] == str(tmp_path)
    assert not any(tmp_path.iterdir())  # nothing written
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def test_resume_without_a_study_is_a_usage_error(capsys, tmp_path):
    rc = main(["search", "--resume", "--no-tracking", "--out", str(tmp_path / "none")])
    assert rc == 2
    assert "no study to resume" in capsys.readouterr().err
