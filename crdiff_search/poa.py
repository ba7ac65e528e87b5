"""Pruned output amplification (POA) with one set of weights.

At every denoising step the network output becomes ``D = (1 - w) * D_dense + w * D_pruned``
(both classifier-free-guidance halves, guidance applied afterwards by the pipeline). The
reference keeps two full networks; here the pruned and the dense network share every tensor the
pruning did not touch. Only the pruned tensors exist twice: the module holds the pruned values
and :class:`PrunedOutputAmplifier` points those parameters at the saved dense tensors for the
dense pass (``param.data = dense``), then points them back. Nothing is copied per step.

The two passes can run as one forward at twice the batch: the inputs are stacked [dense half;
pruned half], every module that owns a pruned tensor (a linear, convolution or norm layer)
runs its first half with the dense tensors and its second half with the pruned ones, and every
other layer runs once over both halves. That pays where a forward is dominated by fixed costs
(Python, kernel launches, weight reads), i.e. at small batches: on CPU it was 9-12 % faster
than two passes at a batch of 2-4 (one or two CFG pairs) and 10-30 % slower from 8 on
(activation traffic and the halves' copies). ``batched="auto"`` (the default) therefore uses
one forward when the batch is at most :data:`AUTO_MAX_BATCH`, ``True`` always, ``False``
never. The first amplified
step also runs the two passes one after the other and compares: if they disagree (a network
whose layers do not keep the batch in the first dimension) the amplifier warns and stays with
two passes. The verdict is kept per network and set of split layers: later amplifiers on the
same network skip the check. Two passes need half the activation memory; an out-of-memory
error in the batched pass switches to two passes, with a warning.

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
import warnings
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from crdiff_search.errors import UsageError
from crdiff_search.recipe import PoaWindow, check_weight

DEFAULT_NUM_TRAIN_TIMESTEPS = 1000
# Layers whose forward takes one batched tensor first and treats samples independently: a layer
# owning a pruned tensor must be one of these for the batched pass.
SPLITTABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.GroupNorm, nn.LayerNorm)
# The batched pass must match the two-pass result to this share of the output's largest value
# (a numerical difference is far smaller; a layer mixing samples is far larger).
SELF_CHECK_TOLERANCE = 1e-2
# batched="auto": one forward at twice the batch only up to this input batch (measured above)
AUTO_MAX_BATCH = 4
BATCHED_CHOICES = (True, False, "auto")
# denoiser -> {frozenset of split layer names: batched pass agreed with two passes}; a check
# is made once per network and set of split layers, not once per amplifier
_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


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
        batched: bool | str = "auto",
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
        # owner module -> its (parameter, dense tensor) pairs, for the batched pass
        owner_of = {
            id(param): module
            for module in denoiser.modules()
            for param in module.parameters(recurse=False)
        }
        self._owners: dict[int, tuple[nn.Module, list]] = {}
        for param, dense in self._pairs:
            module = owner_of[id(param)]
            self._owners.setdefault(id(module), (module, []))[1].append((param, dense))
        unsplittable = any(not isinstance(m, SPLITTABLE) for m, _ in self._owners.values())
        if batched not in BATCHED_CHOICES or not isinstance(batched, (bool, str)):
            raise UsageError(f"batched={batched!r}: use True, False or 'auto'")
        self.batched: bool | str = False if unsplittable else batched
        self.batched_steps = 0  # amplified steps run as one forward
        names = {id(m): n for n, m in denoiser.named_modules()}
        self._split_key = frozenset(names[key] for key in self._owners)
        known = _CHECKED.get(denoiser, {}).get(self._split_key)
        if known is False:
            self.batched = False
        self._checked = known is not None
        self._splitting = False
        self._owner_forwards: list[tuple[nn.Module, bool, object]] = []

    @property
    def mode(self) -> str:
        """``"batched"``, ``"auto"`` or ``"sequential"`` (after any fallback)."""
        return {True: "batched", False: "sequential", "auto": "auto"}[self.batched]

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
        if self.batched is not False:
            for owner, pairs in self._owners.values():
                had = "forward" in owner.__dict__
                self._owner_forwards.append((owner, had, owner.__dict__.get("forward")))
                owner.forward = self._split_forward(owner.forward, pairs)
        self._active = True
        return self

    def __exit__(self, *exc) -> None:
        module = self.denoiser
        if self._had_instance_forward:
            module.forward = self._saved_forward
        else:
            module.__dict__.pop("forward", None)
        for owner, had, saved in reversed(self._owner_forwards):
            if had:
                owner.forward = saved
            else:
                owner.__dict__.pop("forward", None)
        self._owner_forwards = []
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
        if w == 0.0:
            return self._dense_pass(inner, args, kwargs)
        if self.batched is not False:
            out_of_memory = False
            try:
                out = self._batched_pass(inner, args, kwargs, w)
            except torch.OutOfMemoryError:
                # twice the batch did not fit: the two passes need only the usual activations
                out, out_of_memory = None, True
            if out_of_memory:
                # outside the except block: the failed pass's tensors (held by the traceback
                # until then) are free now, and the cached blocks go back before the retry
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                self._fall_back("out of memory in the batched pass (twice the batch)")
            if out is not None:
                if not self._checked:
                    self._checked = True
                    reference = self._two_passes(inner, args, kwargs, w)
                    agrees = _close(_main(out), _main(reference))
                    _CHECKED.setdefault(self.denoiser, {})[self._split_key] = agrees
                    if not agrees:
                        self._fall_back(
                            f"the batched pass of {type(self.denoiser).__name__} differs from "
                            "two separate passes (a layer mixes samples across the batch)"
                        )
                        return reference
                return out
        return self._two_passes(inner, args, kwargs, w)

    def _fall_back(self, reason: str) -> None:
        self.batched = False
        warnings.warn(f"POA: {reason}; using two passes from now on", RuntimeWarning, stacklevel=3)

    def _two_passes(self, inner, args, kwargs, w: float):
        dense_out = self._dense_pass(inner, args, kwargs)
        pruned_out = inner(*args, **kwargs)
        return _combine(dense_out, pruned_out, w)

    def _batched_pass(self, inner, args, kwargs, w: float):
        """One forward over [inputs; inputs]: dense first half, pruned second half. ``None``
        when the batch size cannot be read from the inputs, or under ``"auto"`` when the batch
        is above :data:`AUTO_MAX_BATCH`."""
        first = (
            args[0]
            if args
            else next((kwargs[k] for k in ("sample", "hidden_states", "x") if k in kwargs), None)
        )
        if not isinstance(first, torch.Tensor) or first.ndim == 0:
            return None
        batch = first.shape[0]
        if self.batched == "auto" and batch > AUTO_MAX_BATCH:
            return None
        self._splitting = True
        try:
            out = inner(*_double(args, batch), **_double(kwargs, batch))
        finally:
            self._splitting = False
        both = _main(out)
        self.batched_steps += 1
        return _replace(out, _mix(both[:batch], both[batch:], w))

    def _split_forward(self, forward, pairs):
        def split(x, *args, **kwargs):
            if not self._splitting:
                return forward(x, *args, **kwargs)
            half = x.shape[0] // 2
            with _dense_weights(pairs):
                top = forward(x[:half], *args, **kwargs)
            return torch.cat((top, forward(x[half:], *args, **kwargs)))

        return split

    def _dense_pass(self, inner, args, kwargs):
        with _dense_weights(self._pairs):
            return inner(*args, **kwargs)

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


@contextmanager
def _dense_weights(pairs: Sequence[tuple[torch.nn.Parameter, torch.Tensor]]) -> Iterator[None]:
    """The parameters point at their dense tensors inside the block (no copy), back after."""
    saved = [param.data for param, _ in pairs]
    try:
        for param, dense in pairs:
            param.data = dense
        yield
    finally:
        for (param, _), pruned in zip(pairs, saved, strict=True):
            param.data = pruned


def _double(value, batch: int):
    """Every tensor whose first dimension is the batch, stacked on itself (through tuples,
    lists and dicts); anything else as it is."""
    if isinstance(value, torch.Tensor):
        if value.ndim >= 1 and value.shape[0] == batch:
            return torch.cat((value, value))
        return value
    if isinstance(value, dict):
        return {k: _double(v, batch) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(_double(v, batch) for v in value)
    return value


def _main(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, tuple):
        return out[0]
    if hasattr(out, "sample"):
        return out.sample
    raise TypeError(f"cannot combine denoiser outputs of type {type(out).__name__}")


def _replace(out, tensor: torch.Tensor):
    if isinstance(out, torch.Tensor):
        return tensor
    if isinstance(out, tuple):
        return (tensor, *out[1:])
    out.sample = tensor
    return out


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape:
        return False
    scale = b.detach().abs().max().float().clamp_min(1e-12)
    return bool(
        (a.detach().float() - b.detach().float()).abs().max() <= SELF_CHECK_TOLERANCE * scale
    )


def _combine(dense_out, pruned_out, w: float):
    return _replace(pruned_out, _mix(_main(dense_out), _main(pruned_out), w))


def num_train_timesteps_of(pipe) -> int:
    config = getattr(getattr(pipe, "scheduler", None), "config", None)
    value = getattr(config, "num_train_timesteps", None) if config is not None else None
    return int(value) if value else DEFAULT_NUM_TRAIN_TIMESTEPS
