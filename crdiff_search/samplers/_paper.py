"""The CR-Diff reference annealing, as a preset of :class:`SimulatedAnnealingSampler`.

The reference search (Wang, Ren, Zhu, 2026; its ``BWP_strategy.py``), read rule by rule and
reproduced exactly (``tests/test_samplers_paper.py`` runs a restatement of the reference loop
with the same random draws and compares every proposal):

- ratios in [0.1, 0.8], starting at 0.3 each; the start point is evaluated once and is *not*
  an iteration (the first move is drawn at T = T0 = 0.1, in ImageReward units);
- an iteration: a neighbour moves one ratio, picked uniformly, by Uniform(-s, s) with
  s = max(0.005, 0.1 * T / T0), clipped; it is accepted if better, else with probability
  exp(delta / T); then T *= 0.95;
- patience 24 iterations without a new best; then reheat (T *= 1.5, at most 3 times) if a new
  best *found by a move* exceeded 0.8 (a start or restart point above 0.8 does not unlock
  reheats), otherwise restart (at most 2 times): the best point moved in ONE ratio by
  Uniform(-0.3, 0.3) (the neighbour move with its step at 3 * T0), T reset to T0; the restart
  evaluation is not an iteration either (no cooling; the patience counter stays at 0); after
  that the search stops;
- at most 120 iterations (:data:`PAPER_BUDGET`): with the start and up to 2 restart
  evaluations, at most 123 evaluations (:data:`PAPER_MAX_EVALUATIONS`);
- a proposal that rounds (4 decimals) to a point already scored (a move clipped back onto the
  current point, typically) is answered from that score: an iteration that costs no trial;
- a failed evaluation scores -2.0 and is compared like any other score; per image, the
  runner's ``objective.failed_image_score = -2.0`` counts a failed image -2.0 inside the mean
  of a trial, as the reference does per prompt.

The runner ends a study when the chain stops (:meth:`SimulatedAnnealingSampler.finished`) and,
for this preset, reads ``search.trials`` as the iteration budget: a study runs the dense trial
0 (ours: the reference never evaluates the dense model) plus at most ``trials + 3``
evaluations.

Our own readings stay available as options (``paper_sampler(**overrides)`` or
``search.sampler_options``): ``repeats="redraw"`` (never spend an iteration on a point already
scored: every trial is new information), ``count_start=True`` (the start and restart
evaluations are iterations), ``restart_neighbor="all"`` (a restart moves every ratio), and
``on_stall`` with ``unlock="best"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optuna.distributions import FloatDistribution

from crdiff_search.samplers._anneal import SimulatedAnnealingSampler
from crdiff_search.samplers._strategies import (
    AbsoluteStep,
    GeometricCooling,
    Metropolis,
    OneCoordinate,
    ReheatOrRestart,
    StartAt,
)

PAPER_GROUPS = ("down", "mid", "up")
PAPER_RANGE = (0.1, 0.8)
PAPER_START = 0.3
PAPER_INITIAL_TEMPERATURE = 0.1
PAPER_COOLING = 0.95
PAPER_STEP_SCALE = 0.1
PAPER_MIN_STEP = 0.005
PAPER_PATIENCE = 24
PAPER_REHEAT_ABOVE = 0.8
PAPER_REHEAT_FACTOR = 1.5
PAPER_MAX_REHEATS = 3
PAPER_MAX_RESTARTS = 2
PAPER_RESTART_TEMPERATURE_RATIO = 3.0
PAPER_BUDGET = 120  # iterations (the reference's ITERATION_COUNT)
PAPER_FAILURE_SCORE = -2.0
# The start evaluation, every iteration, and one evaluation per restart.
PAPER_MAX_EVALUATIONS = 1 + PAPER_BUDGET + PAPER_MAX_RESTARTS

PAPER_OPTIONS: dict[str, Any] = {
    "initial_temperature": PAPER_INITIAL_TEMPERATURE,
    "cooling": GeometricCooling(PAPER_COOLING),
    "neighbor": OneCoordinate(),
    "step": AbsoluteStep(scale=PAPER_STEP_SCALE, minimum=PAPER_MIN_STEP),
    "acceptance": Metropolis(relative=False),
    "start": StartAt(PAPER_START),
    "patience": PAPER_PATIENCE,
    "on_stall": ReheatOrRestart(
        reheat_above=PAPER_REHEAT_ABOVE,
        reheat_factor=PAPER_REHEAT_FACTOR,
        max_reheats=PAPER_MAX_REHEATS,
        max_restarts=PAPER_MAX_RESTARTS,
        restart_temperature_ratio=PAPER_RESTART_TEMPERATURE_RATIO,
        unlock="move",
    ),
    "restart_neighbor": OneCoordinate(),
    "failure_score": PAPER_FAILURE_SCORE,
    "repeats": "cache",
    "count_start": False,
    "max_iterations": PAPER_BUDGET,
    # The runner's dense trial 0 is no evaluation of the reference's chain, whatever the range.
    "skip_dense": True,
    # One neighbour per iteration, as drawn (no model picks among several).
    "candidates": 1,
}


def paper_sampler(*, seed: int | None = None, **overrides: Any) -> SimulatedAnnealingSampler:
    """The reference annealing (see the module docstring); ``overrides`` replace options.

    Example:
        >>> sampler = paper_sampler(seed=0)
        >>> space = paper_search_space()
        >>> sorted(space), space["mid"].low, space["mid"].high
        (['down', 'mid', 'up'], 0.1, 0.8)
    """
    return SimulatedAnnealingSampler(seed=seed, **{**PAPER_OPTIONS, **overrides})


def paper_search_space(groups: Sequence[str] = PAPER_GROUPS) -> dict[str, FloatDistribution]:
    """One float per group over the reference range [0.1, 0.8]."""
    return {g: FloatDistribution(*PAPER_RANGE) for g in groups}
