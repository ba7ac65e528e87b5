"""The terminal output: the study bar's plain form, its live form, quiet, the hidden INFO lines,
and the flags every command shares."""

from __future__ import annotations

import io
import logging

import pytest

from crdiff_search import progress
from crdiff_search.cli import build_parser, main

GROUPS = ["down", "mid", "up"]


def _row(index, score, delta, ratios, state="COMPLETE"):
    row = {"trial_index": index, "state": state, "score": score, "score_delta": delta}
    row.update({f"ratio.{g}": r for g, r in zip(GROUPS, ratios, strict=True)})
    return row


@pytest.fixture(autouse=True)
def _restore():
    yield
    progress.configure(mode="auto", verbose=False)


def test_compact_ratios_fit_their_width_and_name_the_largest():
    assert progress.compact_ratios({"down": 0.9, "mid": 0.1}) == "down=0.90 mid=0.10"
    many = {
        f"up_blocks.{i}.attentions.{j}": 0.01 * (i * 10 + j) for i in range(4) for j in range(6)
    }
    text = progress.compact_ratios(many, 60)
    assert len(text) <= 60
    assert text.startswith("24 groups, mean ")
    assert "up_blocks.3.attentions.5=0.35" in text  # the largest comes first
    assert text.endswith(f"+{24 - text.count('=')}")
    assert progress.compact_ratios({}) == "dense"


def test_plain_lines_count_time_and_carry_the_best_within_100_columns():
    out = io.StringIO()
    bar = progress.StudyProgress("testbed 24x24 anneal", budget=4, groups=GROUPS, mode="plain",
                                 stream=out)  # fmt: skip
    bar.finished(_row(0, 0.5, 0.0, [0, 0, 0]), replayed=True)  # an earlier run's: not printed
    assert out.getvalue() == ""
    bar.started(_row(1, None, None, [0.9, 0.1, 0.3]))
    bar.finished(_row(1, 0.62, 0.12, [0.9, 0.1, 0.3]))
    bar.finished(_row(2, 0.55, 0.05, [0.2, 0.2, 0.2]))
    bar.finished({**_row(3, None, None, [0.5, 0.5, 0.5], "FAILED"), "error": "ValueError: x"})
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert all(len(line) <= progress.PLAIN_WIDTH for line in lines)
    assert lines[0].startswith("[2/4 ") and "ETA" in lines[0]
    assert lines[0].endswith("trial 1: 0.6200 (+0.1200) | new best down=0.90 mid=0.10 up=0.30")
    assert lines[1].endswith(
        "trial 2: 0.5500 (+0.0500) | best #1 +0.1200 down=0.90 mid=0.10 up=0.30"
    )
    assert "trial 3 FAILED" in lines[2] and "ValueError: x" in lines[2]
    assert bar.done == 4 and bar.eta() == 0.0
    bar = progress.StudyProgress("s", budget=120, groups=GROUPS, mode="plain", stream=out)
    bar.t0 -= 3725  # an hour in: the clock is wider, the ratios still fit
    bar.done = bar.done_here = 99
    bar.finished(_row(1, 0.62, 0.12, [0.9, 0.1, 0.3]))
    bar.finished(_row(100, 0.61, 0.11, [0.9, 0.1, 0.3]))
    last = out.getvalue().splitlines()[-1]
    assert last.startswith("[101/120 1h02m ETA 11m") and last.endswith("up=0.30"), last
    assert len(last) <= progress.PLAIN_WIDTH


def test_minimizing_studies_keep_the_lowest_score_as_best():
    bar = progress.StudyProgress("s", budget=3, groups=GROUPS, mode="quiet", maximize=False)
    bar.finished(_row(0, 0.5, 0.0, [0, 0, 0]))
    bar.finished(_row(1, 0.3, -0.2, [0.5, 0, 0]))
    bar.finished(_row(2, 0.4, -0.1, [0.2, 0, 0]))
    assert bar.best["trial_index"] == 1


def test_live_display_shows_the_bar_the_best_and_the_running_trials():
    from rich.console import Console

    bar = progress.StudyProgress("testbed 24x24 tpe", budget=30, groups=GROUPS, mode="quiet")
    bar.finished(_row(0, 0.5, 0.0, [0, 0, 0]))
    bar.finished(_row(1, 0.6, 0.1, [0.9, 0.1, 0.3]))
    bar.started(_row(2, None, None, [0.7, 0.2, 0.4]))
    bar.started(_row(3, None, None, [0.1, 0.8, 0.0]))
    console = Console(file=io.StringIO(), width=120, record=True)
    console.print(bar._render())
    text = console.export_text()
    assert "testbed 24x24 tpe" in text and "2/30" in text
    assert "best 0.6000 (+0.1000 vs dense) trial 1: down=0.90 mid=0.10 up=0.30" in text
    assert "running trial 2: down=0.70 mid=0.20 up=0.40" in text
    assert "running trial 3: down=0.10 mid=0.80 up=0.00" in text


def test_quiet_prints_nothing():
    out = io.StringIO()
    bar = progress.StudyProgress("s", budget=2, groups=GROUPS, mode=False, stream=out)
    bar.phase("starting Ray")
    bar.finished(_row(0, 0.5, 0.0, [0, 0, 0]))
    say = progress.Reporter("s", mode=False, stream=out)
    say.phase("loading")
    assert out.getvalue() == ""


def test_auto_is_plain_off_a_terminal_and_live_on_one(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setenv("TERM", "xterm-256color")
    assert progress.resolve_mode(None, io.StringIO()) == "plain"
    assert progress.resolve_mode(None, Tty()) == "live"
    progress.configure(mode="quiet")
    assert progress.resolve_mode(True, Tty()) == "quiet"
    with pytest.raises(ValueError, match="live, plain"):
        progress.configure(mode="loud")


def test_other_libraries_info_lines_hide_unless_verbose():
    progress.configure(verbose=False)
    for name in ("ray", "ray.tune", "mlflow", "alembic"):
        assert logging.getLogger(name).getEffectiveLevel() == logging.WARNING
    progress.configure(verbose=True)
    assert logging.getLogger("ray.tune").getEffectiveLevel() == logging.INFO
    assert progress.verbose()


def test_every_command_takes_quiet_and_verbose_and_crdiff_has_a_version(capsys):
    import crdiff_search

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, command in sub.choices.items():
        text = command.format_help()
        assert "-q, --quiet" in text and "-v, --verbose" in text, name
    args = parser.parse_args(["search", "-q", "--verbose"])
    assert args.quiet and args.verbose
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"crdiff-search {crdiff_search.__version__}"


def test_the_package_lists_its_public_api_and_loads_it_lazily():
    import subprocess
    import sys

    code = (
        "import sys, crdiff_search as c; names = dir(c); "
        "assert 'torch' not in sys.modules and 'ray' not in sys.modules; "
        "assert {'run_study', 'apply_recipe', 'load_experiment', 'rerank_study', 'Recipe'} <= set(names)"
        ", names; assert c.load_experiment(None).resolution == '24x24'; print(c.__version__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() and done.stdout.strip() != "0+unknown"
