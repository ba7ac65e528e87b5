"""The paper preset replays the reference annealing loop exactly.

The reference loop is re-stated here on its own, in the reference's words (one evaluation per
iteration; see crdiff_search/samplers/_paper.py for how the ambiguous parts are read), and
driven by the same random draws as the sampler: the test owns the random source. The one
deviation from the reference (no point proposed twice in a row) is marked where it happens.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from crdiff_search.samplers import PAPER_BUDGET, paper_sampler, paper_search_space

optuna.logging.set_verbosity(optuna.logging.ERROR)

NAMES = ("down", "mid", "up")


def source(number: int, purpose: str) -> np.random.Generator:
    return np.random.default_rng([20261128, number, zlib.crc32(purpose.encode())])


def reference_loop(values, draw, n=120):
    """The reference search with evaluations replaced by ``values`` (None: a failure)."""
    lo, hi = 0.1, 0.8
    t0 = 0.1
    temperature = t0
    current, current_score = [0.3, 0.3, 0.3], None
    best, best_score = None, -math.inf
    no_improvement = reheats = restarts = 0
    evaluate_current = True  # the start point (and a restart point) is evaluated as it is
    stopped_at = None
    proposals = []
    for it in range(n):
        if stopped_at is not None:
            break
        if evaluate_current:
            candidate = list(current)
            evaluate_current = False
        else:
            rng = draw(it, "move")
            s = max(0.005, 0.1 * temperature / t0)
            # The one deviation, documented in the preset: a move that lands on the current
            # point or repeats the previous proposal (a coordinate clipped at a bound) is
            # redrawn from the same generator, so that no point is proposed twice in a row.
            for _ in range(32):
                k = int(rng.integers(3))
                candidate = list(current)
                candidate[k] = min(max(candidate[k] + rng.uniform(-s, s), lo), hi)
                if candidate != current and (not proposals or candidate != proposals[-1]):
                    break
        proposals.append(candidate)
        failed = values[it] is None
        score = -2.0 if failed else values[it]
        if current_score is None and not failed:
            current, current_score = candidate, score
        elif current_score is not None and (
            score > current_score
            or draw(it, "accept").random() < math.exp((score - current_score) / temperature)
        ):
            assert not failed, "the scenario must not let the reference accept a failure"
            current, current_score = candidate, score
        if score > best_score:
            best, best_score = list(candidate), score
            no_improvement = 0
        else:
            no_improvement += 1
        temperature *= 0.95
        if no_improvement >= 24:
            no_improvement = 0
            if best_score > 0.8 and reheats < 3:
                temperature *= 1.5
                reheats += 1
            elif restarts < 2:
                rng = draw(it, "restart")
                s = max(0.005, 0.1 * 3 * t0 / t0)
                current = [min(max(b + rng.uniform(-s, s), lo), hi) for b in best]
                current_score = None
                temperature = t0
                restarts += 1
                evaluate_current = True
            else:
                stopped_at = it
    return proposals, {
        "reheats": reheats,
        "restarts": restarts,
        "stopped_at": stopped_at,
        "best": best,
    }


def run_sampler(values, n):
    sampler = paper_sampler(random_source=source)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    proposals = []
    for it in range(n):
        trial = study.ask(paper_search_space())
        proposals.append([trial.params[g] for g in NAMES])
        v = values[it] if it < len(values) else -1.5
        if v is None:
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, v)
    return proposals, sampler, study


def _scenario(kind: str) -> list[float | None]:
    rng = np.random.default_rng(7 if kind == "restarts" else 8)
    if kind == "restarts":
        values = list(np.minimum(rng.normal(-0.3, 0.2, PAPER_BUDGET), 0.75))
        values[60:] = [-1.5] * (PAPER_BUDGET - 60)  # nothing improves once the chain stops
    else:
        values = list(np.minimum(rng.normal(0.3, 0.2, PAPER_BUDGET), 0.78))
        values[3] = 0.9  # a best above 0.8: stalls reheat instead of restarting
    values[5] = None
    values[17] = None
    return [None if v is None else float(v) for v in values]


@pytest.mark.parametrize("kind", ["restarts", "reheats"])
def test_paper_preset_replays_the_reference_loop(kind):
    values = _scenario(kind)
    expected, info = reference_loop(values, source, PAPER_BUDGET)
    got, sampler, study = run_sampler(values, PAPER_BUDGET)
    np.testing.assert_allclose(np.array(got[: len(expected)]), expected, rtol=0, atol=1e-12)
    state = sampler.chain(study)
    if kind == "reheats":
        assert len(expected) == PAPER_BUDGET
        assert info["reheats"] == 3 and info["restarts"] >= 1
        assert state.reheats == 3 and state.restarts == info["restarts"]
        assert state.best_score == 0.9 and state.best_trial == 3
        return
    # The scenario exercises both restarts and the stop that follows them.
    stop = info["stopped_at"]
    assert info["restarts"] == 2 and stop is not None and stop < PAPER_BUDGET - 10
    assert len(expected) == stop + 1
    assert state.restarts == 2 and state.stopped and state.temperature == 0.0
    best = np.array(info["best"])
    assert np.array([state.best[g] for g in NAMES]) == pytest.approx(best, abs=1e-12)
    # After the stop (nothing scores better any more): the best point polished one ratio at a
    # time by at most the minimum step.
    moved = np.abs(np.array(got[stop + 1 :]) - best)
    assert np.all((moved > 1e-12).sum(axis=1) == 1)
    assert moved.max() <= 0.005 + 1e-12


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
