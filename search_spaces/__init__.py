"""Partitions: which weights of a denoiser form which named pruning group.

>>> from crdiff_search.testing import tiny_unet
>>> build_partition(tiny_unet(), "paper").group_names
('down', 'mid', 'up')

Granularities: ``paper`` (UNet: down / mid / up; transformers: one ``shared`` group, the
reference's transformer path), ``thirds`` (transformers: early / middle / late thirds of the
blocks), ``block`` (one group per UNet block; transformers: ``n_groups`` runs of consecutive
blocks) and ``kind`` (``block`` split by weight kind). ``include`` widens or narrows the weights
considered (kinds among :data:`KINDS`); ``None`` is the reference's selection rule (the UNet
one, or the transformer one).
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from crdiff_search.errors import UsageError
from crdiff_search.names import DENOISER_CLASSES, GRANULARITIES, TRANSFORMER_CLASSES, UNET_CLASSES
from crdiff_search.plugins import PluginRegistry
from crdiff_search.search_spaces.bounds import PAPER_BOUNDS, PAPER_START, default_bounds
from crdiff_search.search_spaces.partition import Partition
from crdiff_search.search_spaces.selection import KINDS, PAPER_KINDS, normalize_include, paper_rule

SUPPORTED_CLASSES = DENOISER_CLASSES  # the built-in ones; PARTITIONS has plug-ins' too

__all__ = [
    "GRANULARITIES",
    "KINDS",
    "PAPER_BOUNDS",
    "PAPER_KINDS",
    "PAPER_START",
    "PARTITIONS",
    "SUPPORTED_CLASSES",
    "Partition",
    "build_partition",
    "default_bounds",
    "model_family",
    "paper_rule",
]


# Partition builders by denoiser class name (entry point group "crdiff_search.partitions").
# A builder is ``builder(model, granularity, include, name, n_groups) -> Partition``; a user's
# package registers one for its own denoiser class (``PARTITIONS.register("MyDiT", ...)``).
PARTITIONS = PluginRegistry("partition", normalize=False)
for _cls in UNET_CLASSES:
    PARTITIONS.register(
        _cls, "crdiff_search.search_spaces.unet:build", origin="builtin", family="unet"
    )
for _cls in TRANSFORMER_CLASSES:
    PARTITIONS.register(
        _cls,
        "crdiff_search.search_spaces.transformer:transformer_partition",
        origin="builtin",
        family="transformer",
    )


def _plugin_for(model) -> str:
    """The registered class name that ``model`` is (or derives from)."""
    for cls in type(model).__mro__:
        if cls.__name__ not in PARTITIONS:
            continue
        builtin = PARTITIONS.plugin(cls.__name__).origin == "builtin"
        if not builtin or cls.__module__.startswith("diffusers"):
            return cls.__name__
    raise UsageError(
        f"unsupported model class {type(model).__name__}; partitions exist for "
        f"{', '.join(PARTITIONS)} (register a builder in search_spaces.PARTITIONS for another)"
    )


def model_family(model) -> str:
    """``"unet"``, ``"transformer"`` (or a plug-in's family); :class:`UsageError` for a class
    with no registered partition."""
    return str(PARTITIONS.metadata(_plugin_for(model)).get("family", "custom"))


def build_partition(
    model,
    granularity: str = "paper",
    *,
    include: str | Iterable[str] | None = None,
    n_groups: int | None = None,
) -> Partition:
    """Discover a partition from ``model``'s module tree (works on the ``meta`` device too).

    ``model`` is a denoiser (``UNet2DConditionModel``, ``DiTTransformer2DModel``,
    ``PixArtTransformer2DModel``, ``SD3Transformer2DModel``, ``FluxTransformer2DModel``) or a
    pipeline holding one. ``n_groups`` only applies to the
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
    builder = PARTITIONS.get(_plugin_for(model))
    name = granularity
    if n_groups is not None:
        name += f"/{n_groups}"
    if kinds is not None:
        name += f"[{'+'.join(kinds)}]"
    return builder(model, granularity, kinds, name, n_groups)
