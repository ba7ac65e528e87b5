"""Compare the samplers of ``crdiff_search.samplers`` on synthetic pruning-ratio problems.

Each problem has 3 to 9 groups with ratios in [0, 0.8] and is shaped like the real search:
pruning a little does nothing (a flat region near zero), the quality rises to an interior
optimum and falls beyond it, groups matter unequally and interact, and every evaluation is
noisy. Values are scaled so that the dense model scores 0.5 and the optimum 1.0.

Every sampler runs at equal budgets over the same problems and seeds, with 1 or 4 trials in
flight (ask/tell with random trial durations: the earliest to finish is told first, then a new
trial is asked). A sampler never sees the budget, so budgets 30 and 60 are the first 30 and 60
trials of the 120-trial run, exactly.

Metrics per (sampler, budget, concurrency), over problems x seeds:
- best regret: 1 - true value of the trial with the best *observed* value (what a user would
  pick); median and IQR;
- trials to 95%: the first trial whose true value reaches 0.95 of the optimum (inf if none).

Usage:
    nice -n 10 .venv/bin/python benchmarks/samplers.py            # table
    nice -n 10 .venv/bin/python benchmarks/samplers.py --json     # {"results": [...]}
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import sys
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BUDGETS = (30, 60, 120)
CONCURRENCY = (1, 4)
DIMS = (3, 6, 9)
SEEDS = tuple(range(10))
LOW, HIGH = 0.0, 0.8
NOISE = 0.02
FLAT_BELOW = 0.1  # pruning below this changes (almost) nothing


@dataclass(frozen=True)
class Problem:
    """A smooth, noisy, interior-optimum objective over ``dim`` ratios (maximise)."""

    dim: int
    seed: int

    def __post_init__(self) -> None:
        rng = np.random.default_rng([1000 + self.dim, self.seed])
        object.__setattr__(self, "_target", rng.uniform(0.05, 0.6, self.dim))
        a = rng.normal(size=(self.dim, self.dim)) * 0.3
        weights = np.diag(rng.uniform(0.3, 3.0, self.dim))
        object.__setattr__(self, "_hessian", weights + a @ a.T / self.dim)
        object.__setattr__(self, "_dense_gap", self._gap(np.zeros(self.dim)))

    @staticmethod
    def effective(r: np.ndarray) -> np.ndarray:
        # A smooth ramp: ~0 below FLAT_BELOW, ~r - FLAT_BELOW above it.
        x = (r - FLAT_BELOW) / 0.03
        return 0.03 * np.logaddexp(0.0, x)

    def _gap(self, r: np.ndarray) -> float:
        d = self.effective(r) - self._target
        return float(d @ self._hessian @ d)

    def true_value(self, r: np.ndarray) -> float:
        return 1.0 - 0.5 * self._gap(r) / self._dense_gap

    def optimum(self) -> float:
        return 1.0  # effective(r) == target is reachable: target + FLAT_BELOW <= 0.7 < HIGH


def run_one(
    sampler_name: str, problem: Problem, seed: int, concurrency: int, budget: int
) -> np.ndarray:
    """True and observed values of each trial, in the order the trials were asked."""
    import optuna
    from optuna.distributions import FloatDistribution

    from crdiff_search.samplers import create_sampler

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore")
    sampler = SAMPLER_FACTORIES.get(sampler_name, create_sampler)(sampler_name, seed=seed)
    names = [f"g{i}" for i in range(problem.dim)]
    space = {n: FloatDistribution(LOW, HIGH) for n in names}
    study = optuna.create_study(direction="maximize", sampler=sampler)
    rng = np.random.default_rng([seed, problem.dim, 7])
    true = np.empty(budget)
    observed = np.empty(budget)
    in_flight: list[tuple[float, int, optuna.trial.Trial]] = []
    now = 0.0
    asked = 0
    while asked < budget or in_flight:
        while asked < budget and len(in_flight) < concurrency:
            trial = study.ask(space)
            r = np.array([trial.params[n] for n in names])
            true[asked] = problem.true_value(r)
            observed[asked] = true[asked] + NOISE * rng.normal()
            heapq.heappush(in_flight, (now + rng.uniform(0.5, 1.5), asked, trial))
            asked += 1
        now, number, trial = heapq.heappop(in_flight)
        study.tell(trial, float(observed[number]))
    return np.stack([true, observed])


# Extra factories (name -> (name, seed) -> sampler) for variants under study; the default is
# crdiff_search.samplers.create_sampler.
SAMPLER_FACTORIES: dict[str, Callable] = {}


def _job(args):
    name, dim, seed, concurrency, budget = args
    return args, run_one(name, Problem(dim, seed), seed, concurrency, budget)


def summarise(runs: dict, budgets=BUDGETS):
    """Rows of the result table from {(name, dim, seed, concurrency): values}."""
    import pandas as pd

    rows = []
    for (name, dim, seed, conc), values in runs.items():
        true, observed = values
        for b in budgets:
            t, o = true[:b], observed[:b]
            regret = 1.0 - t[int(np.argmax(o))]
            hit = np.flatnonzero(t >= 0.95)
            rows.append(
                dict(
                    sampler=name,
                    dim=dim,
                    seed=seed,
                    concurrency=conc,
                    budget=b,
                    regret=regret,
                    to95=float(hit[0] + 1) if hit.size else math.inf,
                )
            )
    df = pd.DataFrame(rows)

    def iqr(x):
        return float(np.percentile(x, 75) - np.percentile(x, 25))

    table = (
        df.groupby(["sampler", "budget", "concurrency"], sort=False)
        .agg(
            median_best_regret=("regret", "median"),
            iqr_best_regret=("regret", iqr),
            median_trials_to_95=("to95", "median"),
        )
        .reset_index()
    )
    return df, table


def run_all(names, dims=DIMS, seeds=SEEDS, concurrency=CONCURRENCY, budget=None, jobs=2):
    budget = max(BUDGETS) if budget is None else budget
    tasks = [(n, d, s, c, budget) for n in names for d in dims for s in seeds for c in concurrency]
    runs = {}
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            for (n, d, s, c, _), values in pool.map(_job, tasks, chunksize=4):
                runs[(n, d, s, c)] = values
    else:
        for task in tasks:
            (n, d, s, c, _), values = _job(task)
            runs[(n, d, s, c)] = values
    return runs


def main(argv=None) -> int:
    from crdiff_search.samplers import SAMPLER_NAMES

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLER_NAMES))
    parser.add_argument("--dims", nargs="+", type=int, default=list(DIMS))
    parser.add_argument("--seeds", type=int, default=len(SEEDS), help="number of seeds (>= 10)")
    parser.add_argument(
        "--seed-offset", type=int, default=0, help="first seed (tune on others than the reported)"
    )
    parser.add_argument("--budgets", nargs="+", type=int, default=list(BUDGETS))
    parser.add_argument(
        "--concurrency", nargs="+", type=int, default=list(CONCURRENCY), help="trials in flight"
    )
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument("--by-dim", action="store_true", help="also print a table per dimension")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.samplers) - set(SAMPLER_NAMES) - set(SAMPLER_FACTORIES))
    if unknown:
        parser.error(f"unknown sampler(s) {unknown}; valid: {', '.join(SAMPLER_NAMES)}")
    if any(not 3 <= d <= 9 for d in args.dims):
        parser.error("--dims must be between 3 and 9")

    if any(b < 1 for b in args.budgets):
        parser.error("--budgets must be positive")
    runs = run_all(
        args.samplers,
        args.dims,
        range(args.seed_offset, args.seed_offset + args.seeds),
        concurrency=tuple(args.concurrency),
        budget=max(args.budgets),
        jobs=args.jobs,
    )
    df, table = summarise(runs, budgets=args.budgets)
    if args.json:
        records = table.to_dict(orient="records")
        for r in records:
            for k, v in r.items():
                if isinstance(v, float) and not math.isfinite(v):
                    r[k] = None  # not reached within the budget by at least half the runs
        print(json.dumps({"results": records}, indent=1))
        return 0
    import pandas as pd

    with pd.option_context("display.width", 120, "display.max_rows", 200):
        print(table.round(4).to_string(index=False))
        if args.by_dim:
            per_dim = (
                df.groupby(["dim", "sampler", "budget", "concurrency"], sort=False)["regret"]
                .median()
                .unstack("budget")
                .round(4)
            )
            print(per_dim.to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
