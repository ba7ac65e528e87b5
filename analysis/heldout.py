"""One held-out set, scored: what every measurement script of this folder starts from.

A :class:`HeldOut` is a study's model and objective at one resolution on a fixed set of
prompts and generation seeds (by default the study's ``[rerank]`` set, the one every verdict of
the repair map uses). It scores the dense model once and any candidate (pruning ratios, a POA
weight, attention scaling) on demand, per image, remembering what it scored, and gives the
paired difference of a candidate against the dense model or against another candidate::

    held = HeldOut.at("24x24", n_prompts=128)
    gain = held.versus({"down": 0.95, "mid": 0.68, "up": 0.22})   # against dense
    print(gain["delta"], gain["ci_low"], gain["ci_high"])
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

Candidate = Mapping[str, float] | None


class HeldOut:
    """Per-image scores of candidates on one prompt set, memoised.

    A candidate is its pruning ratios (``None`` or all zeros: no pruning), a POA weight ``w``
    and an ``attention_scaling`` (``None`` or ``"entropy"``). The dense model (no pruning, no
    POA, no scaling) is the reference.
    """

    def __init__(self, config, prompts: Sequence[str], seeds: Sequence[int]):
        from crdiff_search.errors import UsageError
        from crdiff_search.model_info import group_names
        from crdiff_search.rerank import task_spec

        groups = group_names(config)
        if not groups:
            raise UsageError(
                f"model.source {config.model.source!r}: its partition's groups are not known "
                "(the model's config files are not on this machine, or the partition is empty)"
            )
        self.groups: tuple[str, ...] = groups
        self.config = config
        self.prompts = list(prompts)
        self.seeds = list(seeds)
        self.spec = task_spec(config, self.prompts, self.seeds)
        self.maximize = config.objective.mode != "min"
        self.seconds: dict[tuple, float] = {}
        self._memo: dict[tuple, np.ndarray] = {}

    @classmethod
    def at(
        cls,
        resolution: str,
        *,
        experiment: str | None = None,
        n_prompts: int | None = None,
        **overrides: Any,
    ) -> HeldOut:
        """The held-out set of ``experiment`` (the embedded testbed study when ``None``) at
        ``resolution``: its ``[rerank]`` prompts (``n_prompts`` of them when given). Tracking
        is off; ``overrides`` are further dotted config keys."""
        from crdiff_search.config import load_experiment

        settings = {"tracking.enabled": False, **overrides}
        config = load_experiment(experiment, resolution=resolution, **settings)
        return cls.of(config, n_prompts=n_prompts)

    @classmethod
    def of(cls, config, *, n_prompts: int | None = None) -> HeldOut:
        """The held-out set of a loaded study ``config`` (its ``[rerank]`` prompts; for the
        testbed, captions none of its search prompts)."""
        from crdiff_search.rerank import heldout_prompts

        prompts, seeds = heldout_prompts(config, n=n_prompts)
        return cls(config, prompts, seeds)

    def key(
        self, ratios: Candidate = None, *, w: float = 1.0, attention_scaling: str | None = None
    ) -> tuple:
        """The memo key: rounded ratios (all zeros and ``None`` alike), weight and scaling."""
        values = tuple(round(float((ratios or {}).get(g, 0.0)), 6) for g in self.groups)
        if ratios:
            unknown = sorted(set(ratios) - set(self.groups))
            if unknown:
                raise ValueError(f"unknown ratio groups {unknown}; this model has {self.groups}")
        return (values, round(float(w), 6), attention_scaling)

    def scores(
        self, ratios: Candidate = None, *, w: float = 1.0, attention_scaling: str | None = None
    ) -> np.ndarray:
        """Per-image scores of the candidate (the dense model when every part is neutral)."""
        from crdiff_search.rerank import evaluate_candidate

        key = self.key(ratios, w=w, attention_scaling=attention_scaling)
        if key not in self._memo:
            values, weight, scaling = key
            neutral = not any(values) and weight == 1.0 and scaling is None
            candidate = None
            if not neutral:
                candidate = {
                    "trial_id": "heldout",
                    "ratios": dict(zip(self.groups, values, strict=True)),
                    "attention_scaling": scaling,
                }
            t0 = time.perf_counter()
            result = evaluate_candidate(self.spec, candidate, (weight,))[0]
            self.seconds[key] = round(time.perf_counter() - t0, 1)
            self._memo[key] = np.asarray(result["image_scores"], dtype=np.float64)
        return self._memo[key]

    def score(self, ratios: Candidate = None, **kw: Any) -> float:
        """The candidate's mean score."""
        return float(self.scores(ratios, **kw).mean())

    @property
    def dense(self) -> np.ndarray:
        return self.scores(None)

    def versus(
        self, ratios: Candidate = None, *, reference: np.ndarray | None = None, **kw: Any
    ) -> dict[str, float]:
        """Paired difference of the candidate against ``reference`` per-image scores (the
        dense model's by default): ``delta``, its 95 % bootstrap ``ci_low``/``ci_high``, the
        Wilcoxon ``p`` and ``wins``/``ties``/``losses``."""
        from crdiff_search.analysis.stats import paired_difference

        base = self.dense if reference is None else reference
        return paired_difference(self.scores(ratios, **kw), base, maximize=self.maximize)
