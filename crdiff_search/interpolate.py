"""A recipe for a resolution nobody searched, from the recipes of its registered neighbours.

Resolutions are points in (log area, log aspect) coordinates: doubling the area moves one
unit of ``log 2``, and an aspect change counts twice as much (the registry's nearest-resolution
distance, :func:`~crdiff_search.registry.resolution_distance`). The prediction at a target is
an inverse-distance-weighted mean (power 2) of its ``k`` nearest recipes: each group's ratio
and the POA weight. The model's training resolution, where nothing needs repairing, can join
as a dense anchor (every ratio 0, no POA), so that sizes near the training size get light
pruning rather than a copy of a far neighbour's heavy one.

Example::

    recipes = [registry.get("testbed", r, strict=True) for r in ("24x24", "32x24")]
    recipe = interpolate_recipe((28, 24), recipes, training=(32, 32))
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from crdiff_search.errors import UsageError
from crdiff_search.recipe import Recipe, utc_now
from crdiff_search.resolution import format_resolution, parse_resolution

FALLBACKS = ("nearest", "interpolate")  # what a registry lookup does at an unregistered size
DEFAULT_NEIGHBOURS = 3


def check_fallback(fallback: str) -> str:
    """``fallback`` if it is one of :data:`FALLBACKS`, else a usage error listing them."""
    if fallback not in FALLBACKS:
        raise UsageError(f"fallback {fallback!r} is not valid; valid: {', '.join(FALLBACKS)}")
    return fallback


_EXACT = 1e-12


def resolution_coordinates(resolution) -> tuple[float, float]:
    """``(log area, log aspect)`` of a ``WxH`` resolution."""
    w, h = parse_resolution(resolution)
    return math.log(w * h), math.log(w / h)


def _distance(a, b) -> float:
    (area_a, aspect_a), (area_b, aspect_b) = a, b
    return abs(area_a - area_b) + 2.0 * abs(aspect_a - aspect_b)


def dense_anchor(like: Recipe, training) -> Recipe:
    """The training resolution as a recipe: ``like``'s model and partition, every ratio 0."""
    w, h = parse_resolution(training)
    return like.replace(
        width=w,
        height=h,
        ratios={g: 0.0 for g in like.ratios},
        poa_w=1.0,
        poa_window=None,
        attention_scaling=None,
        scores={},
        study_id=None,
        run_id=None,
        trial_id="training-resolution",
    )


def interpolation_weights(
    target, resolutions: Sequence, *, k: int = DEFAULT_NEIGHBOURS
) -> dict[int, float]:
    """Inverse-squared-distance weights of the ``k`` nearest of ``resolutions`` (by index),
    summing to 1; a resolution equal to the target gets weight 1."""
    if k < 1:
        raise UsageError(f"interpolation needs at least 1 neighbour, got k={k}")
    if not resolutions:
        raise UsageError("interpolation needs at least one registered resolution")
    t = resolution_coordinates(target)
    dist = sorted((_distance(t, resolution_coordinates(r)), i) for i, r in enumerate(resolutions))
    if dist[0][0] < _EXACT:
        return {dist[0][1]: 1.0}
    near = dist[:k]
    raw = {i: 1.0 / d**2 for d, i in near}
    total = sum(raw.values())
    return {i: v / total for i, v in raw.items()}


def interpolate_recipe(
    target,
    recipes: Sequence[Recipe],
    *,
    training=None,
    k: int = DEFAULT_NEIGHBOURS,
) -> Recipe:
    """The recipe predicted at ``target`` from ``recipes`` (one model, one partition; at most
    one per resolution), with ``training`` (``WxH``) as a dense anchor unless a recipe is
    registered there. The result names its neighbours in ``trial_id``
    (``interpolated:24x24=0.61,32x24=0.39``) and carries no scores: nobody measured it."""
    if not recipes:
        raise UsageError("interpolation needs at least one recipe")
    first = recipes[0]
    for r in recipes[1:]:
        if (r.model, r.partition, r.criterion) != (first.model, first.partition, first.criterion):
            raise UsageError(
                f"recipes at {first.resolution_str} and {r.resolution_str} differ in model, "
                "partition or criterion: they cannot be interpolated"
            )
        if set(r.ratios) != set(first.ratios):
            raise UsageError(
                f"recipes at {first.resolution_str} and {r.resolution_str} prune other groups "
                f"({sorted(first.ratios)} vs {sorted(r.ratios)})"
            )
    seen = [r.resolution for r in recipes]
    if len(set(seen)) != len(seen):
        raise UsageError("interpolation takes one recipe per resolution")
    pool = list(recipes)
    if training is not None and parse_resolution(training) not in seen:
        pool.append(dense_anchor(first, training))
    tw, th = parse_resolution(target)
    weights = interpolation_weights((tw, th), [r.resolution for r in pool], k=k)
    if len(weights) == 1:
        (only,) = weights
        if pool[only].resolution == (tw, th):
            return pool[only]
    ratios = {
        g: min(max(sum(w * pool[i].ratios[g] for i, w in weights.items()), 0.0), 0.999)
        for g in first.ratios
    }
    poa_w = sum(w * pool[i].poa_w for i, w in weights.items())
    nearest = pool[max(weights, key=weights.get)]
    names = ",".join(
        f"{format_resolution(*pool[i].resolution)}={w:.2f}"
        for i, w in sorted(weights.items(), key=lambda kv: -kv[1])
    )
    revisions = {r.model_revision for r in recipes}
    return first.replace(
        width=tw,
        height=th,
        ratios=ratios,
        poa_w=round(poa_w, 6),
        poa_window=nearest.poa_window,
        attention_scaling=nearest.attention_scaling,
        model_revision=first.model_revision if len(revisions) == 1 else None,
        scores={},
        study_id=None,
        run_id=None,
        trial_id=f"interpolated:{names}",
        created_at=utc_now(),
    )
