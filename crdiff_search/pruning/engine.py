"""The :class:`Pruner`: apply ``{group: ratio}`` to a loaded model in place, and undo it.

Design (measured on the SD1.5 UNet, see ``benchmarks/pruning.py``):

* Every selected tensor exists twice: the dense values and a work buffer. Every ``apply_``
  computes the work buffer from the dense values, so applying B after A gives exactly B. With
  ``swap=True`` (default) the parameter *points* at the dense tensor or at the work buffer
  (``param.data = ...``): ``restore_`` is a pointer swap (bit exact, no copy) and a move costs one
  pass over the weights. ``swap=False`` keeps the parameter's storage fixed (for compiled or
  captured graphs) and restores by ``copy_``.
* ``cache="sorted"`` also keeps, per threshold pool (a group, or a tensor for per-tensor
  criteria), the sorted scores. A new ratio then costs an index lookup for the threshold plus one
  fused masked copy per tensor; no ``kthvalue`` and no reload. ``cache="none"`` drops the sorted
  scores (about half the extra memory) and runs ``kthvalue`` on each apply.
* Pools whose ``k = int(N * ratio)`` did not change since the last call are left as they are, so
  moving one ratio (a simulated-annealing neighbour) touches one group only.

* ``cache="histogram"`` keeps, per pool, a histogram of the scores' bit patterns instead (a
  float's bits order like its value): 2^15 or 2^16 counts, exact for fp16/bf16 scores, and for
  fp32 a 16-bit first level plus one pass over the pool for the low bits of a new bucket. No
  sort, no copy of the scores, and a transient of one tensor's size: the layout for a GPU, where
  ``torch.sort`` of a group allocates its values plus int64 indices at once.
* ``backup="host"`` keeps the dense copy in pinned host memory and prunes the parameter in place
  (copy back over PCIe, then mask): no second copy on the accelerator. ``backup="device"`` keeps
  both copies on the model's device (the fastest move). ``"auto"`` (default): on CPU ``device``;
  on an accelerator ``device`` while the selected weights fit ``device_budget`` (a share of the
  model's bytes, or bytes), else ``host``. ``cache="auto"``: ``sorted`` on CPU, ``histogram`` on
  an accelerator.

The engine assumes it is the only writer of the selected weights between calls.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from crdiff_search.errors import UsageError
from crdiff_search.names import PRUNER_BACKUP_MODES, PRUNER_CACHE_MODES
from crdiff_search.pruning.criteria import Criterion, create_criterion, resolve_criterion
from crdiff_search.pruning.ratios import validate_ratios
from crdiff_search.pruning.select import SUPPORTED as HISTOGRAM_DTYPES
from crdiff_search.pruning.select import BitHistogram

CACHE_MODES = PRUNER_CACHE_MODES
BACKUP_MODES = PRUNER_BACKUP_MODES
# backup="auto" on an accelerator: the dense copy stays there while the selected weights are at
# most this share of the model's bytes (SD1.5's paper partition: 0.23; SDXL's: 0.64)
DEVICE_BUDGET = 0.25


@dataclass
class _Pool:
    """Tensors sharing one threshold."""

    group: str
    names: tuple[str, ...]
    numel: int
    dtype: torch.dtype
    sorted_scores: torch.Tensor | None = None
    histogram: BitHistogram | None = None  # with cache="histogram"


class Pruner:
    """Block-wise pruning of one model, reversible and cheap to re-target.

    >>> from crdiff_search.testing import tiny_unet
    >>> from search_spaces import build_partition
    >>> unet = tiny_unet()
    >>> pruner = Pruner(unet, build_partition(unet, "paper"))
    >>> with pruner.pruned({"down": 0.3, "up": 0.5}):
    ...     round(pruner.sparsity()["up"], 2)
    0.5
    >>> pruner.current_ratios
    {'down': 0.0, 'mid': 0.0, 'up': 0.0}

    ``model`` is the denoiser (or a pipeline holding one); ``partition`` a
    :class:`search_spaces.Partition` of it (or a granularity name). Build the Pruner after moving
    or casting the model: the dense copy lives on the model's device (``backup="device"``) or in
    pinned host memory (``backup="host"``), in the model's dtype. With ``swap=True`` the selected
    parameters alternate between two storages (the parameter objects stay the same); pass
    ``swap=False`` when something captured their storage (CUDA graphs); the host backup always
    prunes in place. ``cache`` picks how thresholds are found (``sorted``, ``histogram``,
    ``none``: ``kthvalue`` per new ratio); ``device_budget`` (a share of the model's bytes, or
    bytes when above 1) decides ``backup="auto"`` on an accelerator. See the module docstring.
    """

    def __init__(
        self,
        model,
        partition,
        *,
        criterion: str | Criterion = "auto",
        cache: str = "auto",
        seed: int = 0,
        swap: bool = True,
        backup: str = "auto",
        device_budget: float = DEVICE_BUDGET,
    ) -> None:
        if cache not in CACHE_MODES:
            raise UsageError(f"unknown cache mode {cache!r}; valid: {', '.join(CACHE_MODES)}")
        if backup not in BACKUP_MODES:
            raise UsageError(f"unknown backup {backup!r}; valid: {', '.join(BACKUP_MODES)}")
        if isinstance(device_budget, bool) or not (
            isinstance(device_budget, int | float) and device_budget >= 0
        ):
            raise UsageError(
                f"device_budget must be a share of the model's bytes (0-1) or a number of bytes "
                f"(> 1), got {device_budget!r}"
            )
        if not isinstance(model, nn.Module):
            from crdiff_search.models import denoiser_of

            model = denoiser_of(model)
        if isinstance(partition, str):
            from crdiff_search.search_spaces import build_partition

            partition = build_partition(model, partition)
        if isinstance(criterion, str):
            criterion = resolve_criterion(
                criterion, partition.granularity, partition.model_class or type(model).__name__
            )
        self.criterion = create_criterion(criterion, seed=seed)
        self.model = model
        self.partition = partition
        params = dict(model.named_parameters())
        missing = [n for n in partition.param_names if n not in params]
        if missing:
            raise UsageError(
                f"partition {partition.name!r} names {len(missing)} parameter(s) this "
                f"{type(model).__name__} does not have, e.g. {missing[0]!r}; build the partition "
                "from this model"
            )
        self._params: dict[str, nn.Parameter] = {n: params[n] for n in partition.param_names}
        bad = [n for n, p in self._params.items() if not p.is_floating_point() or p.is_meta]
        if bad:
            raise UsageError(f"cannot prune {bad[0]!r}: not a floating-point tensor with data")
        devices = {p.device for p in self._params.values()}
        if len(devices) > 1:
            raise UsageError(
                f"the selected weights are on {len(devices)} devices ({sorted(map(str, devices))}); "
                "move the model to one device before building the Pruner"
            )
        self.device = devices.pop() if devices else torch.device("cpu")
        on_host = self.device.type == "cpu"
        selected = sum(p.numel() * p.element_size() for p in self._params.values())
        model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        budget = device_budget * model_bytes if device_budget <= 1 else device_budget
        if backup == "auto":
            backup = "device" if on_host or selected <= budget else "host"
        if cache == "auto":
            cache = "sorted" if on_host else "histogram"
        self.cache = cache
        self.backup = backup
        # with the dense copy on the host the parameter keeps its storage (pruned in place);
        # on CPU "host" is a separate copy in the same memory, the same code path
        self.host_backup = backup == "host"
        self.swap = bool(swap) and not self.host_backup
        with torch.no_grad():
            if self.host_backup:
                pin = torch.cuda.is_available() and self.device.type == "cuda"
                self._dense = {
                    n: torch.empty(p.shape, dtype=p.dtype, pin_memory=pin).copy_(p.data)
                    for n, p in self._params.items()
                }
                self._work = {n: p.data for n, p in self._params.items()}
            elif self.swap:
                # the model's own storage becomes the dense copy; pruned values go to a new buffer
                self._dense = {n: p.data for n, p in self._params.items()}
                self._work = {n: torch.empty_like(d) for n, d in self._dense.items()}
            else:
                self._dense = {n: p.detach().clone() for n, p in self._params.items()}
                self._work = {n: p.data for n, p in self._params.items()}
            self._dense_zeros = {
                n: int(torch.count_nonzero(d == 0)) for n, d in self._dense.items()
            }
            self._pools = self._make_pools()
            if cache == "sorted":
                for pool in self._pools:
                    pool.sorted_scores = self._sorted_scores(pool)
            elif cache == "histogram":
                for pool in self._pools:
                    pool.histogram = self._histogram(pool)
        self._k = [0] * len(self._pools)
        # last (k, threshold) per pool: keep_masks right after apply_ costs no kthvalue
        self._last: list[tuple[int, torch.Tensor] | None] = [None] * len(self._pools)
        self._ratios = dict.fromkeys(self.groups, 0.0)

    # -- public API ---------------------------------------------------------------------------

    @property
    def groups(self) -> tuple[str, ...]:
        return self.partition.group_names

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(self._params)

    @property
    def current_ratios(self) -> dict[str, float]:
        return dict(self._ratios)

    def apply_(self, ratios: Mapping[str, float]) -> Pruner:
        """Prune in place to ``ratios`` (groups not given: 0.0), always from the dense weights."""
        ratios = validate_ratios(ratios, self.groups)
        self._check_params()
        with torch.no_grad():
            for i, pool in enumerate(self._pools):
                k = int(pool.numel * ratios[pool.group])
                if k == self._k[i]:
                    continue
                if k == 0:
                    self._restore_pool(pool)
                else:
                    threshold = self._threshold(i, k)
                    for name in pool.names:
                        work = self._work[name]
                        if self.host_backup:
                            work.copy_(self._dense[name], non_blocking=True)
                            self.criterion.prune_into(name, work, threshold, work)
                        else:
                            self.criterion.prune_into(name, self._dense[name], threshold, work)
                            self._params[name].data = work
                self._k[i] = k
        self._ratios = ratios
        return self

    def restore_(self) -> Pruner:
        """Put the dense weights back, bit for bit."""
        self._check_params()
        with torch.no_grad():
            for i, pool in enumerate(self._pools):
                if self._k[i]:
                    self._restore_pool(pool)
                    self._k[i] = 0
        self._ratios = dict.fromkeys(self.groups, 0.0)
        return self

    @contextmanager
    def pruned(self, ratios: Mapping[str, float]) -> Iterator[Pruner]:
        """Pruned to ``ratios`` inside the block; the previous state (dense or other ratios) after."""
        previous = self.current_ratios
        self.apply_(ratios)
        try:
            yield self
        finally:
            if any(previous.values()):
                self.apply_(previous)
            else:
                self.restore_()

    def keep_masks(self, ratios: Mapping[str, float]) -> dict[str, torch.Tensor]:
        """``{param name: bool mask of kept elements}`` for the tensors ``ratios`` prune.

        Tensors whose pool prunes nothing (ratio 0, or ``int(N * ratio) == 0``) are left out.
        The model is not touched.
        """
        ratios = validate_ratios(ratios, self.groups)
        masks: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for i, pool in enumerate(self._pools):
                k = int(pool.numel * ratios[pool.group])
                if k == 0:
                    continue
                threshold = self._threshold(i, k)
                for name in pool.names:
                    masks[name] = self.criterion.keep_mask(
                        name, self._dense_on_device(name), threshold
                    )
        return masks

    def dense_tensor(self, param_name: str) -> torch.Tensor:
        """The saved dense weight (the engine's own tensor, no copy: read it, never modify it;
        with ``swap=True`` it is the parameter's storage whenever the group is dense; with
        ``backup="host"`` on an accelerator it lives in host memory: see
        :meth:`dense_tensor_on_device`)."""
        try:
            return self._dense[param_name]
        except KeyError:
            raise UsageError(
                f"{param_name!r} is not a pruned parameter of partition {self.partition.name!r} "
                f"({len(self._dense)} parameters; see Pruner.param_names)"
            ) from None

    def dense_tensor_on_device(self, param_name: str) -> torch.Tensor:
        """The dense weight on the model's device: the saved tensor itself, or a copy of it when
        the backup is in host memory (what POA's dense pass needs)."""
        self.dense_tensor(param_name)
        return self._dense_on_device(param_name)

    def sparsity(self) -> dict[str, float]:
        """Achieved fraction of zero weights per group, counted in the model now."""
        zeros = dict.fromkeys(self.groups, 0)
        numel = dict.fromkeys(self.groups, 0)
        for group, names in self.partition.groups.items():
            for name in names:
                p = self._params[name]
                zeros[group] += p.numel() - int(torch.count_nonzero(p))
                numel[group] += p.numel()
        return {g: zeros[g] / numel[g] for g in self.groups}

    def report(self):
        """Per-tensor table: group, param, shape, numel, requested, zeros, pruned, sparsity.

        ``pruned`` counts zeros the pruning added (dense zeros excluded). Aggregate with
        :func:`crdiff_search.pruning.group_table`.
        """
        import pandas as pd

        rows = []
        for group, names in self.partition.groups.items():
            for name in names:
                p = self._params[name]
                zeros = p.numel() - int(torch.count_nonzero(p))
                rows.append(
                    {
                        "group": group,
                        "param": name,
                        "shape": "x".join(str(s) for s in p.shape),
                        "numel": p.numel(),
                        "requested": self._ratios[group],
                        "zeros": zeros,
                        "pruned": zeros - self._dense_zeros[name],
                        "sparsity": zeros / p.numel(),
                    }
                )
        return pd.DataFrame(rows)

    def extra_memory_bytes(self) -> dict[str, int]:
        """Bytes the engine adds to the model: the second copy of the selected tensors (work
        buffer or dense backup), the sorted-score cache and the histograms; ``device`` is the
        part on the model's device, ``host`` the part in host memory."""
        backup = sum(t.numel() * t.element_size() for t in self._dense.values())
        cache = sum(
            p.sorted_scores.numel() * p.sorted_scores.element_size()
            for p in self._pools
            if p.sorted_scores is not None
        )
        histograms = sum(p.histogram.nbytes for p in self._pools if p.histogram is not None)
        total = backup + cache + histograms
        if self.device.type == "cpu":
            on_device = total
        else:  # the sorted scores live where the backup does; the histograms on the host
            on_device = 0 if self.host_backup else backup + cache
        return {
            "backup": backup,
            "sorted_cache": cache,
            "histograms": histograms,
            "total": total,
            "device": on_device,
            "host": total - on_device,
        }

    def __repr__(self) -> str:
        return (
            f"Pruner({type(self.model).__name__}, partition={self.partition.name!r}, "
            f"criterion={self.criterion.name!r}, cache={self.cache!r}, backup={self.backup!r}, "
            f"swap={self.swap}, "
            f"groups={list(self.groups)})"
        )

    # -- internals ------------------------------------------------------------------------------

    def _restore_pool(self, pool: _Pool) -> None:
        for name in pool.names:
            if self.swap:
                self._params[name].data = self._dense[name]
            else:
                self._params[name].data.copy_(self._dense[name], non_blocking=self.host_backup)

    def _dense_on_device(self, name: str) -> torch.Tensor:
        dense = self._dense[name]
        if dense.device == self.device:
            return dense
        return dense.to(self.device, non_blocking=True)

    def _tensor_score(self, pool: _Pool, name: str, dense: torch.Tensor) -> torch.Tensor:
        """One tensor's scores: 1-D, on the model's device, in the pool's dtype."""
        out = torch.empty(dense.numel(), dtype=pool.dtype, device=self.device)
        self.criterion.scores_into(name, dense, out)
        return out

    def _tensor_scores(self, pool: _Pool) -> Iterator[torch.Tensor]:
        """The pool's scores tensor by tensor (one tensor's transient at a time)."""
        for name in pool.names:
            yield self._tensor_score(pool, name, self._dense_on_device(name))

    def _histogram(self, pool: _Pool) -> BitHistogram | None:
        if pool.dtype not in HISTOGRAM_DTYPES:
            return None  # float64 scores: kthvalue per new k
        histogram = BitHistogram(pool.dtype)
        for scores in self._tensor_scores(pool):
            histogram.add(scores)
        return histogram

    def _make_pools(self) -> list[_Pool]:
        pools = []
        for group, names in self.partition.groups.items():
            units = [(n,) for n in names] if self.criterion.per_tensor else [tuple(names)]
            for unit in units:
                dtype = self.criterion.score_dtype(self._dense[n].dtype for n in unit)
                numel = sum(self._dense[n].numel() for n in unit)
                pools.append(_Pool(group, unit, numel, dtype))
        return pools

    def _scores(self, pool: _Pool) -> torch.Tensor:
        """All scores of a pool in one 1-D tensor: on the model's device, or in host memory
        when the dense backup is there (the sorted cache then lives on the host too)."""
        device = self._dense[pool.names[0]].device
        buf = torch.empty(pool.numel, dtype=pool.dtype, device=device)
        offset = 0
        for name in pool.names:
            dense = self._dense_on_device(name)
            part = buf[offset : offset + dense.numel()]
            if device == self.device:
                self.criterion.scores_into(name, dense, part)  # straight into the buffer
            else:  # scored where the model is (random scores depend on it), kept on the host
                part.copy_(self._tensor_score(pool, name, dense))
            offset += dense.numel()
        return buf

    def _sorted_scores(self, pool: _Pool) -> torch.Tensor:
        buf = self._scores(pool)
        if buf.device.type != "cpu":
            return torch.sort(buf).values
        # numpy sorts in place without the int64 indices torch.sort allocates, and ~5x faster
        # on CPU; fp16/bf16 go through float32, which orders them identically and casts back exactly.
        if buf.dtype in (torch.float32, torch.float64):
            buf.numpy().sort(kind="quicksort")
            return buf
        wide = buf.to(torch.float32)
        wide.numpy().sort(kind="quicksort")
        return buf.copy_(wide)

    def _threshold(self, index: int, k: int) -> torch.Tensor:
        """The k-th smallest score of pool ``index`` (1-based, like ``torch.kthvalue``)."""
        pool = self._pools[index]
        if pool.sorted_scores is not None:
            return pool.sorted_scores[k - 1]
        last = self._last[index]
        if last is not None and last[0] == k:
            return last[1]
        if pool.histogram is not None:
            threshold = pool.histogram.kth(k, lambda: self._tensor_scores(pool))
        else:
            threshold = torch.kthvalue(self._scores(pool), k).values
        self._last[index] = (k, threshold)
        return threshold

    def _check_params(self) -> None:
        for name, p in self._params.items():
            d = self._dense[name]
            if p.device != self.device or d.dtype != p.dtype or d.shape != p.shape:
                raise RuntimeError(
                    f"{name!r} changed device, dtype or shape since the Pruner was built "
                    f"({d.dtype} on {self.device} -> {p.dtype} on {p.device}); build a new "
                    "Pruner after moving or casting the model"
                )
            if self.swap and p.data_ptr() not in (d.data_ptr(), self._work[name].data_ptr()):
                raise RuntimeError(
                    f"{name!r} was given new storage since the Pruner was built (weights loaded "
                    "or swapped by other code); build a new Pruner"
                )
