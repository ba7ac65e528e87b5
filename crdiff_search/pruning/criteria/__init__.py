"""Pruning criteria: which elements of a group go. One module per criterion.

>>> create_criterion("magnitude").per_tensor
False
"""

from __future__ import annotations

import inspect

from crdiff_search.names import AUTO_CRITERION
from crdiff_search.pruning.criteria.base import Criterion
from crdiff_search.pruning.criteria.magnitude import Magnitude
from crdiff_search.pruning.criteria.magnitude_tensor import MagnitudeTensor
from crdiff_search.pruning.criteria.random_subset import RandomCriterion
from crdiff_search.registries import CRITERIA

CRITERION_NAMES = CRITERIA  # a live, sorted sequence of the registered names


def resolve_criterion(name: str, granularity: str, model_class: str) -> str:
    """``"auto"`` made concrete for a partition (its granularity and denoiser class):
    ``magnitude-tensor`` (a threshold per tensor) for a transformer's ``paper`` partition, as
    the reference's transformer path prunes; ``magnitude`` (one threshold per group) otherwise.
    Other names pass through.

    >>> resolve_criterion("auto", "paper", "DiTTransformer2DModel")
    'magnitude-tensor'
    """
    if name != AUTO_CRITERION:
        return name
    from crdiff_search.names import TRANSFORMER_CLASSES

    paper_transformer = granularity == "paper" and model_class in TRANSFORMER_CLASSES
    return "magnitude-tensor" if paper_transformer else "magnitude"


def create_criterion(name: str | Criterion, *, seed: int = 0) -> Criterion:
    """A criterion by name (``magnitude``, ``magnitude-tensor``, ``random``, or a plug-in's),
    or pass one through. ``seed`` goes to criteria that take one."""
    if isinstance(name, Criterion):
        return name
    factory = CRITERIA.get(name)  # UsageError listing the valid names
    try:
        takes_seed = "seed" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        takes_seed = False
    return factory(seed=seed) if takes_seed else factory()


__all__ = [
    "CRITERION_NAMES",
    "Criterion",
    "Magnitude",
    "MagnitudeTensor",
    "RandomCriterion",
    "create_criterion",
    "resolve_criterion",
]
