"""Pruning criteria: which elements of a group go. One module per criterion.

>>> create_criterion("magnitude").per_tensor
False
"""

from __future__ import annotations

from collections.abc import Callable

from crdiff_search.errors import UsageError
from crdiff_search.pruning.criteria.base import Criterion
from crdiff_search.pruning.criteria.magnitude import Magnitude
from crdiff_search.pruning.criteria.magnitude_tensor import MagnitudeTensor
from crdiff_search.pruning.criteria.random_subset import RandomCriterion

_FACTORIES: dict[str, Callable[..., Criterion]] = {
    "magnitude": lambda seed=0: Magnitude(),
    "magnitude-tensor": lambda seed=0: MagnitudeTensor(),
    "random": lambda seed=0: RandomCriterion(seed=seed),
}
CRITERION_NAMES = tuple(_FACTORIES)


def create_criterion(name: str | Criterion, *, seed: int = 0) -> Criterion:
    """A criterion by name (``magnitude``, ``magnitude-tensor``, ``random``), or pass one through."""
    if isinstance(name, Criterion):
        return name
    try:
        factory = _FACTORIES[name]
    except (KeyError, TypeError):
        raise UsageError(
            f"unknown pruning criterion {name!r}; valid: {', '.join(CRITERION_NAMES)}"
        ) from None
    return factory(seed=seed)


__all__ = [
    "CRITERION_NAMES",
    "Criterion",
    "Magnitude",
    "MagnitudeTensor",
    "RandomCriterion",
    "create_criterion",
]
