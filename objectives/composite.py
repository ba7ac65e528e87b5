"""A weighted sum of scorers, each optionally relative to the dense model's score.

``terms`` lists the parts: ``{"name": ..., "weight": ..., "relative": bool, "options": {...}}``
(or the shorthand ``{"imagereward": 1.0, "clip": 0.01}``). Each part is built with
:func:`objectives.create_objective`, so a scorer shared with another objective is loaded once.
Weights multiply the scores as they are: give lower-is-better scorers a negative weight.

A relative part scores ``score(image) - score(dense image)``, where the dense image is the
unpruned model's image for the same prompt and seed (common random numbers). Call
:meth:`CompositeObjective.set_dense` once with the dense images; candidate images are matched to
them by prompt, the k-th image of a prompt in a ``score`` call to the k-th dense image of that
prompt (so a call holds all images of its prompts, in seed order, as the dense call did).

Example::

    obj = CompositeObjective(terms=[{"name": "imagereward", "weight": 1.0, "relative": True},
                                    {"name": "clip", "weight": 0.01}])
    obj.set_dense(dense_images, prompts)
    obj.score(pruned_images, prompts)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crdiff_search.errors import UsageError
from objectives._common import check_batch
from objectives.base import Objective


@dataclass(frozen=True)
class Term:
    name: str
    weight: float = 1.0
    relative: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name}{'_rel' if self.relative else ''}"


def _parse_terms(terms: Sequence[Mapping[str, Any]] | Mapping[str, float]) -> list[Term]:
    if isinstance(terms, Mapping):
        terms = [{"name": name, "weight": weight} for name, weight in terms.items()]
    parsed = []
    for raw in terms:
        if not isinstance(raw, Mapping) or "name" not in raw:
            raise UsageError(f"a composite term needs at least a 'name', got {raw!r}")
        extra = set(raw) - {"name", "weight", "relative", "options"}
        if extra:
            raise UsageError(
                f"unknown composite term keys {sorted(extra)}; valid: name, weight, relative, options"
            )
        weight = raw.get("weight", 1.0)
        if not isinstance(weight, int | float) or not math.isfinite(weight):
            raise UsageError(f"composite term {raw['name']!r}: weight must be a finite number")
        if raw["name"] == "composite":
            raise UsageError("a composite objective cannot contain another composite")
        parsed.append(
            Term(
                raw["name"],
                float(weight),
                bool(raw.get("relative", False)),
                dict(raw.get("options", {})),
            )
        )
    if not parsed:
        raise UsageError("a composite objective needs at least one term")
    labels = [t.label for t in parsed]
    if len(set(labels)) != len(labels):
        raise UsageError(f"composite terms repeat a scorer: {labels}")
    return parsed


class CompositeObjective(Objective):
    """Weighted sum of scorers; higher is better."""

    name = "composite"

    def __init__(self, *, terms: Sequence[Mapping[str, Any]] | Mapping[str, float]):
        from objectives import create_objective

        self.terms = _parse_terms(terms)
        self.scorers = [create_objective(t.name, **t.options) for t in self.terms]
        for term, scorer in zip(self.terms, self.scorers, strict=True):
            if getattr(scorer, "per_image", True) is False and term.relative:
                raise UsageError(f"{term.name!r} is a set metric and cannot be relative per image")
        self._dense: dict[int, dict[str, list[float]]] = {}
        # a set-metric term gives every image the set's value: no per-image values then
        self.per_image = all(getattr(s, "per_image", True) for s in self.scorers)

    def set_dense(self, images: Sequence[Any], prompts: Sequence[str]) -> None:
        """Score the dense model's images once; relative terms subtract these."""
        check_batch(images, prompts)
        self._dense = {}
        for i, (term, scorer) in enumerate(zip(self.terms, self.scorers, strict=True)):
            if term.relative:
                by_prompt: dict[str, list[float]] = {}
                for prompt, s in zip(prompts, scorer.score(images, prompts), strict=True):
                    by_prompt.setdefault(prompt, []).append(float(s))
                self._dense[i] = by_prompt

    def _dense_for(self, i: int, prompts: Sequence[str]) -> np.ndarray:
        if i not in self._dense:
            raise UsageError(
                f"composite term {self.terms[i].label!r} is relative: call set_dense(dense_images, "
                "prompts) first"
            )
        seen: dict[str, int] = {}
        out = []
        for prompt in prompts:
            k = seen.get(prompt, 0)
            seen[prompt] = k + 1
            dense = self._dense[i].get(prompt, [])
            if k >= len(dense):
                raise UsageError(
                    f"prompt {prompt!r} has {k + 1} images here but {len(dense)} dense images"
                )
            out.append(dense[k])
        return np.asarray(out, dtype=np.float64)

    def parts(self, images: Sequence[Any], prompts: Sequence[str]):
        """One row per image: each term's raw score, its contribution, and the total."""
        import pandas as pd

        check_batch(images, prompts)
        table = {}
        total = np.zeros(len(images), dtype=np.float64)
        for i, (term, scorer) in enumerate(zip(self.terms, self.scorers, strict=True)):
            raw = np.asarray(scorer.score(images, prompts), dtype=np.float64)
            value = raw - self._dense_for(i, prompts) if term.relative else raw
            table[term.label] = raw
            table[f"{term.label}.weighted"] = term.weight * value
            total += term.weight * value
        table["total"] = total
        return pd.DataFrame(table)

    def score(self, images: Sequence[Any], prompts: Sequence[str]) -> np.ndarray:
        return self.parts(images, prompts)["total"].to_numpy()
