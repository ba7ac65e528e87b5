"""What a worker needs, built once in the driver: :class:`WorkerSpec`.

The driver resolves the experiment (absolute model path, partition as recipes spell it, the
objective's terms, prompts, seeds and chunks) into this frozen, picklable value; trial workers
and re-rank tasks read its fields and re-derive nothing.

>>> spec = WorkerSpec.from_config(config, groups=("down", "mid", "up"))
>>> held_out = WorkerSpec.from_config(config, prompts=["a red square"], seeds=[7])
>>> spec.load_key() == held_out.load_key()  # same loaded model, other images
True
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crdiff_search.objectives.composite import Term
from crdiff_search.plugins import module_roots
from crdiff_search.recipe import PartitionSpec


@dataclass(frozen=True)
class TrackingTarget:
    """Where trial runs go in MLflow: the store, the experiment and the study's parent run."""

    uri: str
    experiment: str
    parent_run_id: str


@dataclass(frozen=True)
class WorkerSpec:
    # ---- what is loaded (see load_key)
    source: str  # "testbed", an absolute local folder, or a hub id
    dtype: str
    device: str
    scheduler: str
    partition: PartitionSpec
    criterion: str
    seed: int
    terms: tuple[Term, ...]  # the objective: a weighted sum, relative terms included
    mode: str  # "max" or "min"
    # the pruner's memory layout (see Resources)
    pruner: Mapping[str, Any] = field(default_factory=dict)
    failed_image_score: float | None = None  # see ObjectiveSpec.failed_image_score
    # attached to the denoiser for the worker's life (search.repair): None or "entropy"
    attention_scaling: str | None = None
    plugins: tuple[str, ...] = ()
    plugin_paths: tuple[str, ...] = ()
    # ---- what is generated
    steps: int = 8
    guidance: float = 0.0
    batch_size: int | None = None
    width: int = 32
    height: int = 32
    prompts: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()
    chunks: tuple[tuple[int, int], ...] = ()
    # ---- the study
    groups: tuple[str, ...] = ()
    tracking: TrackingTarget | None = None
    # trials finished by an earlier run of the driver: {trial_id: {"ratios", "metrics"}}
    completed: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config, *, prompts=None, seeds=None, **fields: Any) -> WorkerSpec:
        """The spec of ``config`` (an :class:`~crdiff_search.config.ExperimentConfig`); prompts
        and seeds default to the study's own, chunks to the study's chunk size."""
        prompts = list(config.prompt_list() if prompts is None else prompts)
        seeds = list(config.seed_list() if seeds is None else seeds)
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        size = config.prompts.chunk_size or len(prompts) or 1
        model = config.model
        fields.setdefault("attention_scaling", config.search.attention_scaling)
        return cls(
            source=absolute_source(model.source),
            dtype=model.dtype,
            device=model.device,
            scheduler=model.scheduler,
            partition=config.partition.spec,
            criterion=config.partition.criterion,
            seed=config.search.seed,
            pruner={
                "cache": config.resources.pruner_cache,
                "backup": config.resources.pruner_backup,
                "device_budget": config.resources.pruner_device_budget,
            },
            terms=objective_terms(config.objective),
            mode=config.objective.mode,
            failed_image_score=config.objective.failed_image_score,
            plugins=tuple(config.plugins),
            plugin_paths=tuple(module_roots(config.plugins)),
            steps=model.steps,
            guidance=model.guidance,
            batch_size=config.prompts.batch_size or None,
            width=config.width,
            height=config.height,
            prompts=tuple(prompts),
            seeds=tuple(seeds),
            chunks=tuple((i, min(i + size, len(prompts))) for i in range(0, len(prompts), size)),
            **fields,
        )

    def load_key(self) -> str:
        """The fields that decide what a worker loads: equal keys share one loaded model."""
        key = {
            "source": self.source,
            "dtype": self.dtype,
            "device": self.device,
            "scheduler": self.scheduler,
            "partition": self.partition.to_dict(),
            "criterion": self.criterion,
            "attention_scaling": self.attention_scaling,
            "pruner": dict(self.pruner),
            "seed": self.seed,
            "terms": [dataclasses.asdict(t) for t in self.terms],
            "plugins": list(self.plugins),
        }
        return json.dumps(key, sort_keys=True, default=str)

    def images_key(self) -> str:
        """The fields that decide the images of the dense model (its per-image scores)."""
        key = [self.load_key(), self.steps, self.guidance, self.width, self.height]
        key += [list(self.prompts), list(self.seeds)]
        return hashlib.sha256(json.dumps(key, default=str).encode()).hexdigest()

    @property
    def relative(self) -> bool:
        """Whether a term is scored relative to the dense model."""
        return any(t.relative for t in self.terms)


def objective_terms(objective) -> tuple[Term, ...]:
    """The terms of an experiment's ``[objective]``: one per name with its weight, options and
    ``relative`` flag; an objective named ``composite`` stands for its own ``terms``."""
    from crdiff_search.objectives.composite import parse_terms

    if objective.names == ("composite",):
        options = objective.options_for("composite")
        return tuple(parse_terms(options.get("terms", ())))
    relative = set(getattr(objective, "relative", ()))
    return tuple(
        Term(name, float(weight), name in relative, objective.options_for(name))
        for name, weight in zip(objective.names, objective.weights, strict=True)
    )


def absolute_source(source: str) -> str:
    """A local model folder as an absolute path (workers do not share the driver's folder)."""
    local = Path(source).expanduser()
    return str(local.resolve()) if source != "testbed" and local.exists() else source


def slice_scores(scores: Mapping[str, Sequence[float]], n: int) -> dict[str, Any]:
    return {k: v[:n] for k, v in scores.items()}
