"""Partitions: which weights of a denoiser form which named pruning group.

>>> from crdiff_search.testing import tiny_unet
>>> build_partition(tiny_unet(), "paper").group_names
('down', 'mid', 'up')

Granularities: ``paper`` (UNet: down / mid / up; transformers: early / middle / late thirds of
``transformer_blocks``), ``block`` (one group per UNet block; transformers: ``n_groups`` runs of
consecutive blocks) and ``kind`` (``block`` split by weight kind). ``include`` widens or narrows
the weights considered (kinds among :data:`KINDS`); ``None`` is the paper's selection rule.
"""

from __future__ import annotations

from collections.abc import Iterable

from crdiff_search.search_spaces.bounds import PAPER_BOUNDS, PAPER_START, default_bounds
from crdiff_search.search_spaces.partition import Partition
from crdiff_search.search_spaces.selection import KINDS, PAPER_KINDS, normalize_include, paper_rule
from torch import nn

from crdiff_search.errors import UsageError
from crdiff_search.names import DENOISER_CLASSES, GRANULARITIES, TRANSFORMER_CLASSES, UNET_CLASSES

SUPPORTED_CLASSES = DENOISER_CLASSES

__all__ = [
    "GRANULARITIES",
    "KINDS",
    "PAPER_BOUNDS",
    "PAPER_KINDS",
    "PAPER_START",
    "SUPPORTED_CLASSES",
    "Partition",
    "build_partition",
    "default_bounds",
    "model_family",
    "paper_rule",
]


def model_family(model) -> str:
    """``"unet"`` or ``"transformer"``; :class:`UsageError` for any other class."""
    for cls in type(model).__mro__:
        if cls.__name__ in UNET_CLASSES and cls.__module__.startswith("diffusers"):
            return "unet"
        if cls.__name__ in TRANSFORMER_CLASSES and cls.__module__.startswith("diffusers"):
            return "transformer"
    raise UsageError(
        f"unsupported model class {type(model).__name__}; partitions exist for diffusers "
        f"{', '.join(SUPPORTED_CLASSES)}"
    )


def build_partition(
    model,
    granularity: str = "paper",
    *,
    include: str | Iterable[str] | None = None,
    n_groups: int | None = None,
) -> Partition:
    """Discover a partition from ``model``'s module tree (works on the ``meta`` device too).

    ``model`` is a denoiser (``UNet2DConditionModel``, ``DiTTransformer2DModel``,
    ``PixArtTransformer2DModel``) or a pipeline holding one. ``n_groups`` only applies to the
    ``block``/``kind`` granularities of transformers. Raises :class:`UsageError` for an unknown
    granularity or kind, an unsupported class, or a group that would select no weights.
    """
    if granularity not in GRANULARITIES:
        raise UsageError(
            f"unknown partition granularity {granularity!r}; valid: {', '.join(GRANULARITIES)}"
        )
    kinds = normalize_include(include)
    if n_groups is not None and (isinstance(n_groups, bool) or not isinstance(n_groups, int)):
        raise UsageError(f"n_groups must be a positive integer, got {n_groups!r}")
    if not isinstance(model, nn.Module):
        from crdiff_search.models import denoiser_of

        model = denoiser_of(model)
    family = model_family(model)
    name = granularity
    if n_groups is not None:
        name += f"/{n_groups}"
    if kinds is not None:
        name += f"[{'+'.join(kinds)}]"
    if family == "unet":
        if n_groups is not None:
            raise UsageError(
                "n_groups applies to transformer partitions only; UNet groups follow its blocks"
            )
        from crdiff_search.search_spaces.unet import unet_partition

        return unet_partition(model, granularity, kinds, name)
    from crdiff_search.search_spaces.transformer import transformer_partition

    return transformer_partition(model, granularity, kinds, name, n_groups)
