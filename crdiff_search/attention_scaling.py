"""Attention-entropy scaling: a training-free fix for resolution that changes no weight.

Jin et al. (NeurIPS 2023, "Training-free diffusion model adaptation for variable-sized
text-to-image synthesis") observe that a self-attention layer's entropy grows with the number of
tokens it attends over, and restore the training level by scaling the layer's attention logits
by ``sqrt(log N / log T)``: ``T`` the layer's token count at the training resolution, ``N`` at
the resolution being generated. Below the training size the factor is below 1 (softer
attention), above it above 1.

Scaling the logits by ``s`` is scaling the query by ``s``, so :class:`EntropyScaling` puts a
forward hook on each self-attention layer's query (the output of ``to_q``, or of ``norm_q``
where the layer normalises its queries, since the norm would undo a scale applied before it).
Every diffusers attention processor (SDPA, xformers, the plain one) then sees the scaled query;
``attn.scale`` alone would not reach diffusers' SDPA processor, which calls
``scaled_dot_product_attention`` with its default scale. Cross-attention (attending over the
text) is left alone. Removing the hooks leaves the module exactly as it was; at the training
resolution the factor is exactly 1 and the hook returns the query untouched.

``T`` and ``N`` are counted per layer: a hook on the denoiser records the latent's height and
width at each call; a layer whose query has ``N`` tokens works at the factor ``f`` with
``ceil(h / f) * ceil(w / f) = N`` (a UNet level, or a transformer's patch size), and its
training count is ``ceil(h0 / f) * ceil(w0 / f)`` for the training latent ``h0 x w0``
(the denoiser config's ``sample_size`` unless given).

Example::

    with EntropyScaling(pipe.unet):
        images = pipe(prompt, width=768, height=768).images   # SD1.5, trained at 512
    # the unet is unchanged here, bit for bit
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch

from crdiff_search.errors import UsageError
from crdiff_search.names import ATTENTION_SCALINGS

_FACTORS = tuple(2**i for i in range(8))  # 1 .. 128: UNet levels and patch sizes


def entropy_scale(n_tokens: int, train_tokens: int) -> float:
    """``sqrt(log N / log T)``: the logit scale that keeps a layer attending over ``N`` tokens
    at the attention entropy it had over ``T`` tokens in training (1.0 when ``N == T``, or when
    either count is below 2, where the logarithm says nothing)."""
    for name, value in (("n_tokens", n_tokens), ("train_tokens", train_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if n_tokens == train_tokens or n_tokens < 2 or train_tokens < 2:
        return 1.0
    return math.sqrt(math.log(n_tokens) / math.log(train_tokens))


def layer_train_tokens(n_tokens: int, latent_hw: Sequence[int], train_hw: Sequence[int]) -> int:
    """The token count at the training latent ``train_hw`` of a layer that has ``n_tokens`` at
    ``latent_hw``: the smallest factor ``f`` with ``ceil(h/f) * ceil(w/f) == n_tokens`` gives
    ``ceil(h0/f) * ceil(w0/f)``; when no power of two fits, the count scaled by the area."""
    h, w = latent_hw
    h0, w0 = train_hw
    for f in _FACTORS:
        if math.ceil(h / f) * math.ceil(w / f) == n_tokens:
            return math.ceil(h0 / f) * math.ceil(w0 / f)
    return max(1, round(n_tokens * (h0 * w0) / (h * w)))


def _train_latent(denoiser, train_size) -> tuple[int, int]:
    size = train_size
    if size is None:
        size = getattr(getattr(denoiser, "config", None), "sample_size", None)
        if size is None:
            raise UsageError(
                f"{type(denoiser).__name__} has no config.sample_size: pass the training latent "
                "size (train_size=(height, width)) for entropy scaling"
            )
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    try:
        h0, w0 = (int(v) for v in size)
    except (TypeError, ValueError):
        raise UsageError(
            f"training latent size {size!r} must be an integer or (height, width)"
        ) from None
    if h0 < 1 or w0 < 1:
        raise UsageError(f"training latent size {size!r} must be positive")
    return h0, w0


def self_attention_layers(denoiser) -> Iterator[tuple[str, torch.nn.Module]]:
    """``(name, module)`` of each diffusers ``Attention`` of ``denoiser`` that is not
    cross-attention (its keys come from the image tokens, not from the text)."""
    from diffusers.models.attention_processor import Attention

    for name, module in denoiser.named_modules():
        if isinstance(module, Attention) and not module.is_cross_attention:
            yield name, module


class EntropyScaling:
    """Attention-entropy scaling of ``denoiser``'s self-attention layers while attached (a
    context manager, or :meth:`attach` / :meth:`detach`). ``train_size`` is the training latent
    ``(height, width)`` or one side (default: ``denoiser.config.sample_size``)."""

    def __init__(self, denoiser: torch.nn.Module, *, train_size=None):
        self.denoiser = denoiser
        self.train_hw = _train_latent(denoiser, train_size)
        self.layers = list(self_attention_layers(denoiser))
        if not self.layers:
            raise UsageError(
                f"{type(denoiser).__name__} has no self-attention layer: entropy scaling has "
                "nothing to scale"
            )
        fused = [name for name, m in self.layers if getattr(m, "fused_projections", False)]
        if fused:
            raise UsageError(
                f"entropy scaling needs separate query projections; {len(fused)} layers have "
                f"fused ones (e.g. {fused[0]}): call unfuse_qkv_projections() first"
            )
        self._latent_hw: tuple[int, int] | None = None
        self._handles: list = []
        self.last_scales: dict[str, float] = {}  # layer name -> factor of the latest call

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def scale_for(self, n_tokens: int, latent_hw: Sequence[int] | None = None) -> float:
        """The factor of a layer with ``n_tokens`` queries at ``latent_hw`` (default: the
        latent of the denoiser's current call)."""
        hw = self._latent_hw if latent_hw is None else tuple(latent_hw)
        if hw is None:
            raise RuntimeError(
                "entropy scaling saw no 4-D latent in this denoiser call (sample or "
                "hidden_states as batch x channels x height x width): its token counts are unknown"
            )
        return entropy_scale(n_tokens, layer_train_tokens(n_tokens, hw, self.train_hw))

    def attach(self) -> EntropyScaling:
        if self.attached:
            raise RuntimeError("entropy scaling is already attached to this denoiser")
        self._handles.append(
            self.denoiser.register_forward_pre_hook(self._record_latent, with_kwargs=True)
        )
        for name, attn in self.layers:
            target = attn.norm_q if getattr(attn, "norm_q", None) is not None else attn.to_q
            per_head = target is not attn.to_q  # norm_q sees batch x heads x tokens x dim
            self._handles.append(target.register_forward_hook(self._query_hook(name, per_head)))
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._latent_hw = None

    def __enter__(self) -> EntropyScaling:
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    # -- hooks ---------------------------------------------------------------------------------
    def _record_latent(self, module, args, kwargs):
        latent = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
        self._latent_hw = (
            (int(latent.shape[-2]), int(latent.shape[-1]))
            if isinstance(latent, torch.Tensor) and latent.dim() == 4
            else None
        )

    def _query_hook(self, name: str, per_head: bool):
        def hook(module, inputs, output):
            n_tokens = int(output.shape[-2] if per_head else output.shape[1])
            scale = self.scale_for(n_tokens)
            self.last_scales[name] = scale
            return None if scale == 1.0 else output * scale

        return hook


def check_attention_scaling(value) -> str | None:
    """``None`` or a name of :data:`ATTENTION_SCALINGS`, else a :class:`UsageError`."""
    if value is None or value in ATTENTION_SCALINGS:
        return value
    raise UsageError(
        f"attention scaling {value!r} is unknown; valid: none, {', '.join(ATTENTION_SCALINGS)}"
    )
