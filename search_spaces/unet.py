"""Partitions of a diffusers ``UNet2DConditionModel``: by paper group, by block, by block and kind."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from crdiff_search.errors import UsageError
from crdiff_search.search_spaces.partition import Partition
from crdiff_search.search_spaces.selection import assemble_groups, select_weights

PAPER_GROUPS = ("down", "mid", "up")


def _block_of(param_name: str) -> str | None:
    """``"down.1"``, ``"mid"``, ``"up.0"``, or ``None`` for weights outside the three stages."""
    parts = param_name.split(".")
    if parts[0] == "down_blocks":
        return f"down.{parts[1]}"
    if parts[0] == "mid_block":
        return "mid"
    if parts[0] == "up_blocks":
        return f"up.{parts[1]}"
    return None


def _blocks(model: nn.Module) -> list[str]:
    down = [f"down.{i}" for i in range(len(getattr(model, "down_blocks", ())))]
    mid = ["mid"] if getattr(model, "mid_block", None) is not None else []
    up = [f"up.{i}" for i in range(len(getattr(model, "up_blocks", ())))]
    return down + mid + up


def build(
    model: nn.Module,
    granularity: str,
    include: Sequence[str] | None,
    name: str,
    n_groups: int | None = None,
) -> Partition:
    """The registered UNet builder (:data:`crdiff_search.search_spaces.PARTITIONS`)."""
    if n_groups is not None:
        raise UsageError(
            "n_groups applies to transformer partitions only; UNet groups follow its blocks"
        )
    if granularity == "thirds":
        raise UsageError(
            "the thirds partition applies to transformer denoisers; a UNet's granularities "
            "are paper (down / mid / up), block and kind"
        )
    return unet_partition(model, granularity, include, name)


def unet_partition(
    model: nn.Module, granularity: str, include: Sequence[str] | None, name: str
) -> Partition:
    selected = []
    for param, kind in select_weights(model, include):
        block = _block_of(param)
        if block is not None:
            selected.append((param, kind, block))
    if granularity == "paper":
        # Fixed groups: each must be non-empty (Partition raises otherwise).
        fixed: dict[str, list[str]] = {g: [] for g in PAPER_GROUPS}
        for param, _, block in selected:
            fixed[block.split(".")[0]].append(param)
        groups = {g: tuple(v) for g, v in fixed.items()}
    else:
        # Groups are the blocks holding selected weights (SD1.5's plain DownBlock2D has no
        # attention, so it is no group); an empty partition is still an error.
        groups = assemble_groups(selected, _blocks(model), by_kind=granularity == "kind")
    return Partition(
        name=name,
        groups=groups,
        granularity=granularity,
        include=tuple(include) if include is not None else None,
        model_class=type(model).__name__,
    )
