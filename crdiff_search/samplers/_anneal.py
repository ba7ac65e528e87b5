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
# Neighbours drawn per proposal, ranked by a local model of the history (benchmarks/samplers.py,
# tuned on seeds 100-109: 32 lowered the median regret at 4 in flight from 0.038/0.029/0.022 to
# 0.031/0.019/0.014 at 30/60/120 trials, and at 1 in flight to 0.022/0.013/0.011).
DEFAULT_CANDIDATES = 32
DEFAULT_BANDWIDTH = 0.3  # of each range: how far from the current point the model looks

# How many times a proposal is redrawn when it collides with the current point or a trial that
# already ran or is running.
MAX_REDRAWS = 32
# How repeated points are handled: redrawn, or answered from the scores seen (the reference).
REPEATS = ("redraw", "cache")
# A bound on the iterations answered from the cache before one proposal (a chain that only
# meets scored points would otherwise never propose).
MAX_CACHED_ITERATIONS = 10_000

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
    # The score of the latest new best that a move found (not a start or restart evaluation).
    move_best_score: float | None = None
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

    Failed, pruned and NaN/inf trials: with ``failure_score=None`` they are skipped; with a
    number they are scored that number, like any result (an iteration; such a point can even
    become current, as in the reference loop).

    The start point (and each restart point) is one evaluation; with ``count_start=True`` it is
    an iteration like the others (cooling, patience), with ``False`` it is not (the reference:
    its first move is drawn at T0). ``max_iterations`` stops the chain after that many
    iterations; :meth:`finished` tells a runner that the chain has stopped.

    Concurrency: one chain, several neighbours. When k trials are pending, each new proposal is
    a neighbour of the current state drawn with its own trial number's generator. Repeats
    (``repeats``): with ``"redraw"`` a proposal is redrawn (up to ``MAX_REDRAWS`` times) while
    it equals the current point or any trial already evaluated or running (evaluations are
    deterministic, a repeat would waste one); with ``"cache"`` (the reference loop) a proposal
    that rounds, at 4 decimals, to a point already scored is answered from that score: an
    iteration that costs no trial, after which the next proposal is drawn from the same
    generator; only points in flight are redrawn. One chain rather than k chains because budgets are small (30-120
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
        failure_score: None (failed trials are skipped), or the score a failed trial gets.
        repeats: ``"redraw"`` or ``"cache"`` (see above).
        count_start: whether evaluating a start or restart point is an iteration.
        max_iterations: None, or the iterations after which the chain stops.
        skip_dense: leave the dense trial (every parameter 0) out of the chain even when the
            range includes 0 (the reference never evaluates the dense model).
        candidates: neighbours drawn per proposal; with more than 1, a local model of the
            history picks one (see :meth:`_model_neighbor`); 1 is the plain chain.
        bandwidth: the model's reach around the current point, as a fraction of each range.
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
        repeats: str = "redraw",
        count_start: bool = True,
        max_iterations: int | None = None,
        skip_dense: bool = False,
        candidates: int = DEFAULT_CANDIDATES,
        bandwidth: float = DEFAULT_BANDWIDTH,
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
        if repeats not in REPEATS:
            raise UsageError(f"repeats must be one of {', '.join(REPEATS)}, got {repeats!r}")
        if not isinstance(count_start, bool):
            raise UsageError(f"count_start must be true or false, got {count_start!r}")
        if max_iterations is not None and (
            isinstance(max_iterations, bool)
            or not isinstance(max_iterations, int)
            or max_iterations < 1
        ):
            raise UsageError(
                f"max_iterations must be an integer >= 1 or None, got {max_iterations!r}"
            )
        self._failure_score = failure_score
        self._repeats = repeats
        self._count_start = count_start
        self._max_iterations = max_iterations
        if not isinstance(skip_dense, bool):
            raise UsageError(f"skip_dense must be true or false, got {skip_dense!r}")
        self._skip_dense = skip_dense
        if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
            raise UsageError(f"candidates must be an integer >= 1, got {candidates!r}")
        if not (isinstance(bandwidth, int | float) and bandwidth > 0):
            raise UsageError(f"bandwidth must be > 0, got {bandwidth!r}")
        self._candidates = candidates
        self._bandwidth = float(bandwidth)
        self._min_history = 2
        self._source = random_source if random_source is not None else SeededSource(seed)
        # Memo of the acceptance draw per trial number: a pure function of (source, number),
        # cached only because building a generator costs more than the rest of a replay step.
        self._accept_draws: dict[tuple[int, str], float] = {}

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
        members = self._members(study.get_trials(deepcopy=False), space)
        chain, cache = self._replay(study, space, members)
        others = [t for t in members if t.number != trial.number]
        pending = [t.params for t in others if t.state == TrialState.RUNNING]
        if cache is not None and not chain.stopped:
            # The reference loop: a point already scored is answered from its score (no
            # trial); only points still in flight are redrawn.
            return self._propose_cached(space, chain, trial.number, cache, pending)
        current = space.to_params(chain.current)
        # Evaluations are deterministic (same prompts, same seeds), so a point already tried
        # or in flight would only repeat a result: it is redrawn (trial 0 included; a restart
        # point that lands on one is replaced by one of its neighbours).
        taken = [t.params for t in others if t.state != TrialState.WAITING]
        if chain.needs_evaluation and not any(space.same_point(p, current) for p in taken):
            return current
        if self._candidates > 1:
            return self._model_neighbor(study, space, chain, trial.number, members, pending, taken)
        return self._neighbor_of(space, chain, trial.number, [current, *taken])

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
        c, _ = self._replay(study, space, self._members(trials, space))
        return self._snapshot(space, c)

    def _members(self, trials: Sequence[FrozenTrial], space: CoordinateSpace) -> list:
        """The trials of the chain: those covering its space (the dense point, every ratio 0,
        left out with ``skip_dense``)."""
        return [
            t
            for t in trials
            if space.contains(t.params)
            and not (self._skip_dense and t.params and all(v == 0 for v in t.params.values()))
        ]

    def finished(self, study: Study) -> bool:
        """Whether the chain has stopped (its stall rule said stop, or ``max_iterations``
        are spent): a runner ends the study there, as the reference loop does."""
        return self.chain(study).stopped

    @property
    def max_iterations(self) -> int | None:
        return self._max_iterations

    @property
    def max_evaluations(self) -> int | None:
        """The most trials the chain can ask for before it stops: ``max_iterations``, plus
        the start and each restart evaluation when those are not iterations
        (``count_start=False``); None when the chain has no iteration budget or may restart
        without end."""
        if self._max_iterations is None:
            return None
        if self._count_start:
            return self._max_iterations
        restarts = getattr(self._on_stall, "max_restarts", None)
        if restarts is None:
            return None
        return 1 + self._max_iterations + int(restarts)

    def _snapshot(self, space: CoordinateSpace, c: _Chain) -> ChainState:
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
            move_best_score=c.move_best_score,
        )

    def _replay(self, study: Study, space: CoordinateSpace, trials: Sequence[FrozenTrial]):
        """The chain after the finished trials, and (``repeats="cache"``) the score of every
        point scored so far, by its rounded key."""
        sign = -1.0 if study.direction == StudyDirection.MINIMIZE else 1.0
        start = {
            n: self._start(n, d) for n, d in zip(space.names, space.distributions, strict=True)
        }
        chain = _Chain(current=space.to_coords(start), temperature=self._t0)
        cache: dict[tuple, float] | None = {} if self._repeats == "cache" else None
        # ``trials`` all cover ``space`` (callers filter them once).
        finished = sorted((t for t in trials if t.state in _FINISHED), key=lambda t: t.number)
        for t in finished:
            if cache is not None and not chain.stopped:
                # The iterations answered from the cache before this trial was proposed.
                self._propose_cached(space, chain, t.number, cache, [])
            value = t.value if t.state == TrialState.COMPLETE else None
            valid = value is not None and math.isfinite(value)
            if not valid and self._failure_score is None:
                if chain.needs_evaluation and space.same_point(
                    t.params, space.to_params(chain.current)
                ):
                    chain.needs_evaluation = False
                continue
            score = sign * float(value) if valid else float(self._failure_score)
            self._observe(space, chain, t.params, score, t.number, "", valid=valid)
            if cache is not None and valid:
                cache[_cache_key(space, t.params)] = score
        return chain, cache

    def _observe(
        self,
        space: CoordinateSpace,
        chain: _Chain,
        params: dict[str, Any],
        score: float,
        number: int,
        tag: str,
        *,
        valid: bool = True,
    ) -> None:
        """One evaluated point (a trial, or a repeat answered from the cache): acceptance,
        best, and, when it is an iteration, cooling, patience and the stall rule."""
        jump = chain.needs_evaluation and space.same_point(params, space.to_params(chain.current))
        if jump:
            chain.needs_evaluation = False
        if valid:
            chain.add_score(score)
        accept = chain.current_score is None or self._acceptance(
            score - chain.current_score,
            chain.temperature,
            chain.spread,
            self._acceptance_draw(number, tag),
        )
        if accept:
            chain.current = space.to_coords(params)
            chain.current_score = score
            chain.needs_evaluation = False
        counted = self._count_start or not jump
        if chain.best_score is None or score > chain.best_score:
            chain.best, chain.best_score, chain.best_trial = (
                space.to_coords(params),
                score,
                number,
            )
            chain.stall = 0
            if not jump:
                chain.move_best_score = score
        elif counted:
            chain.stall += 1
        if counted:
            chain.iterations += 1
            if chain.stopped:
                return
            chain.temperature = self._cooling(chain.temperature)
            if chain.stall >= self._patience and chain.best is not None:
                self._escape(space, chain, number, tag)
        if (
            not chain.stopped
            and self._max_iterations is not None
            and chain.iterations >= self._max_iterations
            and not chain.needs_evaluation
        ):
            self._stop(chain)

    def _propose_cached(
        self,
        space: CoordinateSpace,
        chain: _Chain,
        number: int,
        cache: dict[tuple, float],
        pending: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """The next point to evaluate, as the reference loop finds it: proposals whose rounded
        key was scored before are answered from that score (each an iteration, drawn from the
        same generator) until one is new; only points in flight are redrawn."""
        rng = self._source(number, "move")
        for j in range(MAX_CACHED_ITERATIONS):
            tag = f":cached{j}"
            if chain.stopped:
                break
            params = space.to_params(chain.current)
            in_flight = any(space.same_point(params, p) for p in pending)
            if not chain.needs_evaluation or in_flight:
                half = self._half_widths(space, chain.temperature / self._t0)
                for _ in range(MAX_REDRAWS):
                    params = space.to_params(self._neighbor(chain.current, space, half, rng))
                    if not any(space.same_point(params, p) for p in pending):
                        break
            key = _cache_key(space, params)
            if key not in cache:
                return params
            self._observe(space, chain, params, cache[key], number, tag)
        # Stopped (or a chain that only meets scored points): polish the best point.
        return self._neighbor_of(space, chain, number, [space.to_params(chain.current), *pending])

    def _escape(self, space: CoordinateSpace, chain: _Chain, number: int, tag: str = "") -> None:
        decision = self._on_stall(self._snapshot(space, chain))
        chain.stall = 0
        if isinstance(decision, Reheat):
            chain.temperature *= decision.factor
            chain.reheats += 1
        elif isinstance(decision, Restart):
            half = self._half_widths(space, decision.temperature_ratio)
            rng = self._source(number, "restart" + tag)
            moved = self._restart_neighbor(chain.best, space, half, rng)
            chain.current = space.to_coords(space.to_params(moved))
            chain.current_score = None
            chain.needs_evaluation = True
            chain.temperature = self._t0
            chain.restarts += 1
        elif isinstance(decision, Stop):
            self._stop(chain)
        else:
            raise TypeError(f"on_stall must return Reheat, Restart or Stop, got {decision!r}")

    @staticmethod
    def _stop(chain: _Chain) -> None:
        chain.stopped = True
        chain.temperature = 0.0
        chain.current, chain.current_score = chain.best, chain.best_score
        chain.needs_evaluation = False

    def _acceptance_draw(self, number: int, tag: str = "") -> float:
        u = self._accept_draws.get((number, tag))
        if u is None:
            u = self._accept_draws[(number, tag)] = float(
                self._source(number, "accept" + tag).random()
            )
        return u

    def _half_widths(self, space: CoordinateSpace, ratio: float) -> np.ndarray:
        return np.array([self._step(ratio, space.width(k)) for k in range(space.dim)])

    def _model_neighbor(self, study, space, chain, number, members, pending, taken):
        """``candidates`` neighbours of the current point, each drawn as usual; the one a local
        model of the history ranks best is proposed (a diagonal quadratic fitted by weighted
        ridge regression to the finished trials, weighted by their distance to the current
        point), less a penalty for lying close to a trial in flight, so that the neighbours
        proposed at once spread out. Until the history can carry the model, the first draw."""
        sign = -1.0 if study.direction == StudyDirection.MINIMIZE else 1.0
        current = space.to_params(chain.current)
        avoid = [current, *taken]
        half = self._half_widths(space, chain.temperature / self._t0)
        rng = self._source(number, "move")
        draws = []
        for _ in range(self._candidates):
            for _ in range(MAX_REDRAWS):
                params = space.to_params(self._neighbor(chain.current, space, half, rng))
                if not any(space.same_point(params, a) for a in avoid):
                    break
            draws.append(params)
        done = [
            t
            for t in members
            if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)
        ]
        if len(done) < self._min_history * space.dim + 2:
            return draws[0]
        lo = np.array([space.bounds(k)[0] for k in range(space.dim)])
        width = np.array([max(space.width(k), 1e-12) for k in range(space.dim)])

        def unit(params):
            return (space.to_coords(params) - lo) / width

        centre = (chain.current - lo) / width
        x = np.array([unit(t.params) for t in done]) - centre
        y = sign * np.array([float(t.value) for t in done])
        w = np.exp(-0.5 * (x**2).sum(axis=1) / self._bandwidth**2)
        features = np.hstack([np.ones((len(x), 1)), x, x**2])
        sw = np.sqrt(w)[:, None]
        gram = (features * sw).T @ (features * sw)
        # Ridge relative to each feature's own scale: shrinks every coefficient alike, by 0.1 %.
        ridge = 1e-3 * np.diag(np.diag(gram) + 1e-12)
        ridge[0, 0] = 0.0
        try:
            coef = np.linalg.solve(gram + ridge, (features * sw).T @ (y * sw[:, 0]))
        except np.linalg.LinAlgError:
            return draws[0]
        cand = np.array([unit(p) for p in draws]) - centre
        predicted = np.hstack([np.ones((len(cand), 1)), cand, cand**2]) @ coef
        if pending:
            spread = max(float(np.mean(half / width)), 1e-6)
            near = np.array([unit(p) for p in pending]) - centre
            d2 = ((cand[:, None, :] - near[None, :, :]) ** 2).sum(axis=2)
            scale = max(float(np.std(y)), 1e-12)
            predicted = predicted - scale * np.exp(-0.5 * d2 / spread**2).max(axis=1)
        return draws[int(np.argmax(predicted))]

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


def _cache_key(space: CoordinateSpace, params: dict[str, Any]) -> tuple:
    """A point's key in the reference's score cache: floats at 4 decimals."""
    return tuple(
        format(params[n], ".4f") if isinstance(params[n], float) else params[n] for n in space.names
    )


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
