"""The benchmark's synthetic problems have the shape the README claims, and its JSON holds."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "samplers.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_samplers", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("dim", [3, 9])
def test_problem_shape(bench, dim):
    p = bench.Problem(dim, 0)
    zero = np.zeros(dim)
    assert p.true_value(zero) == pytest.approx(0.5)
    # Flat near zero pruning, an interior optimum of 1.0, worse at the top of the range.
    assert abs(p.true_value(np.full(dim, 0.03)) - 0.5) < 0.01
    best = p._target + bench.FLAT_BELOW
    assert np.all((best > 0.1) & (best < 0.75))
    assert p.true_value(best) == pytest.approx(1.0, abs=1e-3)
    assert p.true_value(np.full(dim, 0.8)) < p.true_value(best) - 0.2


def test_run_and_summary(bench):
    runs = {
        (name, 3, 0, c): bench.run_one(name, bench.Problem(3, 0), 0, c, 12)
        for name in ("anneal", "random")
        for c in (1, 4)
    }
    assert all(v.shape == (2, 12) for v in runs.values())
    df, table = bench.summarise(runs, budgets=(6, 12))
    assert len(table) == 2 * 2 * 2
    assert set(table.columns) >= {
        "sampler",
        "budget",
        "concurrency",
        "median_best_regret",
        "iqr_best_regret",
        "median_trials_to_95",
    }
    assert (table["median_best_regret"] >= -0.1).all()
    # Budgets are prefixes of the same run: more trials never raise the best true value found.
    for (_, _, _, _), values in runs.items():
        assert values[0][:12].max() >= values[0][:6].max()


def test_json_output(bench, capsys):
    argv = ["--json", "--samplers", "anneal", "uniform", "--dims", "3", "--seeds", "2"]
    assert bench.main([*argv, "--budgets", "4", "6", "--jobs", "1"]) == 0
    rows = json.loads(capsys.readouterr().out)["results"]
    assert len(rows) == 2 * 2 * 2  # samplers x budgets x concurrency
    assert {(r["sampler"], r["budget"], r["concurrency"]) for r in rows} == {
        (s, b, c) for s in ("anneal", "uniform") for b in (4, 6) for c in (1, 4)
    }
    for r in rows:
        assert set(r) == {
            "sampler",
            "budget",
            "concurrency",
            "median_best_regret",
            "iqr_best_regret",
            "median_trials_to_95",
        }
        assert 0.0 <= r["median_best_regret"] <= 1.0
