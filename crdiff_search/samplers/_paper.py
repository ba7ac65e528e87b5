"""The CR-Diff reference annealing, as a preset of :class:`SimulatedAnnealingSampler`.

The reference search (Wang, Ren, Zhu, 2026) in numbers: ratios in [0.1, 0.8] starting at
0.3 each; T0 = 0.1 in ImageReward units; T *= 0.95 after every iteration; a neighbour moves
one ratio, picked uniformly, by Uniform(-s, s) with s = max(0.005, 0.1 * T / T0), clipped;
acceptance exp(delta / T); after 24 iterations without a new best, reheat (T *= 1.5, at most
3 times) if the best score exceeds 0.8, otherwise restart (at most 2 times) from a mutation of
the best point with the step taken at 3 * T0 and T reset to T0; then stop; 120 evaluations;
a failed evaluation scores -2.0.

How the preset expresses what a sampler cannot do itself:

- *Stop and budget*: a sampler cannot end a study. The budget is :data:`PAPER_BUDGET` (120
  trials), for the runner to use as the trial count; when the stall rule says stop,
  ``sampler.chain(study).stopped`` becomes true (a runner may end the study there, as the
  reference does) and any further proposals polish the best point greedily (T = 0, minimum
  step) instead of exploring.
- *Failures*: a failed, pruned or NaN trial is an iteration that cools the temperature and
  counts towards the patience, and is rejected. The reference scores it -2.0 and compares it
  like any score; the preset never lets a failure become the current point, which differs only
  when the current score is itself below or near -2.0.
- *Restart mutation*: "a large mutation of the best point, step computed at 3 * T0" is read
  as every ratio moving by Uniform(-s, s) with s = max(0.005, 0.1 * 3) = 0.3, clipped. The
  mutated point is the next trial and becomes current whatever its score.
- *Stall rule*: "reheat if best > 0.8 (3 times), otherwise restart (2 times), then stop" is
  read as: reheat while the best exceeds 0.8 and reheats remain, else restart while restarts
  remain, else stop.
- *Iterations*: every evaluation is one iteration (the start and restart evaluations too):
  the temperature cools and the patience counts after each.
- *No point twice in a row* (the one deliberate deviation): a one-coordinate move clipped at a
  bound can land on the current point or repeat the previous proposal; the reference then
  spends an iteration on a point it has already scored (its score cache answers); the preset
  redraws the move from the same generator instead, so every trial is new information.
- *Score cache*: the reference reuses the score of an already-seen rounded point; here every
  iteration is a trial (caching evaluations is the runner's business).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optuna.distributions import FloatDistribution

from crdiff_search.samplers._anneal import SimulatedAnnealingSampler
from crdiff_search.samplers._strategies import (
    AbsoluteStep,
    AllCoordinates,
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
PAPER_BUDGET = 120
PAPER_FAILURE_SCORE = -2.0

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
    ),
    "restart_neighbor": AllCoordinates(),
    "failure_score": PAPER_FAILURE_SCORE,
    # The reference re-proposes points it already scored (and reads them from its cache).
    "avoid_repeats": False,
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
