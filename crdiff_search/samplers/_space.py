"""Search coordinates for the annealing chain: one float per parameter, in a fixed order.

Numeric parameters move on their natural scale (log scale when ``log=True``); a categorical
parameter is the index of its choice. Projection back to a value honours ``step`` grids and
integer parameters and always returns native Python types.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

# Two values closer than this (relative to the parameter's width) are the same point.
_SAME_POINT_TOLERANCE = 1e-9


@dataclass(frozen=True)
class CoordinateSpace:
    """An ordered view of a search space (names sorted, so that the order never depends on
    the order in which parameters were suggested)."""

    names: tuple[str, ...]
    distributions: tuple[BaseDistribution, ...]

    @classmethod
    def from_mapping(cls, space: Mapping[str, BaseDistribution]) -> CoordinateSpace:
        names = tuple(sorted(space))
        return cls(names, tuple(space[n] for n in names))

    @property
    def dim(self) -> int:
        return len(self.names)

    def is_categorical(self, k: int) -> bool:
        return isinstance(self.distributions[k], CategoricalDistribution)

    def n_choices(self, k: int) -> int:
        dist = self.distributions[k]
        assert isinstance(dist, CategoricalDistribution)
        return len(dist.choices)

    def bounds(self, k: int) -> tuple[float, float]:
        dist = self.distributions[k]
        if isinstance(dist, CategoricalDistribution):
            return 0.0, float(len(dist.choices) - 1)
        if dist.log:
            return math.log(dist.low), math.log(dist.high)
        return float(dist.low), float(dist.high)

    def width(self, k: int) -> float:
        """Width of a numeric coordinate; 1.0 for a categorical one (its steps are probabilities)."""
        if self.is_categorical(k):
            return 1.0
        lo, hi = self.bounds(k)
        return hi - lo

    def to_coords(self, params: Mapping[str, Any]) -> np.ndarray:
        out = np.empty(self.dim)
        for k, (name, dist) in enumerate(zip(self.names, self.distributions, strict=True)):
            value = params[name]
            if isinstance(dist, CategoricalDistribution):
                out[k] = float(dist.to_internal_repr(value))
            elif dist.log:
                out[k] = math.log(value)
            else:
                out[k] = float(value)
        return out

    def to_params(self, coords: np.ndarray) -> dict[str, Any]:
        return {
            name: project(dist, float(c), *self.bounds(k))
            for k, (name, dist, c) in enumerate(
                zip(self.names, self.distributions, coords, strict=True)
            )
        }

    def contains(self, params: Mapping[str, Any]) -> bool:
        """Whether a trial's parameters cover this space (same names; values inside)."""
        for name, dist in zip(self.names, self.distributions, strict=True):
            if name not in params:
                return False
            value = params[name]
            if isinstance(dist, CategoricalDistribution):
                if value not in dist.choices:
                    return False
            elif not (isinstance(value, int | float) and dist.low <= value <= dist.high):
                return False
        return True

    def same_point(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
        for k, (name, dist) in enumerate(zip(self.names, self.distributions, strict=True)):
            if name not in a or name not in b:
                return False
            if isinstance(dist, CategoricalDistribution):
                if dist.to_internal_repr(a[name]) != dist.to_internal_repr(b[name]):
                    return False
            else:
                tol = _SAME_POINT_TOLERANCE * max(self.width(k), 1e-12)
                ca = math.log(a[name]) if dist.log else float(a[name])
                cb = math.log(b[name]) if dist.log else float(b[name])
                if abs(ca - cb) > tol:
                    return False
        return True


def project(dist: BaseDistribution, coord: float, lo: float, hi: float) -> Any:
    """Clip a coordinate into its bounds and turn it into a valid native value of ``dist``."""
    c = min(max(coord, lo), hi)
    if isinstance(dist, CategoricalDistribution):
        return dist.to_external_repr(float(int(round(c))))
    value = math.exp(c) if dist.log else c
    if isinstance(dist, IntDistribution):
        if dist.log:
            return int(min(max(round(value), dist.low), dist.high))
        n = round((value - dist.low) / dist.step)
        return int(min(max(dist.low + n * dist.step, dist.low), dist.high))
    assert isinstance(dist, FloatDistribution)
    if dist.step is not None:
        n = round((value - dist.low) / dist.step)
        value = dist.low + n * dist.step
    return float(min(max(value, dist.low), dist.high))


def center(dist: BaseDistribution) -> Any:
    """The middle of a numeric range (on its own scale); the first choice of a categorical."""
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[0]
    space = CoordinateSpace(("x",), (dist,))
    lo, hi = space.bounds(0)
    return project(dist, 0.5 * (lo + hi), lo, hi)


def clamp_value(dist: BaseDistribution, value: Any) -> Any:
    """A given start value made valid for ``dist`` (clipped, snapped to its grid)."""
    if isinstance(dist, CategoricalDistribution):
        return value if value in dist.choices else dist.choices[0]
    space = CoordinateSpace(("x",), (dist,))
    lo, hi = space.bounds(0)
    v = float(value)
    if dist.log:
        v = math.log(max(v, dist.low))
    return project(dist, v, lo, hi)
