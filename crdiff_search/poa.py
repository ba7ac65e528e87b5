"""Pruned output amplification (POA) with one set of weights.

At every denoising step the network output becomes ``D = (1 - w) * D_dense + w * D_pruned``
(both classifier-free-guidance halves, guidance applied afterwards by the pipeline). The
reference keeps two full networks; here the pruned and the dense network share every tensor the
pruning did not touch. Only the pruned tensors exist twice: the module holds the pruned values
and :class:`PrunedOutputAmplifier` points those parameters at the saved dense tensors for the
dense pass (``param.data = dense``), then points them back. Nothing is copied per step.

Example::

    with Pruner(pipe.unet, partition, cache="none").pruned(ratios) as pruner:
        dense = {name: pruner.dense_tensor(name) for name in pruner.keep_masks(ratios)}
        with PrunedOutputAmplifier(pipe.unet, dense, w=1.5):
            images = pipe(prompt=["a cat"], height=768, width=768).images

``w = 0`` runs only the dense pass and ``w = 1`` only the pruned pass, so both ends reproduce the
dense and the pruned pipeline bit for bit.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import torch

from crdiff_search.errors import UsageError
from crdiff_search.recipe import PoaWindow, check_weight

DEFAULT_NUM_TRAIN_TIMESTEPS = 1000


class PrunedOutputAmplifier:
    """Context manager that turns a pruned denoiser into its POA combination with the dense one.

    ``dense_tensors`` maps parameter names of ``denoiser`` to their dense values; the module's
    own parameters must hold the pruned values while the amplifier is active. Parameters not in
    the mapping are shared by both passes. ``window`` is a :class:`PoaWindow` (or ``(lo, hi)``);
    ``num_train_timesteps`` normalises the timestep for it.

    The module's ``forward`` is wrapped on entry and unwrapped on exit; the weights are left as
    they were found (pruned). ``steps`` counts wrapped calls and ``amplified`` those inside the
    window, for reports and tests.
    """

    def __init__(
        self,
        denoiser: torch.nn.Module,
        dense_tensors: Mapping[str, torch.Tensor],
        *,
        w: float = 1.5,
        window=None,
        num_train_timesteps: int = DEFAULT_NUM_TRAIN_TIMESTEPS,
    ):
        self.denoiser = denoiser
        self.w = check_weight(w)
        self.window = PoaWindow.parse(window)
        self.num_train_timesteps = int(num_train_timesteps)
        params = dict(denoiser.named_parameters())
        unknown = sorted(set(dense_tensors) - set(params))
        if unknown:
            raise UsageError(
                f"dense tensors for unknown parameters {unknown[:3]} "
                f"(+{max(0, len(unknown) - 3)} more) of {type(denoiser).__name__}"
            )
        self._pairs: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
        for name, dense in dense_tensors.items():
            param = params[name]
            if dense.shape != param.shape:
                raise UsageError(
                    f"dense tensor for {name} has shape {tuple(dense.shape)}, "
                    f"the parameter {tuple(param.shape)}"
                )
            if dense.device != param.device or dense.dtype != param.dtype:
                # Converted once here, never per step.
                dense = dense.to(device=param.device, dtype=param.dtype)
            self._pairs.append((param, dense))
        self._active = False
        self._had_instance_forward = False
        self._saved_forward = None
        self._timestep_index = _timestep_position(denoiser)
        self.steps = 0
        self.amplified = 0

    # -- context management -------------------------------------------------------------------
    def __enter__(self) -> PrunedOutputAmplifier:
        if self._active:
            raise RuntimeError("this PrunedOutputAmplifier is already active")
        module = self.denoiser
        self._had_instance_forward = "forward" in module.__dict__
        self._saved_forward = module.__dict__.get("forward")
        inner = module.forward

        def forward(*args, **kwargs):
            return self._forward(inner, args, kwargs)

        module.forward = forward
        self._active = True
        return self

    def __exit__(self, *exc) -> None:
        module = self.denoiser
        if self._had_instance_forward:
            module.forward = self._saved_forward
        else:
            module.__dict__.pop("forward", None)
        self._saved_forward = None
        self._active = False

    # -- the step -----------------------------------------------------------------------------
    def applies_at(self, timestep) -> bool:
        if self.window is None:
            return True
        t = _scalar_timestep(timestep)
        if t is None:
            return True
        return self.window.contains(t / self.num_train_timesteps)

    def _forward(self, inner, args, kwargs):
        self.steps += 1
        w = self.w
        if w == 1.0 or not self.applies_at(self._timestep(args, kwargs)):
            return inner(*args, **kwargs)
        self.amplified += 1
        dense_out = self._dense_pass(inner, args, kwargs)
        if w == 0.0:
            return dense_out
        pruned_out = inner(*args, **kwargs)
        return _combine(dense_out, pruned_out, w)

    def _dense_pass(self, inner, args, kwargs):
        saved = [param.data for param, _ in self._pairs]
        try:
            for param, dense in self._pairs:
                param.data = dense
            return inner(*args, **kwargs)
        finally:
            for (param, _), pruned in zip(self._pairs, saved, strict=True):
                param.data = pruned

    def _timestep(self, args, kwargs):
        if "timestep" in kwargs:
            return kwargs["timestep"]
        if self._timestep_index is not None and len(args) > self._timestep_index:
            return args[self._timestep_index]
        return None


def _timestep_position(module: torch.nn.Module) -> int | None:
    try:
        names = list(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError):
        return None
    return names.index("timestep") if "timestep" in names else None


def _scalar_timestep(timestep) -> float | None:
    # Pipelines pass one timestep for the whole batch (possibly broadcast to a vector).
    if timestep is None:
        return None
    if isinstance(timestep, torch.Tensor):
        if timestep.numel() == 0:
            return None
        return float(timestep.reshape(-1)[0].item())
    return float(timestep)


def _mix(dense: torch.Tensor, pruned: torch.Tensor, w: float) -> torch.Tensor:
    return (1.0 - w) * dense + w * pruned


def _combine(dense_out, pruned_out, w: float):
    if isinstance(pruned_out, torch.Tensor):
        return _mix(dense_out, pruned_out, w)
    if isinstance(pruned_out, tuple):
        return (_mix(dense_out[0], pruned_out[0], w), *pruned_out[1:])
    if hasattr(pruned_out, "sample"):
        pruned_out.sample = _mix(dense_out.sample, pruned_out.sample, w)
        return pruned_out
    raise TypeError(f"cannot combine denoiser outputs of type {type(pruned_out).__name__}")


def num_train_timesteps_of(pipe) -> int:
    config = getattr(getattr(pipe, "scheduler", None), "config", None)
    value = getattr(config, "num_train_timesteps", None) if config is not None else None
    return int(value) if value else DEFAULT_NUM_TRAIN_TIMESTEPS
