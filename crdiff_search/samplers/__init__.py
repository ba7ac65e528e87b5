"""Optuna samplers that propose per-group pruning ratios.

The search space is one float per group, named by the group (``{"down": FloatDistribution(0.1,
0.8), ...}``). :func:`create_sampler` maps the names of :data:`SAMPLER_NAMES` to samplers:
``anneal`` (our tuned :class:`SimulatedAnnealingSampler`), ``anneal-paper`` (the reference
constants, :func:`paper_sampler`), ``tpe``, ``random``, ``cmaes`` (Optuna's) and ``uniform``
(one ratio shared by all groups, :class:`UniformRatioSampler`).
"""

from crdiff_search.samplers._anneal import ChainState, SeededSource, SimulatedAnnealingSampler
from crdiff_search.samplers._paper import (
    PAPER_BUDGET,
    PAPER_MAX_EVALUATIONS,
    PAPER_OPTIONS,
    paper_sampler,
    paper_search_space,
)
from crdiff_search.samplers._registry import (
    SAMPLER_NAMES,
    SAMPLERS,
    create_sampler,
    sampler_options,
)
from crdiff_search.samplers._strategies import (
    AbsoluteStep,
    Acceptance,
    AllCoordinates,
    Cooling,
    GeometricCooling,
    Metropolis,
    Neighbor,
    OneCoordinate,
    RangeFractionStep,
    Reheat,
    ReheatOrRestart,
    Restart,
    SomeCoordinates,
    StallRule,
    StartAt,
    StartAtCenter,
    StartPoint,
    StepSchedule,
    Stop,
)
from crdiff_search.samplers._uniform import UniformRatioSampler

__all__ = [
    "SAMPLERS",
    "PAPER_BUDGET",
    "PAPER_MAX_EVALUATIONS",
    "PAPER_OPTIONS",
    "SAMPLER_NAMES",
    "AbsoluteStep",
    "Acceptance",
    "Cooling",
    "Neighbor",
    "StallRule",
    "StartPoint",
    "StepSchedule",
    "AllCoordinates",
    "ChainState",
    "GeometricCooling",
    "Metropolis",
    "OneCoordinate",
    "RangeFractionStep",
    "Reheat",
    "ReheatOrRestart",
    "Restart",
    "SeededSource",
    "SimulatedAnnealingSampler",
    "SomeCoordinates",
    "StartAt",
    "StartAtCenter",
    "Stop",
    "UniformRatioSampler",
    "create_sampler",
    "paper_sampler",
    "paper_search_space",
    "sampler_options",
]
