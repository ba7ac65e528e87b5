"""Simulated annealing as a stateless Optuna sampler."""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from crdiff_search.errors import UsageError
from crdiff_search.samplers._space import CoordinateSpace, project
from crdiff_search.samplers._state import ChainState
from crdiff_search.samplers._strategies import KINDS as STRATEGY_KINDS
from crdiff_search.samplers._strategies import (
    Acceptance,
    AllCoordinates,
    Cooling,
    GeometricCooling,
    Metropolis,
    Neighbor,
    RangeFractionStep,
    Reheat,
    ReheatOrRestart,
    Restart,
    SomeCoordinates,
    StallRule,
    StartAtCenter,
    StartPoint,
    StepSchedule,
    Stop,
)

# Defaults chosen with benchmarks/samplers.py (see the README section "Samplers").
DEFAULT_INITIAL_TEMPERATURE = 0.5  # in units of the spread of the scores (relative Metropolis)
DEFAULT_COOLING = GeometricCooling(0.97)
DEFAULT_NEIGHBOR = SomeCoordinates(0.5)
DEFAULT_STEP = RangeFractionStep(initial=0.4, minimum=0.02)
DEFAULT_ACCEPTANCE = Metropolis(relative=True)
DEFAULT_START = StartAtCenter()
DEFAULT_PATIENCE = 12
DEFAULT_ON_STALL = ReheatOrRestart(reheat_above=None, max_restarts=None)
DEFAULT_RESTART_NEIGHBOR = AllCoordinates()

# How many times a proposal is redrawn when it collides with the current point or a trial that
# already ran or is running.
MAX_REDRAWS = 32

_FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)


@dataclass(frozen=True)
class SeededSource:
    """The default random source: an independent generator per (seed, trial number, purpose).

    Keying the draws by trial number (not by call order) is what makes the sampler stateless:
    the proposal for trial n depends only on the seed, n and the finished trials.
    """

    seed: int

    def __call__(self, number: int, purpose: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, number, zlib.crc32(purpose.encode())])


@dataclass
class _Chain:
    current: np.ndarray
    temperature: float
    current_score: float | None = None
    needs_evaluation: bool = True
    best: np.ndarray | None = None
    best_score: float | None = None
    best_trial: int | None = None
    stall: int = 0
    reheats: int = 0
    restarts: int = 0
    iterations: int = 0
    stopped: bool = False
    # Running count, mean and sum of squared deviations of the valid scores (Welford).
    n_scores: int = 0
    mean_score: float = 0.0
    m2_score: float = 0.0

    def add_score(self, score: float) -> None:
        self.n_scores += 1
        d = score - self.mean_score
        self.mean_score += d / self.n_scores
        self.m2_score += d * (score - self.mean_score)

    @property
    def spread(self) -> float:
        return math.sqrt(max(self.m2_score, 0.0) / self.n_scores) if self.n_scores > 1 else 0.0


class SimulatedAnnealingSampler(BaseSampler):
    """Simulated annealing over per-group ratios, safe under concurrency and restarts.

    The sampler keeps no state between calls: on every call the annealing chain (current
    point, temperature, best, patience counter, reheats, restarts) is rebuilt by replaying the
    study's finished trials in trial-number order, with random draws keyed by (seed, trial
    number, purpose). The same seed and history therefore give the same proposals, and the
    sampler survives pickling, driver restarts and storages shared by several processes.

    One replay step per finished trial (an *iteration*): a valid result is accepted as the new
    current point by the ``acceptance`` rule (the first valid result is always accepted),
    the best and the stall counter are updated, the temperature cools, and after ``patience``
    iterations without a new best ``on_stall`` decides to reheat, restart from a mutation of
    the best point (proposed as the next trial, accepted unconditionally) or stop (later
    proposals then polish the best point greedily at the minimum step).

    Failed, pruned and NaN/inf trials never become current nor best. With ``failure_score=None``
    they are skipped; with a number they count as a rejected iteration (cooling and stall).

    Concurrency: one chain, several neighbours. When k trials are pending, each new proposal is
    a neighbour of the current state drawn with its own trial number's generator and redrawn
    (up to ``MAX_REDRAWS`` times) while it equals the current point or any trial already
    evaluated or running (evaluations are deterministic, a repeat would waste one); with
    ``avoid_repeats=False`` only pending trials, the current point and the previous trial. One chain rather than k chains because budgets are small (30-120
    evaluations): k chains would each get a k-th of the budget and never cool; several
    neighbours of one state explore it in parallel and the chain keeps the budget's depth.
    Results that arrive late are replayed at their trial-number position.

    Parameters: floats move on their own scale (log scale if ``log=True``) and are snapped to
    ``step``; ints move like floats and are rounded; a categorical coordinate, when moved,
    switches to another choice uniformly (``step`` is then a switching probability for moves
    that touch every coordinate). Parameters outside the chain's space (conditional ones, or a
    distribution that changed) are sampled independently: the start value the first time the
    name appears, uniformly at random afterwards. Single-objective studies only.

    Example:
        >>> import optuna
        >>> sampler = SimulatedAnnealingSampler(seed=0)
        >>> study = optuna.create_study(direction="maximize", sampler=sampler)
        >>> study.optimize(lambda t: -(t.suggest_float("down", 0.0, 0.8) - 0.3) ** 2, n_trials=20)
        >>> len(study.trials)
        20

    Args:
        seed: seed of the random draws (None: a random seed, fixed at construction).
        initial_temperature: T0, in the acceptance rule's units.
        cooling: ``(T) -> T`` after every iteration.
        neighbor: ``(coords, space, half_widths, rng) -> coords``.
        step: ``(T / T0, width) -> half_width`` of a move on one coordinate.
        acceptance: ``(delta, T, spread, u) -> bool``.
        start: ``(name, distribution) -> value`` of the start point.
        patience: iterations without a new best before ``on_stall`` is asked.
        on_stall: ``(ChainState) -> Reheat | Restart | Stop``.
        restart_neighbor: the mutation used for restarts.
        failure_score: None, or a score that makes failed trials count as rejected iterations.
        random_source: ``(trial_number, purpose) -> numpy.random.Generator``; replaces the
            seeded default (for tests that control the randomness).
    """

    def __init__(
        self,
        *,
        seed: int | None = None,
        initial_temperature: float = DEFAULT_INITIAL_TEMPERATURE,
        cooling: Cooling = DEFAULT_COOLING,
        neighbor: Neighbor = DEFAULT_NEIGHBOR,
        step: StepSchedule = DEFAULT_STEP,
        acceptance: Acceptance = DEFAULT_ACCEPTANCE,
        start: StartPoint = DEFAULT_START,
        patience: int = DEFAULT_PATIENCE,
        on_stall: StallRule = DEFAULT_ON_STALL,
        restart_neighbor: Neighbor = DEFAULT_RESTART_NEIGHBOR,
        failure_score: float | None = None,
        avoid_repeats: bool = True,
        random_source: Callable[[int, str], np.random.Generator] | None = None,
    ) -> None:
        if not (isinstance(initial_temperature, int | float) and initial_temperature > 0):
            raise UsageError(f"initial_temperature must be > 0, got {initial_temperature!r}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise UsageError(f"patience must be an integer >= 1, got {patience!r}")
        strategies = {
            "cooling": cooling,
            "neighbor": neighbor,
            "step": step,
            "acceptance": acceptance,
            "start": start,
            "on_stall": on_stall,
            "restart_neighbor": restart_neighbor,
        }
        for name, value in strategies.items():
            kind = STRATEGY_KINDS[name]
            if not isinstance(value, kind):
                raise UsageError(
                    f"{name} must be a {kind.__name__} (crdiff_search.samplers.{kind.__name__}: "
                    f"subclass it and implement __call__), got {value!r}"
                )
        if failure_score is not None and not math.isfinite(failure_score):
            raise UsageError(
                f"failure_score must be a finite number or None, got {failure_score!r}"
            )
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % (2**32))
        elif isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise UsageError(f"seed must be a non-negative integer or None, got {seed!r}")
        self._seed = seed
        self._t0 = float(initial_temperature)
        self._cooling = cooling
        self._neighbor = neighbor
        self._step = step
        self._acceptance = acceptance
        self._start = start
        self._patience = patience
        self._on_stall = on_stall
        self._restart_neighbor = restart_neighbor
        if not isinstance(avoid_repeats, bool):
            raise UsageError(f"avoid_repeats must be true or false, got {avoid_repeats!r}")
        self._failure_score = failure_score
        self._avoid_repeats = avoid_repeats
        self._source = random_source if random_source is not None else SeededSource(seed)
        # Memo of the acceptance draw per trial number: a pure function of (source, number),
        # cached only because building a generator costs more than the rest of a replay step.
        self._accept_draws: dict[int, float] = {}

    def reseed_rng(self) -> None:
        # Draws are keyed by trial number, so workers sharing this seed already propose
        # different points; reseeding would only break reproducibility.
        pass

    # --- Optuna interface ------------------------------------------------------------------

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        self._raise_error_if_multi_objective(study)
        return _chain_space(study.get_trials(deepcopy=False), trial.number)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        self._raise_error_if_multi_objective(study)
        if not search_space:
            return {}
        space = CoordinateSpace.from_mapping(search_space)
        members = [t for t in study.get_trials(deepcopy=False) if space.contains(t.params)]
        chain = self._replay(study, space, members)
        others = [t for t in members if t.number != trial.number]
        pending = [t.params for t in others if t.state == TrialState.RUNNING]
        current = space.to_params(chain.current)
        # Evaluations are deterministic (same prompts, same seeds), so a point already tried
        # or in flight would only repeat a result: by default it is redrawn (trial 0 included;
        # a restart point that lands on one is replaced by one of its neighbours).
        taken = [t.params for t in others if t.state != TrialState.WAITING]
        clash = taken if self._avoid_repeats else pending
        if chain.needs_evaluation and not any(space.same_point(p, current) for p in clash):
            return current
        if self._avoid_repeats:
            avoid = [current, *taken]
        else:  # the reference loop: only pending trials, the current point, the last trial
            avoid = [*pending, current]
            avoid += [t.params for t in others if t.number == trial.number - 1]
        return self._neighbor_of(space, chain, trial.number, avoid)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        self._raise_error_if_multi_objective(study)
        trials = study.get_trials(deepcopy=False)
        if not any(param_name in t.params for t in trials if t.number != trial.number):
            return self._start(param_name, param_distribution)
        space = CoordinateSpace((param_name,), (param_distribution,))
        lo, hi = space.bounds(0)
        rng = self._source(trial.number, f"independent:{param_name}")
        return project(param_distribution, float(rng.uniform(lo, hi)), lo, hi)

    # --- the chain -------------------------------------------------------------------------

    def chain(self, study: Study) -> ChainState:
        """The chain rebuilt from the study's finished trials (for reports and stop rules)."""
        trials = study.get_trials(deepcopy=False)
        space = CoordinateSpace.from_mapping(_chain_space(trials, None))
        c = self._replay(study, space, [t for t in trials if space.contains(t.params)])
        return ChainState(
            names=space.names,
            current=space.to_params(c.current) if space.dim else None,
            current_score=c.current_score,
            temperature=c.temperature,
            best=space.to_params(c.best) if c.best is not None else None,
            best_score=c.best_score,
            best_trial=c.best_trial,
            stall=c.stall,
            reheats=c.reheats,
            restarts=c.restarts,
            iterations=c.iterations,
            stopped=c.stopped,
            spread=c.spread,
        )

    def _replay(self, study: Study, space: CoordinateSpace, trials: Sequence[FrozenTrial]):
        sign = -1.0 if study.direction == StudyDirection.MINIMIZE else 1.0
        start = {
            n: self._start(n, d) for n, d in zip(space.names, space.distributions, strict=True)
        }
        chain = _Chain(current=space.to_coords(start), temperature=self._t0)
        # ``trials`` all cover ``space`` (callers filter them once).
        finished = sorted((t for t in trials if t.state in _FINISHED), key=lambda t: t.number)
        for t in finished:
            if chain.needs_evaluation and space.same_point(
                t.params, space.to_params(chain.current)
            ):
                chain.needs_evaluation = False
            value = t.value if t.state == TrialState.COMPLETE else None
            if value is None or not math.isfinite(value):
                if self._failure_score is None:
                    continue
                chain.stall += 1
            else:
                score = sign * float(value)
                chain.add_score(score)
                accept = chain.current_score is None or self._acceptance(
                    score - chain.current_score,
                    chain.temperature,
                    chain.spread,
                    self._acceptance_draw(t.number),
                )
                if accept:
                    chain.current = space.to_coords(t.params)
                    chain.current_score = score
                    chain.needs_evaluation = False
                if chain.best_score is None or score > chain.best_score:
                    chain.best, chain.best_score, chain.best_trial = (
                        space.to_coords(t.params),
                        score,
                        t.number,
                    )
                    chain.stall = 0
                else:
                    chain.stall += 1
            chain.iterations += 1
            if chain.stopped:
                continue
            chain.temperature = self._cooling(chain.temperature)
            if chain.stall >= self._patience and chain.best is not None:
                self._escape(space, chain, t.number)
        return chain

    def _escape(self, space: CoordinateSpace, chain: _Chain, number: int) -> None:
        snapshot = ChainState(
            names=space.names,
            current=space.to_params(chain.current),
            current_score=chain.current_score,
            temperature=chain.temperature,
            best=space.to_params(chain.best),
            best_score=chain.best_score,
            best_trial=chain.best_trial,
            stall=chain.stall,
            reheats=chain.reheats,
            restarts=chain.restarts,
            iterations=chain.iterations,
            stopped=False,
            spread=chain.spread,
        )
        decision = self._on_stall(snapshot)
        chain.stall = 0
        if isinstance(decision, Reheat):
            chain.temperature *= decision.factor
            chain.reheats += 1
        elif isinstance(decision, Restart):
            half = self._half_widths(space, decision.temperature_ratio)
            rng = self._source(number, "restart")
            moved = self._restart_neighbor(chain.best, space, half, rng)
            chain.current = space.to_coords(space.to_params(moved))
            chain.current_score = None
            chain.needs_evaluation = True
            chain.temperature = self._t0
            chain.restarts += 1
        elif isinstance(decision, Stop):
            chain.stopped = True
            chain.temperature = 0.0
            chain.current, chain.current_score = chain.best, chain.best_score
            chain.needs_evaluation = False
        else:
            raise TypeError(f"on_stall must return Reheat, Restart or Stop, got {decision!r}")

    def _acceptance_draw(self, number: int) -> float:
        u = self._accept_draws.get(number)
        if u is None:
            u = self._accept_draws[number] = float(self._source(number, "accept").random())
        return u

    def _half_widths(self, space: CoordinateSpace, ratio: float) -> np.ndarray:
        return np.array([self._step(ratio, space.width(k)) for k in range(space.dim)])

    def _neighbor_of(
        self, space: CoordinateSpace, chain: _Chain, number: int, avoid: list[dict[str, Any]]
    ) -> dict[str, Any]:
        half = self._half_widths(space, chain.temperature / self._t0)
        rng = self._source(number, "move")
        for _ in range(MAX_REDRAWS):
            params = space.to_params(self._neighbor(chain.current, space, half, rng))
            if not any(space.same_point(params, a) for a in avoid):
                break
        return params


def _chain_space(trials: Sequence[FrozenTrial], exclude: int | None) -> dict[str, BaseDistribution]:
    """The chain's space: parameters common to all complete trials (all trials with parameters
    while none is complete), with one distribution each."""
    basis = [t for t in trials if t.state == TrialState.COMPLETE and t.number != exclude]
    if not basis:
        basis = [t for t in trials if t.number != exclude and t.distributions]
    if not basis:
        return {}
    space = dict(basis[0].distributions)
    for t in basis[1:]:
        space = {n: d for n, d in space.items() if t.distributions.get(n) == d}
    return space
