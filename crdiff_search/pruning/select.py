"""Exact k-th smallest score of a pool by histograms of bit patterns (no sort, no full copy).

A float's bit pattern, read as an unsigned integer with the sign flipped in (negative values
complemented), orders exactly like the float. 16-bit scores (fp16, bf16) have 2^16 patterns: one
histogram over them answers every ``k`` exactly. 32-bit scores are split into their high and low
16 bits: a histogram of the high halves finds the bucket that holds the k-th score, and one more
pass over the pool, counting the low halves inside that bucket, finds the score itself (cached
per bucket). Counting goes tensor by tensor, so the transient memory is a few times the largest
tensor, not the pool. NaN scores are not supported (weights never are).

>>> import torch
>>> h = BitHistogram(torch.float16)
>>> x = torch.tensor([0.5, -2.0, 3.0, 0.25], dtype=torch.float16)
>>> h.add(x)
>>> [float(h.kth(k, lambda: [x])) for k in (1, 2, 3, 4)]
[-2.0, 0.25, 0.5, 3.0]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch

BINS = 1 << 16
SIXTEEN_BIT = (torch.float16, torch.bfloat16)
SUPPORTED = (*SIXTEEN_BIT, torch.float32)


def _keys16(bits: torch.Tensor) -> torch.Tensor:
    """16-bit patterns (as int32 in 0..65535) -> order keys in 0..65535."""
    negative = bits >= 0x8000
    return torch.where(negative, 0xFFFF - bits, bits | 0x8000)


def order_keys(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(high key, low key or None) of each score, int32 in 0..65535, ordered like the scores."""
    flat = scores.reshape(-1)
    if flat.dtype in SIXTEEN_BIT:
        bits = flat.view(torch.int16).to(torch.int32) & 0xFFFF
        return _keys16(bits), None
    if flat.dtype != torch.float32:
        raise TypeError(f"histogram selection takes fp16, bf16 or fp32 scores, not {flat.dtype}")
    bits = flat.view(torch.int32)
    hi = (bits >> 16) & 0xFFFF
    lo = bits & 0xFFFF
    # a negative float's low half is complemented too, so that (hi, lo) orders like the value
    return _keys16(hi), torch.where(bits < 0, 0xFFFF - lo, lo)


def _value(dtype: torch.dtype, hi_key: int, lo_key: int | None) -> torch.Tensor:
    """The score (a 0-dim CPU tensor of ``dtype``) whose keys are ``hi_key`` (and ``lo_key``)."""
    positive = bool(hi_key & 0x8000)
    hi = hi_key & 0x7FFF if positive else 0xFFFF - hi_key
    if lo_key is None:
        bits = np.array([hi], dtype=np.uint16).view(np.int16)
    else:
        lo = lo_key if positive else 0xFFFF - lo_key
        bits = np.array([(hi << 16) | lo], dtype=np.uint32).view(np.int32)
    return torch.from_numpy(bits.copy()).view(dtype)[0]


def _first_reaching(counts: np.ndarray, k: int) -> tuple[int, int]:
    """(bin holding the k-th element (1-based), number of elements in the bins before it)."""
    cumulative = np.cumsum(counts)
    index = int(np.searchsorted(cumulative, k, side="left"))
    before = int(cumulative[index - 1]) if index else 0
    return index, before


class BitHistogram:
    """Counts of a pool's scores by order key; :meth:`kth` answers ``torch.kthvalue``'s value.

    ``add`` each tensor of the pool once; ``kth(k, tensors)`` needs ``tensors`` (a callable
    returning the pool's score tensors again, in any order) only for 32-bit scores, once per new
    high-key bucket.
    """

    def __init__(self, dtype: torch.dtype, *, max_buckets: int = 64) -> None:
        if dtype not in SUPPORTED:
            raise TypeError(f"histogram selection takes fp16, bf16 or fp32 scores, not {dtype}")
        self.dtype = dtype
        self.counts = np.zeros(BINS, dtype=np.int64)
        self.numel = 0
        self._low: dict[int, np.ndarray] = {}
        self._max_buckets = max_buckets

    def add(self, scores: torch.Tensor) -> None:
        if scores.dtype != self.dtype:
            raise TypeError(f"pool scores are {self.dtype}, got {scores.dtype}")
        hi, _ = order_keys(scores)
        self.counts += torch.bincount(hi, minlength=BINS).cpu().numpy()
        self.numel += scores.numel()

    @property
    def nbytes(self) -> int:
        return self.counts.nbytes + sum(c.nbytes for c in self._low.values())

    def kth(self, k: int, tensors: Callable[[], Iterable[torch.Tensor]] | None = None):
        if not 1 <= k <= self.numel:
            raise ValueError(f"k must be in 1..{self.numel}, got {k}")
        bucket, before = _first_reaching(self.counts, k)
        if self.dtype in SIXTEEN_BIT:
            return _value(self.dtype, bucket, None)
        low = self._low.get(bucket)
        if low is None:
            if tensors is None:
                raise ValueError("fp32 scores need the pool's tensors for the low bits")
            low = np.zeros(BINS, dtype=np.int64)
            for scores in tensors():
                hi, lo = order_keys(scores)
                inside = lo[hi == bucket]
                if inside.numel():
                    low += torch.bincount(inside, minlength=BINS).cpu().numpy()
            if len(self._low) >= self._max_buckets:
                self._low.pop(next(iter(self._low)))
            self._low[bucket] = low
        index, _ = _first_reaching(low, k - before)
        return _value(self.dtype, bucket, index)
