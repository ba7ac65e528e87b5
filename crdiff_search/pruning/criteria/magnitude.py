"""``magnitude``: the paper's criterion, one threshold per group over the concatenated ``|W|``."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from crdiff_search.pruning.criteria.base import Criterion


class Magnitude(Criterion):
    """Prune the smallest ``|W|`` of a group (one threshold for all its tensors).

    Magnitudes are taken in the weight's own dtype: ``|x|`` is exact in every float format, so the
    threshold is one of the weights' own magnitudes and the comparisons are exact (fp32, fp16 and
    bf16 prune exactly what the reference's ``kthvalue`` on that model prunes). A group mixing
    dtypes is compared in float32, which holds every fp16/bf16 value exactly.
    """

    name = "magnitude"

    def scores(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        return weight.abs()

    def score_dtype(self, dtypes: Iterable[torch.dtype]) -> torch.dtype:
        kinds = set(dtypes)
        return kinds.pop() if len(kinds) == 1 else torch.float32

    def scores_into(self, name: str, weight: torch.Tensor, out: torch.Tensor) -> None:
        flat = weight.reshape(-1)
        if out.dtype == weight.dtype:
            torch.abs(flat, out=out)
        else:
            out.copy_(flat.abs())

    def keep_mask(self, name: str, weight: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
        return weight.abs() > threshold

    def prune_into(
        self, name: str, weight: torch.Tensor, threshold: torch.Tensor, out: torch.Tensor
    ) -> None:
        # hardshrink is "keep |x| > lambda, else 0" in one fused pass, ~10x faster than
        # where(|x| > t, x, 0); lambda comes from the weights' own values, so it is exact.
        torch.ops.aten.hardshrink.out(weight, float(threshold), out=out)
