"""Which weight tensors of a denoiser are candidates for pruning, and of which kind.

Two selection rules:

* the **paper rule** (``include=None``), the reference implementation's predicate read
  literally: a module whose exact type is ``nn.Linear`` or ``nn.Conv2d`` and whose qualified name
  contains ``attn`` or ``ff`` but not ``attn2``. In diffusers UNets and transformers this is the
  self-attention and feed-forward projections of every transformer block.
* a **kind filter** (``include=("self_attn", "ff", "resnet", ...)``), found from the module tree:
  Linear/Conv2d layers inside an ``Attention`` module (self- or cross-attention by the module's own
  ``is_cross_attention``), inside a ``FeedForward`` module, and the convolutions of a
  ``ResnetBlock2D``. It can widen the selection beyond the paper's.

Only ``.weight`` tensors are selected; biases are never pruned.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import nn

from crdiff_search.errors import UsageError
from crdiff_search.names import KINDS

PAPER_KINDS = ("self_attn", "ff")
# The reference's transformer path (lib/prune_dit.py via pruning_utils.py): Linear/Conv2d
# modules whose qualified name ENDS with one of these, anywhere in the model.
REFERENCE_TRANSFORMER_SUFFIXES = (
    "attn1.to_q",
    "attn1.to_k",
    "attn1.to_v",
    "attn1.to_out.0",
    "attn2.to_q",
    "attn2.to_k",
    "attn2.to_v",
    "attn2.to_out.0",
    "ff.net.0.proj",
    "ff.net.2",
)


def normalize_include(include: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """``None`` (the paper rule) or the requested kinds, deduplicated, in :data:`KINDS` order."""
    if include is None:
        return None
    items = include.split(",") if isinstance(include, str) else list(include)
    kinds = [str(k).strip() for k in items if str(k).strip()]
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        shown = ", ".join(repr(k) for k in bad) if bad else "nothing"
        raise UsageError(f"unknown weight kind(s) {shown} in include; valid: {', '.join(KINDS)}")
    return tuple(k for k in KINDS if k in kinds)


def paper_rule(module_name: str, module: nn.Module) -> bool:
    """The reference predicate (exact types on purpose: a subclass is not selected)."""
    return (
        type(module) in (nn.Linear, nn.Conv2d)
        and ("attn" in module_name or "ff" in module_name)
        and "attn2" not in module_name
    )


def reference_transformer_rule(module_name: str, module: nn.Module) -> bool:
    """The reference's transformer predicate (exact types, name suffixes). In DiT and PixArt it
    selects the self- and cross-attention projections and the feed-forward layers of every
    block; in SD3 and Flux, whose attention is named ``attn``, only ``ff`` (and SD3.5's
    ``attn2``): the reference's own reach there."""
    return type(module) in (nn.Linear, nn.Conv2d) and module_name.endswith(
        REFERENCE_TRANSFORMER_SUFFIXES
    )


def _container_classes() -> dict[str, tuple[type, ...]]:
    from diffusers.models import attention as attention_mod
    from diffusers.models.attention_processor import Attention
    from diffusers.models.resnet import ResnetBlock2D

    attention_types: tuple[type, ...] = (Attention,)
    mixin = getattr(attention_mod, "AttentionModuleMixin", None)
    if mixin is not None:
        attention_types += (mixin,)
    return {
        "attention": attention_types,
        "ff": (attention_mod.FeedForward,),
        "resnet": (ResnetBlock2D,),
    }


def weight_kinds(model: nn.Module) -> dict[str, str]:
    """Parameter name -> kind, for every Linear/Conv2d weight inside a kind container."""
    classes = _container_classes()
    kinds: dict[str, str] = {}
    for name, module in model.named_modules():
        if isinstance(module, classes["attention"]):
            kind = "cross_attn" if getattr(module, "is_cross_attention", False) else "self_attn"
            leaf_types: tuple[type, ...] = (nn.Linear, nn.Conv2d)
        elif isinstance(module, classes["ff"]):
            kind, leaf_types = "ff", (nn.Linear, nn.Conv2d)
        elif isinstance(module, classes["resnet"]):
            kind, leaf_types = "resnet", (nn.Conv2d,)
        elif _is_parallel_block(module):
            # Flux's single-stream block: attention and an MLP side by side; proj_mlp is the
            # MLP's input, proj_out the shared output of both.
            for sub in ("proj_mlp", "proj_out"):
                kinds.setdefault(f"{name}.{sub}.weight", "ff")
            continue
        else:
            continue
        for sub, leaf in module.named_modules():
            if sub and isinstance(leaf, leaf_types) and getattr(leaf, "weight", None) is not None:
                kinds.setdefault(f"{name}.{sub}.weight", kind)
    return kinds


def _is_parallel_block(module: nn.Module) -> bool:
    return all(
        isinstance(getattr(module, sub, None), nn.Linear) for sub in ("proj_mlp", "proj_out")
    ) and hasattr(module, "attn")


def select_weights(
    model: nn.Module, include: Sequence[str] | None, rule=None
) -> list[tuple[str, str]]:
    """``(parameter name, kind)`` pairs in module-tree order.

    With ``include=None`` a name rule decides (``rule``: default the UNet paper rule); a
    selected weight outside any kind container is labelled by its name (``ff`` if the name has
    an ``ff`` part, else ``self_attn``).
    """
    kinds = weight_kinds(model)
    selected: list[tuple[str, str]] = []
    if include is None:
        rule = rule or paper_rule
        for name, module in model.named_modules():
            if rule(name, module):
                pname = f"{name}.weight"
                fallback = "ff" if "ff" in name.split(".") else "self_attn"
                selected.append((pname, kinds.get(pname, fallback)))
        return selected
    wanted = set(include)
    for name, module in model.named_modules():
        pname = f"{name}.weight"
        if kinds.get(pname) in wanted and isinstance(module, (nn.Linear, nn.Conv2d)):
            selected.append((pname, kinds[pname]))
    return selected


def assemble_groups(
    selected: Iterable[tuple[str, str, str]],
    units: Sequence[str],
    *,
    by_kind: bool,
) -> dict[str, tuple[str, ...]]:
    """Group ``(parameter, kind, unit)`` triples by unit (and kind), in ``units`` then
    :data:`KINDS` order; parameters keep their module-tree order. Empty groups are left out."""
    buckets: dict[tuple[str, str], list[str]] = {}
    for param, kind, unit in selected:
        buckets.setdefault((unit, kind if by_kind else ""), []).append(param)
    groups: dict[str, tuple[str, ...]] = {}
    for unit in units:
        for kind in KINDS if by_kind else ("",):
            params = buckets.get((unit, kind))
            if params:
                groups[f"{unit}.{kind}" if by_kind else unit] = tuple(params)
    return groups
