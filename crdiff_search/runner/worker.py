"""What a trial worker process keeps loaded between trials, and how it scores one candidate.

The pipeline, the pruner (with its cached weight ordering) and the scorers are built once per
worker process and kept in a module-level cache keyed by the settings that determine them, so
a reused Ray actor (and any other trainable in the same process) never loads them again.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

_CACHE: dict[str, WorkerState] = {}
_LOCK = threading.Lock()
# Number of pipeline loads in this process (reported with every trial: one per worker is the goal).
LOADS = 0


def import_plugins(modules: Sequence[str], paths: Sequence[str] = ()) -> None:
    """Import the modules that register extra objectives (``register_objective``).

    ``paths`` are the folders the driver found them in (:func:`plugin_paths`): a worker on the
    same machine does not share the driver's ``sys.path``.
    """
    for path in paths:
        if path not in sys.path:
            sys.path.append(path)
    for name in modules:
        importlib.import_module(name)


def plugin_paths(modules: Sequence[str]) -> list[str]:
    """The ``sys.path`` roots the (already imported) plugin modules were loaded from."""
    roots = []
    for name in modules:
        top = sys.modules.get(name.split(".", 1)[0])
        origin = getattr(top, "__file__", None)
        if not origin:
            continue
        root = Path(origin).resolve().parent
        if Path(origin).name == "__init__.py":
            root = root.parent
        if str(root) not in roots:
            roots.append(str(root))
    return roots


def load_key(settings: Mapping[str, Any]) -> str:
    """The part of the settings that decides what a worker loads."""
    cfg = settings["config"]
    key = {
        "model": cfg["model"],
        "partition": cfg["partition"],
        "objective": cfg["objective"],
        "plugins": cfg.get("plugins", []),
        "seed": cfg["search"]["seed"],
    }
    return json.dumps(key, sort_keys=True, default=str)


@dataclass
class WorkerState:
    """A loaded pipeline, its pruner and scorers, plus the dense baseline once measured."""

    pipe: Any
    pruner: Any
    objectives: list  # [(name, weight, Objective)]
    group_sizes: dict[str, int]
    device: str
    load_seconds: float
    dense_scores: dict[str, np.ndarray] | None = None  # per objective, per image
    best_local: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    # ---- evaluation
    def generate(self, settings: Mapping[str, Any], start: int, stop: int) -> list:
        from crdiff_search.models import generate_images

        cfg = settings["config"]
        prompts = settings["prompts"][start:stop]
        seeds = settings["seeds"][start:stop]
        batch = cfg["prompts"]["batch_size"] or None
        return generate_images(
            self.pipe,
            prompts,
            seeds,
            width=settings["width"],
            height=settings["height"],
            steps=cfg["model"]["steps"],
            guidance=cfg["model"]["guidance"],
            batch_size=batch,
        )

    def score(self, images: Sequence[Any], prompts: Sequence[str]) -> dict[str, np.ndarray]:
        return {
            name: np.asarray(obj.score(images, prompts), dtype=np.float64)
            for name, _, obj in self.objectives
        }

    def combine(self, per_objective: Mapping[str, np.ndarray]) -> float:
        """The trial value: the weighted sum of each objective's aggregate."""
        total = 0.0
        for name, weight, obj in self.objectives:
            total += weight * float(obj.aggregate(per_objective[name]))
        return total

    def image_values(self, per_objective: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """Each image's share of the trial value (the weighted sum of its objective scores),
        whose mean is :meth:`combine`; ``None`` when an objective is a set metric (FID, KID) or
        aggregates otherwise than by the mean, so that no per-image value exists."""
        from objectives.base import Objective

        total = None
        for name, weight, obj in self.objectives:
            if (
                not getattr(obj, "per_image", True)
                or type(obj).aggregate is not Objective.aggregate
            ):
                return None
            part = weight * np.asarray(per_objective[name], dtype=np.float64)
            total = part if total is None else total + part
        return total

    def sparsity(self) -> tuple[float, dict[str, float]]:
        per_group = {g: float(v) for g, v in self.pruner.sparsity().items()}
        n = sum(self.group_sizes.values())
        overall = sum(per_group.get(g, 0.0) * k for g, k in self.group_sizes.items()) / max(n, 1)
        return overall, per_group

    def ensure_dense(self, settings: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Per-image dense scores on the study's prompts (measured once per process, with the
        dense weights: call only when no ratios are applied)."""
        if self.dense_scores is None:
            prompts = settings["prompts"]
            parts: dict[str, list] = {name: [] for name, _, _ in self.objectives}
            for start, stop in settings["chunks"]:
                images = self.generate(settings, start, stop)
                for name, scores in self.score(images, prompts[start:stop]).items():
                    parts[name].extend(scores.tolist())
            self.dense_scores = {k: np.asarray(v) for k, v in parts.items()}
        return self.dense_scores


def _swap_scheduler(pipe, name: str) -> None:
    from crdiff_search.config import SCHEDULERS

    cls_name = SCHEDULERS.get(name)
    if cls_name is None:
        return
    import diffusers

    cls = getattr(diffusers, cls_name)
    pipe.scheduler = cls.from_config(pipe.scheduler.config)


def _load(settings: Mapping[str, Any]) -> WorkerState:
    global LOADS
    import torch

    from crdiff_search.config import recipe_partition
    from crdiff_search.models import denoiser_of, load_pipeline, resolve_device
    from crdiff_search.pruning import Pruner
    from objectives import create_objective
    from search_spaces import build_partition

    cfg = settings["config"]
    import_plugins(cfg.get("plugins", []), settings.get("plugin_paths", []))
    t0 = time.perf_counter()
    device = str(resolve_device(cfg["model"]["device"]))
    pipe = load_pipeline(cfg["model"]["source"], dtype=cfg["model"]["dtype"], device=device)
    _swap_scheduler(pipe, cfg["model"]["scheduler"])
    denoiser = denoiser_of(pipe)
    part = cfg["partition"]
    partition = build_partition(denoiser, **recipe_partition(part))
    pruner = Pruner(denoiser, partition, criterion=part["criterion"], seed=cfg["search"]["seed"])
    params = dict(denoiser.named_parameters())
    sizes = {
        g: int(sum(params[n].numel() for n in names if n in params))
        for g, names in partition.groups.items()
    }
    obj_cfg = cfg["objective"]
    names = [obj_cfg["name"]] if isinstance(obj_cfg["name"], str) else list(obj_cfg["name"])
    options = obj_cfg.get("options", {})
    objectives = []
    for name, weight in zip(names, obj_cfg["weights"], strict=True):
        opts = options if len(names) == 1 else options.get(name, {})
        objectives.append((name, float(weight), create_objective(name, **opts)))
    if len(objectives) == 1:
        _, _, only = objectives[0]
        wanted = "max" if only.higher_is_better else "min"
        if settings["mode"] != wanted:
            from crdiff_search.errors import UsageError

            raise UsageError(
                f"objective {only.name or names[0]!r} is "
                f"{'higher' if only.higher_is_better else 'lower'}-is-better but "
                f"objective.mode = {settings['mode']!r}; set objective.mode = {wanted!r}"
            )
    LOADS += 1
    torch.set_grad_enabled(False)
    return WorkerState(
        pipe=pipe,
        pruner=pruner,
        objectives=objectives,
        group_sizes=sizes,
        device=device,
        load_seconds=time.perf_counter() - t0,
    )


def worker_state(settings: Mapping[str, Any]) -> tuple[WorkerState, bool]:
    """The process's loaded state for these settings, and whether this call loaded it."""
    key = load_key(settings)
    with _LOCK:
        state = _CACHE.get(key)
        if state is not None:
            return state, False
        # One model per process: drop states of other settings before loading a new one.
        _CACHE.clear()
        state = _load(settings)
        _CACHE[key] = state
        return state, True


def process_info() -> dict[str, int]:
    return {"worker_pid": os.getpid(), "worker_loads": LOADS}
