"""Partitions of transformer denoisers (``DiTTransformer2DModel``, ``PixArtTransformer2DModel``,
``SD3Transformer2DModel``, ``FluxTransformer2DModel``).

Their blocks are the entries of ``transformer_blocks`` and, for Flux, ``single_transformer_blocks``
after them (block ``N`` is Flux's first single-stream block when it has ``N`` double-stream
ones), discovered from the module tree.

- ``paper``: the reference's transformer path: ONE group, ``shared`` (one ratio for the whole
  denoiser), over the weights whose module names end in ``attn1``/``attn2``
  ``.to_q/.to_k/.to_v/.to_out.0`` or ``ff.net.0.proj``/``ff.net.2`` (self- and cross-attention and
  feed-forward in DiT and PixArt; feed-forward, and SD3.5's ``attn2``, in SD3 and Flux), with a
  threshold per tensor: the criterion ``auto`` is ``magnitude-tensor`` for it.
- ``thirds``: early / middle / late thirds of consecutive blocks, one ratio each.
- ``block``: ``n_groups`` near-equal runs of consecutive blocks (default: one group per block);
  ``kind`` splits each run by weight kind.

``include=None`` selects the reference's weights (as ``paper``) inside the blocks; kinds
(``self_attn``, ``cross_attn``, ``ff``) widen or narrow that. In SD3 and Flux, the joint
attention (image and text streams) is ``self_attn``, and a Flux single-stream block's
``proj_mlp``/``proj_out`` are ``ff``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from crdiff_search.errors import UsageError
from crdiff_search.search_spaces.partition import Partition
from crdiff_search.search_spaces.selection import (
    assemble_groups,
    reference_transformer_rule,
    select_weights,
)

PAPER_GROUPS = ("shared",)
THIRDS = ("early", "middle", "late")
# Block lists, in the order their blocks are numbered.
BLOCK_LISTS = ("transformer_blocks", "single_transformer_blocks")


def split_runs(n_blocks: int, n_groups: int) -> list[range]:
    """``n_groups`` consecutive runs covering ``range(n_blocks)``; earlier runs are the longer."""
    base, extra = divmod(n_blocks, n_groups)
    runs, start = [], 0
    for i in range(n_groups):
        size = base + (1 if i < extra else 0)
        runs.append(range(start, start + size))
        start += size
    return runs


def _run_name(run: range) -> str:
    return f"blocks.{run[0]}" if len(run) == 1 else f"blocks.{run[0]}-{run[-1]}"


def block_prefixes(model: nn.Module) -> list[str]:
    """``["transformer_blocks.0", ..., "single_transformer_blocks.0", ...]``: the model's blocks
    in their global order."""
    prefixes = []
    for name in BLOCK_LISTS:
        blocks = getattr(model, name, None)
        if isinstance(blocks, nn.ModuleList):
            prefixes += [f"{name}.{i}" for i in range(len(blocks))]
    if not prefixes:
        raise UsageError(
            f"{type(model).__name__} has no transformer_blocks: not a transformer denoiser "
            "this partition knows"
        )
    return prefixes


def _block_index(param: str, index: dict[str, int]) -> int | None:
    parts = param.split(".")
    return index.get(".".join(parts[:2])) if len(parts) > 2 else None


def transformer_partition(
    model: nn.Module,
    granularity: str,
    include: Sequence[str] | None,
    name: str,
    n_groups: int | None,
) -> Partition:
    prefixes = block_prefixes(model)
    n_blocks = len(prefixes)
    index = {p: i for i, p in enumerate(prefixes)}
    if granularity in ("paper", "thirds") and n_groups is not None:
        fixed = (
            "one group (shared)" if granularity == "paper" else "three groups (early, middle, late)"
        )
        raise UsageError(
            f"the {granularity} partition has {fixed}; use granularity='block' with n_groups "
            "for another count"
        )
    selected = select_weights(model, include, rule=reference_transformer_rule)
    if granularity == "paper":
        # The reference's reach: every matching module of the model, inside a block or not.
        groups = {"shared": tuple(param for param, _ in selected)}
    else:
        if granularity == "thirds":
            if n_blocks < 3:
                raise UsageError(
                    f"the thirds partition needs at least 3 transformer blocks (early, middle, "
                    f"late); this model has {n_blocks}"
                )
            n_groups = 3
        elif n_groups is None:
            n_groups = n_blocks
        if not 1 <= n_groups <= n_blocks:
            raise UsageError(
                f"n_groups={n_groups} is out of range for a model with {n_blocks} transformer "
                f"blocks; valid: 1..{n_blocks}"
            )
        runs = split_runs(n_blocks, n_groups)
        unit_names = list(THIRDS) if granularity == "thirds" else [_run_name(r) for r in runs]
        unit_of_block = {b: unit_names[i] for i, run in enumerate(runs) for b in run}
        in_blocks = []
        for param, kind in selected:
            block = _block_index(param, index)
            if block is not None:
                in_blocks.append((param, kind, unit_of_block[block]))
        if granularity == "thirds":
            buckets: dict[str, list[str]] = {g: [] for g in THIRDS}
            for param, _, unit in in_blocks:
                buckets[unit].append(param)
            groups = {g: tuple(v) for g, v in buckets.items()}
        else:
            groups = assemble_groups(in_blocks, unit_names, by_kind=granularity == "kind")
    return Partition(
        name=name,
        groups=groups,
        granularity=granularity,
        include=tuple(include) if include is not None else None,
        model_class=type(model).__name__,
    )
