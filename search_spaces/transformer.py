"""Partitions of transformer denoisers (``DiTTransformer2DModel``, ``PixArtTransformer2DModel``).

Their blocks are ``transformer_blocks.0 .. L-1``. ``paper`` splits them into early / middle / late
thirds of consecutive blocks; ``block`` makes ``n_groups`` near-equal runs of consecutive blocks
(default: one group per block); ``kind`` splits each run by weight kind.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from crdiff_search.errors import UsageError
from crdiff_search.search_spaces.partition import Partition
from crdiff_search.search_spaces.selection import assemble_groups, select_weights

PAPER_GROUPS = ("early", "middle", "late")


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


def transformer_partition(
    model: nn.Module,
    granularity: str,
    include: Sequence[str] | None,
    name: str,
    n_groups: int | None,
) -> Partition:
    n_blocks = len(model.transformer_blocks)
    if granularity == "paper":
        if n_groups is not None:
            raise UsageError(
                "the paper partition has three fixed groups (early, middle, late); "
                "use granularity='block' with n_groups for another count"
            )
        n_groups = 3
    elif n_groups is None:
        n_groups = n_blocks
    if not 1 <= n_groups <= n_blocks:
        raise UsageError(
            f"n_groups={n_groups} is out of range for a model with {n_blocks} transformer blocks; "
            f"valid: 1..{n_blocks}"
        )
    runs = split_runs(n_blocks, n_groups)
    unit_names = list(PAPER_GROUPS) if granularity == "paper" else [_run_name(r) for r in runs]
    if granularity == "paper" and n_blocks < 3:
        raise UsageError(
            f"the paper partition needs at least 3 transformer blocks (early, middle, late); "
            f"this model has {n_blocks}"
        )
    unit_of_block = {b: unit_names[i] for i, run in enumerate(runs) for b in run}
    selected = []
    for param, kind in select_weights(model, include):
        parts = param.split(".")
        if parts[0] == "transformer_blocks":
            selected.append((param, kind, unit_of_block[int(parts[1])]))
    if granularity == "paper":
        fixed: dict[str, list[str]] = {g: [] for g in PAPER_GROUPS}
        for param, _, unit in selected:
            fixed[unit].append(param)
        groups = {g: tuple(v) for g, v in fixed.items()}
    else:
        groups = assemble_groups(selected, unit_names, by_kind=granularity == "kind")
    return Partition(
        name=name,
        groups=groups,
        granularity=granularity,
        include=tuple(include) if include is not None else None,
        model_class=type(model).__name__,
    )
