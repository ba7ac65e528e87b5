"""The paper preset replays the reference annealing loop exactly.

``reference_search`` restates the reference search (``BWP_strategy.py``: a start evaluation,
then a main loop of iterations; reheats and restarts inside it; a score cache keyed by the
ratios at 4 decimals) on its own, with evaluations replaced by a function, and drives it with
the sampler's own random draws: the test owns the random source, and a draw is keyed, as the
sampler keys it, by the number of the trial the next real evaluation will be (plus
``:cachedJ`` for the J-th iteration answered from the cache before it). Every scenario runs
the sampler under ask/tell, with the dense trial 0 first as a study does, until the sampler
says it has finished, and compares every evaluated point.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from crdiff_search.samplers import (
    PAPER_BUDGET,
    PAPER_MAX_EVALUATIONS,
    paper_sampler,
    paper_search_space,
)

optuna.logging.set_verbosity(optuna.logging.ERROR)

NAMES = ("down", "mid", "up")
LO, HI, T0 = 0.1, 0.8, 0.1


def source(number: int, purpose: str) -> np.random.Generator:
    return np.random.default_rng([20261128, number, zlib.crc32(purpose.encode())])


def _clip(x: float) -> float:
    return float(min(max(x, LO), HI))


def reference_search(evaluate: Callable, draw, *, offset: int = 1, iterations: int = 120):
    """The reference search; ``evaluate(index, point)`` returns a score or None (a failure,
    scored -2.0 and not cached). Returns the evaluated points and the loop's counters."""
    cache: dict[tuple, float] = {}
    trials: list[list[float]] = []
    move_rngs: dict[int, np.random.Generator] = {}
    hits: dict[int, int] = {}
    stats = {"reheats": 0, "restarts": 0, "stopped": False, "iterations": 0, "cached": 0}
    stats["accepted_failure"] = False

    def run(point):  # evaluate_configuration with the runner's cache
        n = offset + len(trials)
        key = tuple(f"{v:.4f}" for v in point)
        if key in cache:
            j = hits.get(n, 0)
            hits[n] = j + 1
            stats["cached"] += 1
            return cache[key], n, f":cached{j}", False
        trials.append(list(point))
        value = evaluate(len(trials) - 1, point)
        if value is not None:
            cache[key] = value
        return (-2.0 if value is None else value), n, "", value is None

    def neighbor(point, temperature, rng):  # generate_neighbor: one ratio, clipped
        s = max(0.005, 0.10 * temperature / T0)
        k = int(rng.integers(3))
        out = list(point)
        out[k] = _clip(out[k] + float(rng.uniform(-s, s)))
        return out

    start = [0.3, 0.3, 0.3]
    score, *_ = run(start)
    current, current_score = start, score
    best, best_score = start, score
    temperature, stall, unlocked = T0, 0, False
    for _ in range(iterations):
        n = offset + len(trials)
        rng = move_rngs.setdefault(n, draw(n, "move"))
        candidate = neighbor(current, temperature, rng)
        score, n, tag, failed = run(candidate)
        stats["iterations"] += 1
        delta = score - current_score
        if delta > 0 or draw(n, "accept" + tag).random() < math.exp(delta / temperature):
            stats["accepted_failure"] |= failed
            current, current_score = candidate, score
            if current_score > best_score:
                best, best_score = current, current_score
                stall = 0
                if not unlocked and best_score > 0.8:
                    unlocked = True
            else:
                stall += 1
        else:
            stall += 1
        temperature *= 0.95
        if stall >= 24:
            if unlocked and stats["reheats"] < 3:
                stats["reheats"] += 1
                temperature *= 1.5
                stall = 0
            elif stats["restarts"] < 2:
                stats["restarts"] += 1
                stall = 0
                restart = neighbor(best, T0 * 3.0, draw(n, "restart" + tag))
                score, *_ = run(restart)
                current, current_score = restart, score
                temperature = T0
                if score > best_score:
                    best, best_score = restart, score
            else:
                stats["stopped"] = True
                break
    stats["best"], stats["best_score"] = best, best_score
    return trials, stats


def run_sampler(evaluate: Callable, cap: int = PAPER_MAX_EVALUATIONS + 5):
    """The preset under ask/tell after a dense trial 0 (ratios 0, below the range), until it
    says it has finished."""
    sampler = paper_sampler(random_source=source)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.enqueue_trial(dict.fromkeys(NAMES, 0.0))
    dense = study.ask(paper_search_space())
    study.tell(dense, 0.0)
    points = []
    while not sampler.finished(study) and len(points) < cap:
        trial = study.ask(paper_search_space())
        points.append([trial.params[g] for g in NAMES])
        value = evaluate(len(points) - 1, points[-1])
        if value is None:
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, value)
    return points, sampler, study


def _noise(seed: int, n: int = 200) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 0.05, n)


def _bowl(point, centre=(0.45, 0.25, 0.6)) -> float:
    return 0.5 - sum((p - c) ** 2 for p, c in zip(point, centre, strict=True))


def scenario(kind: str) -> Callable:
    noise = _noise({"restarts": 1, "reheats": 2, "high-start": 3, "corner": 4}.get(kind, 5))
    fails = {5, 17}
    if kind == "restarts":  # nothing above 0.8: stalls restart, twice, then the loop stops
        return lambda i, p: None if i in fails else _bowl(p) - 0.9 + noise[i]
    if kind == "reheats":  # a move finds a best above 0.8: stalls reheat three times first
        return lambda i, p: None if i in fails else (0.9 if i == 3 else _bowl(p) + noise[i])
    if kind == "high-start":  # the start scores 0.85 and is never beaten
        return lambda i, p: 0.85 if i == 0 else 0.5 + noise[i]
    if kind == "corner":  # small ratios win: moves clip at the lower bound and repeat points
        return lambda i, p: -sum(p) + 0.01 * noise[i]
    if kind == "below-failure":  # scores below -2.0: a failure (-2.0) is a better point
        return lambda i, p: None if i % 7 == 3 else -3.0 + _bowl(p) + noise[i]
    raise ValueError(kind)


KINDS = ["restarts", "reheats", "high-start", "corner", "below-failure"]


@pytest.mark.parametrize("kind", KINDS)
def test_paper_preset_replays_the_reference_loop(kind):
    evaluate = scenario(kind)
    expected, info = reference_search(evaluate, source)
    got, sampler, study = run_sampler(evaluate)
    assert len(got) == len(expected)
    np.testing.assert_allclose(np.array(got), np.array(expected), rtol=0, atol=1e-12)
    state = sampler.chain(study)
    assert sampler.finished(study) and state.stopped
    assert (state.reheats, state.restarts) == (info["reheats"], info["restarts"])
    assert state.iterations == info["iterations"]
    assert state.best == pytest.approx(dict(zip(NAMES, info["best"], strict=True)), abs=1e-12)
    assert len(got) <= PAPER_MAX_EVALUATIONS
    if kind == "restarts":
        assert info["restarts"] == 2 and info["stopped"] and info["reheats"] == 0
    if kind == "reheats":
        assert info["reheats"] == 3
    if kind == "high-start":
        # Reheats are unlocked by a new best found by a move only: 0 reheats, 2 restarts, and
        # the loop stops after 1 + 3 x 24 iterations' evaluations + 2 restarts = 75.
        assert (info["reheats"], info["restarts"], info["stopped"]) == (0, 2, True)
        assert len(got) == 75 and state.iterations == 72
    if kind == "corner":
        # Repeats answered from the scores seen: iterations that cost no trial.
        assert info["cached"] > 0
        assert state.iterations == info["iterations"] > len(got) - 1 - info["restarts"]
        assert len({tuple(p) for p in got}) == len(got)
    if kind == "below-failure":
        assert info["accepted_failure"]


def test_paper_budget_is_iterations_plus_start_and_restarts():
    # No stall ever (every move is a new best): the 120 iterations run out.
    got, sampler, study = run_sampler(lambda i, p: float(i))
    assert sampler.finished(study) and sampler.chain(study).iterations == PAPER_BUDGET
    assert 100 < len(got) <= 1 + PAPER_BUDGET  # fewer when a repeat was answered from the cache
    assert PAPER_MAX_EVALUATIONS == 1 + PAPER_BUDGET + 2 == sampler.max_evaluations == 123


def test_first_move_is_drawn_at_t0_and_a_restart_moves_one_ratio():
    """Readings 1-3 of the reference: the start evaluation is not an iteration (the first move
    uses T0, step 0.1); a restart mutates one ratio by up to 0.3; the restart evaluation is
    not an iteration (no cooling, the patience counter stays at 0)."""
    sampler = paper_sampler(seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    space = paper_search_space()
    first = study.ask(space)
    study.tell(first, 0.5)
    state = sampler.chain(study)
    assert first.params == dict.fromkeys(NAMES, 0.3)
    assert (state.temperature, state.iterations, state.stall) == (T0, 0, 0)
    for _ in range(24):  # 24 worse moves: a stall, and a restart (best 0.5 < 0.8)
        trial = study.ask(space)
        moved = [abs(trial.params[g] - 0.3) for g in NAMES]
        assert sum(m > 0 for m in moved) == 1
        study.tell(trial, -1.0)
    state = sampler.chain(study)
    assert state.restarts == 1 and state.temperature == T0 and state.iterations == 24
    restart = study.ask(space)
    moved = [abs(restart.params[g] - 0.3) for g in NAMES]
    assert sum(m > 1e-12 for m in moved) == 1 and max(moved) <= 0.3 + 1e-12
    study.tell(restart, -1.5)
    state = sampler.chain(study)
    assert (state.temperature, state.iterations, state.stall) == (T0, 24, 0)


def test_our_readings_stay_available_as_options():
    from crdiff_search.samplers import AllCoordinates, ReheatOrRestart

    ours = paper_sampler(
        seed=0,
        repeats="redraw",
        count_start=True,
        restart_neighbor=AllCoordinates(),
        on_stall=ReheatOrRestart(reheat_above=0.8, max_restarts=2, restart_temperature_ratio=3),
    )
    study = optuna.create_study(direction="maximize", sampler=ours)
    first = study.ask(paper_search_space())
    study.tell(first, 0.85)
    state = ours.chain(study)
    assert state.iterations == 1 and state.temperature == pytest.approx(0.95 * T0)
    assert ours.max_evaluations == PAPER_BUDGET


def test_paper_preset_constants():
    space = paper_search_space()
    assert sorted(space) == list(NAMES)
    assert all((d.low, d.high, d.log, d.step) == (0.1, 0.8, False, None) for d in space.values())
    assert PAPER_BUDGET == 120
    study = optuna.create_study(direction="maximize", sampler=paper_sampler(seed=0))
    first = study.ask(space)
    assert first.params == {"down": 0.3, "mid": 0.3, "up": 0.3}
    study.tell(first, 0.1)
    second = study.ask(space)
    diff = [abs(second.params[g] - 0.3) for g in NAMES]
    assert sum(d > 0 for d in diff) == 1 and max(diff) <= 0.1


def test_the_dense_trial_stays_out_of_the_chain_when_the_range_includes_zero():
    from optuna.distributions import FloatDistribution

    space = {g: FloatDistribution(0.0, 0.95) for g in NAMES}
    sampler = paper_sampler(seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.enqueue_trial(dict.fromkeys(NAMES, 0.0))
    study.tell(study.ask(space), 0.9)
    state = sampler.chain(study)
    assert state.best is None and state.iterations == 0
    start = study.ask(space)
    assert start.params == dict.fromkeys(NAMES, 0.3)
