"""The annealing chain's state as strategies see it (no imports of the sampler or the
strategies: both import it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ChainState:
    """A snapshot of the annealing chain after replaying the finished trials.

    Scores are oriented so that higher is better (``-value`` for minimize studies).
    """

    names: tuple[str, ...]
    current: dict[str, Any] | None
    current_score: float | None
    temperature: float
    best: dict[str, Any] | None
    best_score: float | None
    best_trial: int | None
    stall: int
    reheats: int
    restarts: int
    iterations: int
    stopped: bool
    spread: float
    # The latest new best that a move found (not a start or restart evaluation).
    move_best_score: float | None = None
