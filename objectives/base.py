"""The scorer interface shared by every objective.

An objective scores a batch of generated images against their prompts and returns one float per
image; the trial's value is :meth:`Objective.aggregate` of those scores (the mean by default).

Example::

    obj = create_objective("scene")
    scores = obj.score(images, prompts)      # numpy array, one score per image
    value = obj.aggregate(scores)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np


class Objective(ABC):
    """A per-image reward. Subclasses set ``name`` and implement :meth:`score`."""

    name: str = ""
    higher_is_better: bool = True
    per_image: bool = True  # False for set metrics (FID): every image gets the set's value

    @abstractmethod
    def score(self, images: Sequence[Any], prompts: Sequence[str]) -> np.ndarray:
        """One float per image; ``images`` are PIL images or CHW float tensors in [0, 1]."""

    def aggregate(self, scores: Sequence[float] | np.ndarray) -> float:
        """The trial value for a batch of per-image scores (the mean)."""
        scores = np.asarray(scores, dtype=np.float64)
        if scores.size == 0:
            raise ValueError(f"objective {self.name!r}: cannot aggregate an empty batch")
        return float(scores.mean())

    def parts(self, images: Sequence[Any], prompts: Sequence[str]):
        """Optional per-image breakdown (a pandas DataFrame), or None."""
        return None

    @staticmethod
    def _check_batch(images: Sequence[Any], prompts: Sequence[str]) -> None:
        if len(images) != len(prompts):
            raise ValueError(
                f"got {len(images)} images but {len(prompts)} prompts: pass one prompt per image"
            )
