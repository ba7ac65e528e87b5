"""Small, picklable strategy objects for :class:`SimulatedAnnealingSampler`.

Each kind of strategy is an abstract base class with one method, ``__call__``, so that a user
can swap one without touching the chain (subclass the kind and implement it):

- neighbour move ``(coords, space, half_widths, rng) -> coords``
- step schedule ``(temperature_ratio, width) -> half_width`` where ``temperature_ratio`` is T/T0
- cooling ``(temperature) -> temperature`` applied after every iteration
- acceptance ``(delta, temperature, spread, u) -> bool`` (``delta`` > 0 is an improvement,
  ``spread`` the standard deviation of the scores seen so far, ``u`` a Uniform(0, 1) draw)
- start ``(name, distribution) -> value``
- stall rule ``(state) -> Reheat | Restart | Stop`` called when ``patience`` iterations passed
  without a new best.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution

from crdiff_search.samplers._space import CoordinateSpace, center, clamp_value
from crdiff_search.samplers._state import ChainState

# --- the kinds -------------------------------------------------------------------------------


class Neighbor(ABC):
    """A move: ``(coords, space, half_widths, rng) -> coords`` (one half-width per
    coordinate; draw only from ``rng``, so proposals stay seed-deterministic)."""

    @abstractmethod
    def __call__(self, coords, space: CoordinateSpace, half_widths, rng) -> np.ndarray: ...


class StepSchedule(ABC):
    """A move's half-width on one coordinate: ``(T / T0, width of its range) -> half_width``."""

    @abstractmethod
    def __call__(self, temperature_ratio: float, width: float) -> float: ...


class Cooling(ABC):
    """``(T) -> T`` after every iteration."""

    @abstractmethod
    def __call__(self, temperature: float) -> float: ...


class Acceptance(ABC):
    """``(delta, T, spread, u) -> bool``: whether the chain moves to a point ``delta`` better
    (negative: worse) than the current one; ``u`` is a Uniform(0, 1) draw."""

    @abstractmethod
    def __call__(self, delta: float, temperature: float, spread: float, u: float) -> bool: ...


class StartPoint(ABC):
    """``(name, distribution) -> value`` of the chain's first point."""

    @abstractmethod
    def __call__(self, name: str, distribution: BaseDistribution) -> Any: ...


class StallRule(ABC):
    """``(ChainState) -> Reheat | Restart | Stop`` when ``patience`` iterations passed without
    a new best."""

    @abstractmethod
    def __call__(self, state: ChainState) -> Reheat | Restart | Stop: ...


# Which kind each of the sampler's strategy arguments must be.
KINDS = {
    "cooling": Cooling,
    "neighbor": Neighbor,
    "step": StepSchedule,
    "acceptance": Acceptance,
    "start": StartPoint,
    "on_stall": StallRule,
    "restart_neighbor": Neighbor,
}


def _perturb(space: CoordinateSpace, k: int, c: float, h: float, rng: np.random.Generator):
    if space.is_categorical(k):
        n = space.n_choices(k)
        if n < 2:
            return c
        j = int(rng.integers(n - 1))
        return float(j + (j >= int(round(c))))
    return c + float(rng.uniform(-h, h))


# --- neighbour moves -------------------------------------------------------------------------


@dataclass(frozen=True)
class OneCoordinate(Neighbor):
    """Move one coordinate, picked uniformly (``rng.integers``), by Uniform(-h, h)
    (``rng.uniform``); a picked categorical coordinate switches to another choice."""

    def __call__(self, coords, space: CoordinateSpace, half_widths, rng) -> np.ndarray:
        out = np.array(coords, dtype=float)
        k = int(rng.integers(space.dim))
        out[k] = _perturb(space, k, out[k], float(half_widths[k]), rng)
        return out


@dataclass(frozen=True)
class AllCoordinates(Neighbor):
    """Move every numeric coordinate by Uniform(-h, h) (scaled by ``scale``); a categorical
    coordinate switches to another choice with probability min(1, h), its step being a
    probability."""

    scale: float = 1.0

    def __call__(self, coords, space: CoordinateSpace, half_widths, rng) -> np.ndarray:
        out = np.array(coords, dtype=float)
        for k in range(space.dim):
            h = float(half_widths[k]) * self.scale
            if space.is_categorical(k):
                if rng.random() < min(1.0, h):
                    out[k] = _perturb(space, k, out[k], h, rng)
            else:
                out[k] = out[k] + float(rng.uniform(-h, h))
        return out


@dataclass(frozen=True)
class SomeCoordinates(Neighbor):
    """Move each coordinate with probability ``fraction`` (at least one always moves), with
    Gaussian steps of standard deviation ``h / 2``: small moves are common, large ones rare.
    A moved categorical coordinate switches to another choice."""

    fraction: float = 0.5

    def __call__(self, coords, space: CoordinateSpace, half_widths, rng) -> np.ndarray:
        out = np.array(coords, dtype=float)
        chosen = rng.random(space.dim) < self.fraction
        chosen[int(rng.integers(space.dim))] = True
        for k in np.flatnonzero(chosen):
            h = float(half_widths[k])
            if space.is_categorical(k):
                out[k] = _perturb(space, k, out[k], h, rng)
            else:
                out[k] = out[k] + float(rng.normal(0.0, 0.5 * h))
        return out


# --- step schedules --------------------------------------------------------------------------


@dataclass(frozen=True)
class AbsoluteStep(StepSchedule):
    """Half-width ``max(minimum, scale * T/T0)`` in the parameter's own units, whatever its
    range (the reference rule; meant for ratio ranges inside [0, 1])."""

    scale: float = 0.1
    minimum: float = 0.005

    def __call__(self, temperature_ratio: float, width: float) -> float:
        return max(self.minimum, self.scale * temperature_ratio)


@dataclass(frozen=True)
class RangeFractionStep(StepSchedule):
    """Half-width ``width * max(minimum, initial * (T/T0) ** power)``: a fraction of each
    parameter's range, shrinking as the chain cools."""

    initial: float = 0.25
    minimum: float = 0.02
    power: float = 1.0

    def __call__(self, temperature_ratio: float, width: float) -> float:
        return width * max(self.minimum, self.initial * temperature_ratio**self.power)


# --- cooling ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeometricCooling(Cooling):
    """T <- factor * T after every iteration."""

    factor: float = 0.95

    def __post_init__(self) -> None:
        if not 0.0 < self.factor <= 1.0:
            raise ValueError(f"cooling factor must be in (0, 1], got {self.factor!r}")

    def __call__(self, temperature: float) -> float:
        return temperature * self.factor


# --- acceptance ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metropolis(Acceptance):
    """Accept an improvement always, a worse point with probability exp(delta / T).

    With ``relative=True`` the temperature is in units of ``spread`` (the standard deviation of
    the scores seen so far), so the same T0 means the same thing for any objective scale;
    until two distinct scores exist only improvements are accepted.
    """

    relative: bool = False

    def __call__(self, delta: float, temperature: float, spread: float, u: float) -> bool:
        if delta >= 0.0:
            return True
        scale = temperature * (spread if self.relative else 1.0)
        if not scale > 0.0:
            return False
        return u < math.exp(delta / scale)


# --- start points ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StartAtCenter(StartPoint):
    """Start in the middle of every range (its own scale); the first choice of a categorical."""

    def __call__(self, name: str, distribution: BaseDistribution) -> Any:
        return center(distribution)


@dataclass(frozen=True)
class StartAt(StartPoint):
    """Start at a given value for every parameter, or at ``value[name]`` (a mapping; names it
    lacks start at the center). Values are clipped into the range and snapped to its grid."""

    value: float | Mapping[str, Any]

    def __call__(self, name: str, distribution: BaseDistribution) -> Any:
        if isinstance(self.value, Mapping):
            if name not in self.value:
                return center(distribution)
            return clamp_value(distribution, self.value[name])
        return clamp_value(distribution, self.value)


# --- stall rules -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reheat:
    """Multiply the temperature by ``factor`` and keep going from the current point."""

    factor: float


@dataclass(frozen=True)
class Restart:
    """Jump to a large mutation of the best point (the sampler's ``restart_neighbor``, with the
    step the schedule gives at T = ``temperature_ratio`` * T0); then T is reset to T0."""

    temperature_ratio: float


@dataclass(frozen=True)
class Stop:
    """End the annealing: later proposals polish the best point greedily at the final step."""


@dataclass(frozen=True)
class ReheatOrRestart(StallRule):
    """On a stall: reheat (T *= ``reheat_factor``) if the best score exceeds ``reheat_above``
    and reheats remain; otherwise restart from a mutation of the best point if restarts remain;
    otherwise stop. ``reheat_above=None`` never reheats; ``max_restarts=None`` never stops.

    ``unlock`` says which best counts: ``"best"`` the best score of the chain, ``"move"`` the
    latest new best that a move found (the reference: a start point or a restart point that
    scores above the threshold does not unlock reheats; a move that beats everything does).
    """

    reheat_above: float | None = None
    reheat_factor: float = 1.5
    max_reheats: int = 3
    max_restarts: int | None = None
    restart_temperature_ratio: float = 2.0
    unlock: str = "best"

    def __post_init__(self) -> None:
        if self.unlock not in ("best", "move"):
            raise ValueError(f"unlock must be 'best' or 'move', got {self.unlock!r}")

    def __call__(self, state: ChainState) -> Reheat | Restart | Stop:
        best = state.best_score if self.unlock == "best" else state.move_best_score
        if (
            self.reheat_above is not None
            and best is not None
            and best > self.reheat_above
            and state.reheats < self.max_reheats
        ):
            return Reheat(self.reheat_factor)
        if self.max_restarts is None or state.restarts < self.max_restarts:
            return Restart(self.restart_temperature_ratio)
        return Stop()
