"""What a trial worker process keeps loaded between trials, and how it scores one candidate.

The pipeline, the pruner (with its cached weight ordering) and the objective are built once per
worker process from a :class:`~crdiff_search.runner.spec.WorkerSpec` and kept in a module-level
cache keyed by :meth:`WorkerSpec.load_key`, so a reused Ray actor (and any other trainable in
the same process) never loads them again.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crdiff_search.plugins import import_modules
from crdiff_search.runner.spec import WorkerSpec

_CACHE: dict[str, WorkerState] = {}
_LOCK = threading.Lock()
# Number of pipeline loads in this process (reported with every trial: one per worker is the goal).
LOADS = 0


@dataclass
class WorkerState:
    """A loaded pipeline, its pruner and objective, plus the dense model's per-image scores
    for each prompt set measured so far."""

    pipe: Any
    pruner: Any
    objective: Any  # a CompositeObjective over the spec's terms
    group_sizes: dict[str, int]
    device: str
    load_seconds: float
    dense: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # by images_key
    best_local: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    # ---- evaluation
    def generate(self, spec: WorkerSpec, start: int, stop: int) -> list:
        from crdiff_search.models import generate_images

        return generate_images(
            self.pipe,
            list(spec.prompts[start:stop]),
            list(spec.seeds[start:stop]),
            width=spec.width,
            height=spec.height,
            steps=spec.steps,
            guidance=spec.guidance,
            batch_size=spec.batch_size,
        )

    def score(self, images: Sequence[Any], prompts: Sequence[str]) -> dict[str, np.ndarray]:
        """Each objective term's per-image scores, keyed by term label."""
        return self.objective.raw_scores(images, list(prompts))

    def combine(self, per_term: Mapping[str, np.ndarray], dense=None) -> float:
        """The trial value (the objective's weighted sum; relative terms against ``dense``)."""
        return self.objective.combine(per_term, dense)

    def image_values(self, per_term: Mapping[str, np.ndarray], dense=None) -> np.ndarray | None:
        return self.objective.image_values(per_term, dense)

    def term_values(self, per_term: Mapping[str, np.ndarray], dense=None) -> dict[str, float]:
        return self.objective.term_values(per_term, dense)

    def sparsity(self) -> tuple[float, dict[str, float]]:
        per_group = {g: float(v) for g, v in self.pruner.sparsity().items()}
        n = sum(self.group_sizes.values())
        overall = sum(per_group.get(g, 0.0) * k for g, k in self.group_sizes.items()) / max(n, 1)
        return overall, per_group

    def dense_scores(self, spec: WorkerSpec) -> dict[str, np.ndarray] | None:
        """The dense model's per-image scores on the spec's prompts, if measured here."""
        return self.dense.get(spec.images_key())

    def set_dense(self, spec: WorkerSpec, scores: Mapping[str, np.ndarray]) -> None:
        self.dense[spec.images_key()] = {k: np.asarray(v) for k, v in scores.items()}

    def ensure_dense(self, spec: WorkerSpec) -> dict[str, np.ndarray]:
        """Per-image dense scores on the spec's prompts (measured once per process, with the
        dense weights: call only when no ratios are applied)."""
        known = self.dense_scores(spec)
        if known is not None:
            return known
        parts: dict[str, list] = {}
        for start, stop in spec.chunks:
            images = self.generate(spec, start, stop)
            for name, scores in self.score(images, spec.prompts[start:stop]).items():
                parts.setdefault(name, []).extend(scores.tolist())
        self.set_dense(spec, parts)
        return self.dense_scores(spec)


def _swap_scheduler(pipe, name: str) -> None:
    from crdiff_search.names import SCHEDULERS

    cls_name = SCHEDULERS.get(name)
    if cls_name is None:
        return
    import diffusers

    cls = getattr(diffusers, cls_name)
    pipe.scheduler = cls.from_config(pipe.scheduler.config)


def _load(spec: WorkerSpec) -> WorkerState:
    global LOADS
    import torch

    from crdiff_search.models import denoiser_of, load_pipeline, resolve_device
    from crdiff_search.objectives.composite import CompositeObjective
    from crdiff_search.pruning import Pruner

    import_modules(spec.plugins, spec.plugin_paths)
    t0 = time.perf_counter()
    device = str(resolve_device(spec.device))
    pipe = load_pipeline(spec.source, dtype=spec.dtype, device=device)
    _swap_scheduler(pipe, spec.scheduler)
    denoiser = denoiser_of(pipe)
    partition = spec.partition.build(denoiser)
    pruner = Pruner(denoiser, partition, criterion=spec.criterion, seed=spec.seed, **spec.pruner)
    if spec.attention_scaling is not None:  # on in every trial of this study, the dense one too
        from crdiff_search.attention_scaling import EntropyScaling

        EntropyScaling(denoiser).attach()
    params = dict(denoiser.named_parameters())
    sizes = {
        g: int(sum(params[n].numel() for n in names if n in params))
        for g, names in partition.groups.items()
    }
    objective = CompositeObjective(terms=spec.terms)
    LOADS += 1
    torch.set_grad_enabled(False)
    return WorkerState(
        pipe=pipe,
        pruner=pruner,
        objective=objective,
        group_sizes=sizes,
        device=device,
        load_seconds=time.perf_counter() - t0,
    )


def worker_state(spec: WorkerSpec) -> tuple[WorkerState, bool]:
    """The process's loaded state for this spec, and whether this call loaded it."""
    key = spec.load_key()
    with _LOCK:
        state = _CACHE.get(key)
        if state is not None:
            return state, False
        # One model per process: drop states of other specs before loading a new one.
        _CACHE.clear()
        state = _load(spec)
        _CACHE[key] = state
        return state, True


def process_info() -> dict[str, int]:
    return {"worker_pid": os.getpid(), "worker_loads": LOADS}
