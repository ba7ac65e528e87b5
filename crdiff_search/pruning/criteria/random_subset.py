"""``random``: a seeded control that prunes a uniformly random subset of each group."""

from __future__ import annotations

import zlib

import torch

from crdiff_search.pruning.criteria.base import Criterion


class RandomCriterion(Criterion):
    """Scores are uniform random numbers, fixed per (seed, tensor name, device type).

    The same seed prunes the same elements on every call, so "A then B == B" and restore hold as
    for magnitude; CPU and CUDA draw different numbers.
    """

    name = "random"

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = int(seed)

    def scores(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator(device=weight.device)
        gen.manual_seed((self.seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63))
        return torch.rand(weight.shape, generator=gen, device=weight.device, dtype=torch.float32)

    def __repr__(self) -> str:
        return f"RandomCriterion(seed={self.seed})"
