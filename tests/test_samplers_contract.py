"""Our contract over every sampler of the name table: what the search runner relies on."""

from __future__ import annotations

import math
import pickle
import warnings

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState

from crdiff_search.errors import UsageError
from crdiff_search.samplers import (
    SAMPLER_NAMES,
    SimulatedAnnealingSampler,
    create_sampler,
    sampler_options,
)

optuna.logging.set_verbosity(optuna.logging.ERROR)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

GROUPS = ("down", "mid", "up", "extra")
SPACE = {g: FloatDistribution(0.0, 0.8) for g in GROUPS}
OPTIMUM = {"down": 0.35, "mid": 0.2, "up": 0.5, "extra": 0.3}


def score(params) -> float:
    return 1.0 - sum((params[g] - OPTIMUM[g]) ** 2 for g in GROUPS)


def key(params) -> tuple:
    return tuple(round(params[g], 12) for g in sorted(params))


def history_trials(n=15, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        params = {g: float(rng.uniform(0.0, 0.8)) for g in GROUPS}
        out.append(
            optuna.trial.create_trial(params=params, distributions=SPACE, value=score(params))
        )
    return out


def run(study, n, *, pending=1, objective=score):
    """Ask/tell with ``pending`` trials in flight, oldest told first; returns all proposals."""
    asked, flying = [], []
    for _ in range(n):
        trial = study.ask(SPACE)
        asked.append(dict(trial.params))
        flying.append(trial)
        if len(flying) >= pending:
            t = flying.pop(0)
            study.tell(t, objective(t.params))
    for t in flying:
        study.tell(t, objective(t.params))
    return asked


@pytest.fixture(params=SAMPLER_NAMES)
def name(request):
    return request.param


def test_names_and_types():
    assert set(SAMPLER_NAMES) == {
        "anneal", "anneal-paper", "tpe", "random", "cmaes", "gp", "qmc", "uniform",
    }  # fmt: skip
    for n in SAMPLER_NAMES:
        assert isinstance(create_sampler(n, seed=0), optuna.samplers.BaseSampler)
    assert isinstance(create_sampler("anneal"), SimulatedAnnealingSampler)


def test_unknown_name_lists_valid_names():
    with pytest.raises(UsageError) as err:
        create_sampler("annealing")
    assert isinstance(err.value, ValueError)
    assert "'annealing'" in str(err.value)
    assert all(n in str(err.value) for n in SAMPLER_NAMES)


@pytest.mark.parametrize(
    "sampler_name,options,needle",
    [
        ("anneal", {"tempreature": 1.0}, "tempreature"),
        ("anneal", {"patience": 0}, "patience"),
        ("anneal", {"initial_temperature": -1.0}, "initial_temperature"),
        ("anneal", {"neighbor": "zigzag"}, "zigzag"),
        ("anneal", {"cooling": 0.9}, "cooling"),
        ("anneal-paper", {"failure_score": float("nan")}, "failure_score"),
        ("random", {"n_startup_trials": 3}, "n_startup_trials"),
        ("cmaes", {"use_separable_cma": True, "with_margin": True}, "cmaes"),
        ("uniform", {"multivariate": True}, "multivariate"),
    ],
)
def test_invalid_options_are_usage_errors(sampler_name, options, needle):
    with pytest.raises(UsageError) as err:
        create_sampler(sampler_name, seed=0, **options)
    assert needle in str(err.value)


def test_named_neighbor_option_and_option_listing():
    s = create_sampler("anneal", seed=0, neighbor="all", patience=5)
    assert type(s._neighbor).__name__ == "AllCoordinates" and s._patience == 5
    assert "patience" in sampler_options("anneal") and "seed" not in sampler_options("anneal")


def test_bounds_and_native_types(name):
    space = {
        **SPACE,
        "grid": FloatDistribution(0.0, 1.0, step=0.05),
        "width": IntDistribution(1, 64, log=True),
    }
    study = optuna.create_study(direction="maximize", sampler=create_sampler(name, seed=1))
    for i in range(15):
        t = study.ask(space)
        for g, d in space.items():
            v = t.params[g]
            assert type(v) is (int if isinstance(d, IntDistribution) else float), (g, v)
            assert d.low <= v <= d.high
        assert abs(t.params["grid"] / 0.05 - round(t.params["grid"] / 0.05)) < 1e-9
        study.tell(t, score(t.params) - 0.001 * i)
    if name == "uniform":
        for t in study.trials:
            assert len({t.params[g] for g in GROUPS}) == 1


def test_same_seed_and_history_same_proposals(name):
    def proposals(seed):
        study = optuna.create_study(direction="maximize", sampler=create_sampler(name, seed=seed))
        study.add_trials(history_trials())
        return [key(study.ask(SPACE).params) for _ in range(4)]

    assert proposals(3) == proposals(3)
    assert proposals(3) != proposals(4)


def test_pickle_round_trip_mid_study(name):
    a = create_sampler(name, seed=5)
    study_a = optuna.create_study(direction="maximize", sampler=a)
    study_b = optuna.create_study(direction="maximize", sampler=create_sampler(name, seed=5))
    first_a, first_b = run(study_a, 10, pending=2), run(study_b, 10, pending=2)
    assert [key(p) for p in first_a] == [key(p) for p in first_b]
    study_b.sampler = pickle.loads(pickle.dumps(a))
    assert [key(p) for p in run(study_a, 8, pending=2)] == [
        key(p) for p in run(study_b, 8, pending=2)
    ]


def test_nan_failed_and_pruned_trials(name):
    sampler = create_sampler(name, seed=2)
    study = optuna.create_study(direction="maximize", sampler=sampler)

    def objective(trial):
        params = {g: trial.suggest_float(g, 0.0, 0.8) for g in GROUPS}
        if trial.number % 5 == 1:
            return float("nan")
        if trial.number % 7 == 3:
            raise RuntimeError("evaluation failed")
        if trial.number % 11 == 4:
            raise optuna.TrialPruned()
        return score(params)

    study.optimize(objective, n_trials=40, catch=(RuntimeError,))
    states = [t.state for t in study.trials]
    assert len(states) == 40
    assert states.count(TrialState.FAIL) == 13 and states.count(TrialState.PRUNED) == 3
    assert math.isfinite(study.best_value)
    for t in study.trials:
        assert all(0.0 <= t.params[g] <= 0.8 for g in GROUPS)
    if isinstance(sampler, SimulatedAnnealingSampler):
        chain = sampler.chain(study)
        complete = {key(t.params) for t in study.trials if t.state == TrialState.COMPLETE}
        bad = {key(t.params) for t in study.trials if t.state != TrialState.COMPLETE} - complete
        assert key(chain.best) in complete and study.trials[chain.best_trial].state.is_finished()
        assert study.trials[chain.best_trial].state == TrialState.COMPLETE
        assert chain.current_score is None or key(chain.current) not in bad
        assert math.isfinite(chain.best_score)


def test_four_pending_asks_are_distinct(name):
    for history in (False, True):
        study = optuna.create_study(direction="maximize", sampler=create_sampler(name, seed=8))
        if history:
            study.add_trials(history_trials(12))
        asked = [key(study.ask(SPACE).params) for _ in range(4)]
        assert len(set(asked)) == 4, asked


def test_never_the_same_point_twice_in_a_row(name):
    study = optuna.create_study(direction="maximize", sampler=create_sampler(name, seed=9))
    asked = [key(p) for p in run(study, 40, pending=1)]
    assert all(a != b for a, b in zip(asked, asked[1:], strict=False))


@pytest.mark.parametrize("sampler_name", ["anneal", "anneal-paper"])
def test_minimize_mirrors_maximize(sampler_name):
    def proposals(direction):
        sign = 1.0 if direction == "maximize" else -1.0
        study = optuna.create_study(
            direction=direction, sampler=create_sampler(sampler_name, seed=4)
        )
        return run(study, 30, pending=3, objective=lambda p: sign * score(p)), study

    up, study_up = proposals("maximize")
    down, study_down = proposals("minimize")
    assert [key(p) for p in up] == [key(p) for p in down]
    assert study_down.best_value == pytest.approx(-study_up.best_value)


def test_anneal_moves_towards_the_optimum():
    study = optuna.create_study(direction="maximize", sampler=create_sampler("anneal", seed=0))
    run(study, 60, pending=4)
    first = np.mean([score(t.params) for t in study.trials[:10]])
    assert study.best_value > 0.99 > first


def test_anneal_restarts_and_reheats_follow_the_stall_rule():
    from crdiff_search.samplers import ReheatOrRestart

    sampler = SimulatedAnnealingSampler(
        seed=0, patience=3, on_stall=ReheatOrRestart(reheat_above=0.5, max_reheats=1)
    )
    study = optuna.create_study(direction="maximize", sampler=sampler)
    values = iter([0.1, 0.6, 0.2, 0.2, 0.2, 0.3, 0.3, 0.3, 0.0, 0.0])
    run(study, 10, objective=lambda p: next(values))
    chain = sampler.chain(study)
    # Stalls after trials 4 and 7: the first reheats (best 0.6 > 0.5), the second restarts.
    assert (chain.reheats, chain.restarts, chain.best_trial) == (1, 1, 1)
    assert chain.iterations == 10 and chain.stall == 2


def _points_of_a_chain_pinned_at_zero(repeats: str) -> list[tuple[float, ...]]:
    """An objective that rewards small ratios keeps the chain at the lower bound, where
    clipping makes neighbours collide with points already evaluated."""
    sampler = SimulatedAnnealingSampler(seed=3, repeats=repeats)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    space = {g: FloatDistribution(0.0, 0.6) for g in ("down", "mid", "up")}
    study.enqueue_trial({g: 0.0 for g in space})  # the dense trial 0, as a study does
    points = []
    for _ in range(40):
        trial = study.ask(space)
        points.append(tuple(trial.params[g] for g in space))
        study.tell(trial, -sum(points[-1]))
    return points


def test_anneal_never_proposes_an_evaluated_point_again():
    for repeats in ("redraw", "cache"):
        points = _points_of_a_chain_pinned_at_zero(repeats)
        assert len(set(points)) == len(points), repeats
        assert points.count((0.0, 0.0, 0.0)) == 1


def test_cached_repeats_are_iterations_without_trials():
    """With repeats="cache" a clipped move back onto a scored point is answered from its
    score: the chain counts more iterations than there were trials."""
    sampler = SimulatedAnnealingSampler(seed=3, repeats="cache")
    study = optuna.create_study(direction="maximize", sampler=sampler)
    space = {g: FloatDistribution(0.0, 0.6) for g in ("down", "mid", "up")}
    for _ in range(40):
        trial = study.ask(space)
        study.tell(trial, -sum(trial.params.values()))
    assert sampler.chain(study).iterations > 40
    redraw = SimulatedAnnealingSampler(seed=3)
    study = optuna.create_study(direction="maximize", sampler=redraw)
    for _ in range(40):
        trial = study.ask(space)
        study.tell(trial, -sum(trial.params.values()))
    assert redraw.chain(study).iterations == 40


@pytest.mark.parametrize(
    "options, field",
    [
        ({"repeats": "yes"}, "repeats"),
        ({"count_start": "no"}, "count_start"),
        ({"max_iterations": 0}, "max_iterations"),
        ({"max_iterations": 2.5}, "max_iterations"),
    ],
)
def test_chain_options_are_checked(options, field):
    with pytest.raises(UsageError, match=field):
        SimulatedAnnealingSampler(**options)


def test_max_iterations_stops_the_chain():
    sampler = SimulatedAnnealingSampler(seed=0, max_iterations=5)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    space = {"x": FloatDistribution(0.0, 1.0)}
    for i in range(5):
        assert not sampler.finished(study)
        trial = study.ask(space)
        study.tell(trial, float(i))
    assert sampler.finished(study) and sampler.max_evaluations == 5


def test_strategies_are_small_abcs_and_a_bare_callable_is_refused():
    import ast
    from pathlib import Path

    from crdiff_search import samplers
    from crdiff_search.samplers import Neighbor, OneCoordinate, SimulatedAnnealingSampler

    assert isinstance(OneCoordinate(), Neighbor)
    with pytest.raises(UsageError, match=r"neighbor must be a Neighbor .*subclass it"):
        SimulatedAnnealingSampler(neighbor=lambda coords, space, h, rng: coords)

    class Still(Neighbor):  # a user's own move
        def __call__(self, coords, space, half_widths, rng):
            return coords

    SimulatedAnnealingSampler(neighbor=Still())
    # the strategies do not import the sampler (no import cycle)
    folder = Path(samplers.__file__).parent
    tree = ast.parse((folder / "_strategies.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "crdiff_search.samplers._anneal" not in imported


def test_a_local_model_picks_the_best_of_the_drawn_neighbours():
    """candidates=32: of the neighbours drawn (the first is the plain chain's proposal), the
    one a local quadratic model ranks best is proposed; on an exactly quadratic objective it is
    never worse than the plain proposal, and better for most seeds."""
    space = {"x": FloatDistribution(0.0, 1.0), "y": FloatDistribution(0.0, 1.0)}

    def f(p):
        return -((p["x"] - 0.8) ** 2) - 2 * (p["y"] - 0.3) ** 2

    better = 0
    for seed in range(8):
        proposals = {}
        for candidates in (1, 32):
            sampler = SimulatedAnnealingSampler(seed=seed, candidates=candidates)
            study = optuna.create_study(direction="maximize", sampler=sampler)
            grid = np.random.default_rng(seed).uniform(0.2, 0.8, (10, 2))
            for x, y in grid:
                study.enqueue_trial({"x": float(x), "y": float(y)})
                trial = study.ask(space)
                study.tell(trial, f(trial.params))
            proposals[candidates] = study.ask(space).params
        assert f(proposals[32]) >= f(proposals[1]) - 1e-12
        better += f(proposals[32]) > f(proposals[1]) + 1e-9
    assert better >= 6


def test_candidates_and_bandwidth_are_checked():
    with pytest.raises(UsageError, match="candidates"):
        SimulatedAnnealingSampler(candidates=0)
    with pytest.raises(UsageError, match="bandwidth"):
        SimulatedAnnealingSampler(bandwidth=-1)


def test_gp_fits_with_gradients_turned_off_globally():
    import torch

    previous = torch.is_grad_enabled()
    torch.set_grad_enabled(False)  # as a trial worker process does
    try:
        study = optuna.create_study(sampler=create_sampler("gp", seed=0, n_startup_trials=2))
        space = {"x": FloatDistribution(0.0, 1.0), "y": FloatDistribution(0.0, 1.0)}
        for _ in range(5):
            trial = study.ask(space)
            study.tell(trial, (trial.params["x"] - 0.3) ** 2 + trial.params["y"])
        assert len(study.trials) == 5
    finally:
        torch.set_grad_enabled(previous)
