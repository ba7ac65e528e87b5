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

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crdiff_search.errors import UsageError
from crdiff_search.objectives._common import check_batch
from crdiff_search.objectives.base import Objective


@dataclass(frozen=True)
class Term:
    name: str
    weight: float = 1.0
    relative: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name}{'_rel' if self.relative else ''}"


def parse_terms(terms: Sequence[Mapping[str, Any] | Term] | Mapping[str, float]) -> list[Term]:
    """Terms from their experiment-file form (a list of tables, or ``{name: weight}``);
    checks structure and names, builds nothing."""
    from crdiff_search.objectives import OBJECTIVES

    if isinstance(terms, Mapping):
        terms = [{"name": name, "weight": weight} for name, weight in terms.items()]
    if isinstance(terms, str) or not isinstance(terms, Sequence):
        raise UsageError(f"composite terms must be a list of tables, got {terms!r}")
    parsed = []
    for raw in terms:
        if isinstance(raw, Term):
            raw = dataclasses.asdict(raw)
        if not isinstance(raw, Mapping) or "name" not in raw:
            raise UsageError(f"a composite term needs at least a 'name', got {raw!r}")
        extra = set(raw) - {"name", "weight", "relative", "options"}
        if extra:
            raise UsageError(
                f"unknown composite term keys {sorted(extra)}; valid: name, weight, relative, options"
            )
        weight = raw.get("weight", 1.0)
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not math.isfinite(weight)
        ):
            raise UsageError(f"composite term {raw['name']!r}: weight must be a finite number")
        if raw["name"] == "composite":
            raise UsageError("a composite objective cannot contain another composite")
        if raw["name"] not in OBJECTIVES:
            raise UsageError(f"composite term: {OBJECTIVES.unknown(raw['name'])}")
        relative = raw.get("relative", False)
        if not isinstance(relative, bool):
            raise UsageError(f"composite term {raw['name']!r}: relative must be true or false")
        if relative and OBJECTIVES.metadata(raw["name"]).get("per_image") is False:
            raise UsageError(f"{raw['name']!r} is a set metric and cannot be relative per image")
        options = raw.get("options", {})
        if not isinstance(options, Mapping):
            raise UsageError(f"composite term {raw['name']!r}: options must be a table")
        parsed.append(Term(raw["name"], float(weight), relative, dict(options)))
    if not parsed:
        raise UsageError("a composite objective needs at least one term")
    labels = [t.label for t in parsed]
    if len(set(labels)) != len(labels):
        raise UsageError(f"composite terms repeat a scorer: {labels}")
    return parsed


class CompositeObjective(Objective):
    """Weighted sum of scorers; higher is better.

    The one place where several scores become one value: trial workers and re-rank tasks use
    :meth:`raw_scores` and :meth:`combine` with the dense model's per-image scores they
    measured; used on its own, :meth:`set_dense` and :meth:`score` do the same by prompt.
    """

    name = "composite"

    def __init__(self, *, terms: Sequence[Mapping[str, Any] | Term] | Mapping[str, float]):
        from crdiff_search.objectives import create_objective

        self.terms = parse_terms(terms)
        self.scorers = [create_objective(t.name, **t.options) for t in self.terms]
        for term, scorer in zip(self.terms, self.scorers, strict=True):
            if getattr(scorer, "per_image", True) is False and term.relative:
                raise UsageError(f"{term.name!r} is a set metric and cannot be relative per image")
        self._dense: dict[str, dict[str, list[float]]] = {}
        # a set-metric term gives every image the set's value: no per-image values then
        self.per_image = all(getattr(s, "per_image", True) for s in self.scorers)

    @property
    def labels(self) -> list[str]:
        return [t.label for t in self.terms]

    @property
    def relative(self) -> bool:
        return any(t.relative for t in self.terms)

    # ---- the weighted sum, from per-image scores
    def raw_scores(self, images: Sequence[Any], prompts: Sequence[str]) -> dict[str, np.ndarray]:
        """Each term's own per-image scores, keyed by term label (a scorer shared by two
        terms is asked once)."""
        check_batch(images, prompts)
        out: dict[str, np.ndarray] = {}
        by_scorer: dict[int, np.ndarray] = {}
        for term, scorer in zip(self.terms, self.scorers, strict=True):
            if id(scorer) not in by_scorer:
                by_scorer[id(scorer)] = np.asarray(scorer.score(images, prompts), dtype=np.float64)
            out[term.label] = by_scorer[id(scorer)]
        return out

    def _values(self, raw: Mapping[str, np.ndarray], dense: Mapping[str, np.ndarray] | None):
        for term, scorer in zip(self.terms, self.scorers, strict=True):
            value = np.asarray(raw[term.label], dtype=np.float64)
            if term.relative:
                if dense is None:
                    raise UsageError(
                        f"composite term {term.label!r} is relative: the dense model's scores "
                        "are needed"
                    )
                value = value - np.asarray(dense[term.label], dtype=np.float64)[: len(value)]
            yield term, scorer, value

    def term_values(
        self, raw: Mapping[str, np.ndarray], dense: Mapping[str, np.ndarray] | None = None
    ) -> dict[str, float]:
        """Each term's aggregate (relative terms: of the difference to the dense scores)."""
        return {t.label: float(s.aggregate(v)) for t, s, v in self._values(raw, dense)}

    def combine(
        self, raw: Mapping[str, np.ndarray], dense: Mapping[str, np.ndarray] | None = None
    ) -> float:
        """The value of a set of images: ``sum(weight * aggregate(term scores))``."""
        return float(sum(t.weight * s.aggregate(v) for t, s, v in self._values(raw, dense)))

    def image_values(
        self, raw: Mapping[str, np.ndarray], dense: Mapping[str, np.ndarray] | None = None
    ) -> np.ndarray | None:
        """Each image's share of :meth:`combine` (their mean is it), or ``None`` when a term is
        a set metric or aggregates otherwise than by the mean (no per-image value exists)."""
        total = None
        for term, scorer, value in self._values(raw, dense):
            if (
                not getattr(scorer, "per_image", True)
                or type(scorer).aggregate is not Objective.aggregate
            ):
                return None
            total = term.weight * value if total is None else total + term.weight * value
        return total

    # ---- on its own: dense images matched by prompt
    def set_dense(self, images: Sequence[Any], prompts: Sequence[str]) -> None:
        """Score the dense model's images once; relative terms subtract these."""
        check_batch(images, prompts)
        raw = self.raw_scores(images, prompts)
        self._dense = {}
        for term in self.terms:
            if term.relative:
                by_prompt: dict[str, list[float]] = {}
                for prompt, s in zip(prompts, raw[term.label], strict=True):
                    by_prompt.setdefault(prompt, []).append(float(s))
                self._dense[term.label] = by_prompt

    def _dense_for(self, prompts: Sequence[str]) -> dict[str, np.ndarray]:
        out = {}
        for term in self.terms:
            if not term.relative:
                continue
            if term.label not in self._dense:
                raise UsageError(
                    f"composite term {term.label!r} is relative: call set_dense(dense_images, "
                    "prompts) first"
                )
            seen: dict[str, int] = {}
            values = []
            for prompt in prompts:
                k = seen.get(prompt, 0)
                seen[prompt] = k + 1
                dense = self._dense[term.label].get(prompt, [])
                if k >= len(dense):
                    raise UsageError(
                        f"prompt {prompt!r} has {k + 1} images here but {len(dense)} dense images"
                    )
                values.append(dense[k])
            out[term.label] = np.asarray(values, dtype=np.float64)
        return out

    def parts(self, images: Sequence[Any], prompts: Sequence[str]):
        """One row per image: each term's raw score, its contribution, and the total."""
        import pandas as pd

        raw = self.raw_scores(images, prompts)
        dense = self._dense_for(prompts)
        table = {}
        total = np.zeros(len(images), dtype=np.float64)
        for term, _, value in self._values(raw, dense):
            table[term.label] = raw[term.label]
            table[f"{term.label}.weighted"] = term.weight * value
            total += term.weight * value
        table["total"] = total
        return pd.DataFrame(table)

    def score(self, images: Sequence[Any], prompts: Sequence[str]) -> np.ndarray:
        return self.parts(images, prompts)["total"].to_numpy()
