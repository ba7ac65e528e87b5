"""The criterion interface: a score per weight; the lowest-scoring fraction of a pool goes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import ClassVar

import torch


class Criterion(ABC):
    """Decides which elements of a group are pruned.

    A criterion scores every element of a dense weight; for a ratio ``r`` over ``N`` scored
    elements, the threshold ``t`` is the ``k = int(N * r)``-th smallest score and elements with a
    score ``<= t`` are set to zero (so ties at ``t`` go together, as in the reference). With
    ``per_tensor = False`` one threshold covers all tensors of a group; with ``True`` each tensor
    has its own.
    """

    name: ClassVar[str]
    per_tensor: ClassVar[bool] = False

    @abstractmethod
    def scores(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        """A tensor shaped like ``weight``; lower means pruned first."""

    def score_dtype(self, dtypes: Iterable[torch.dtype]) -> torch.dtype:
        """Dtype of the scores for a pool whose weights have ``dtypes``."""
        return torch.float32

    def scores_into(self, name: str, weight: torch.Tensor, out: torch.Tensor) -> None:
        """Write the flattened scores of ``weight`` into the 1-D ``out``."""
        out.copy_(self.scores(name, weight).reshape(-1))

    def keep_mask(self, name: str, weight: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
        return self.scores(name, weight) > threshold

    def prune_into(
        self, name: str, weight: torch.Tensor, threshold: torch.Tensor, out: torch.Tensor
    ) -> None:
        """``out = weight`` where kept, else 0 (``out`` may be the model's parameter)."""
        zero = torch.zeros((), dtype=weight.dtype, device=weight.device)
        torch.where(self.keep_mask(name, weight, threshold), weight, zero, out=out)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
