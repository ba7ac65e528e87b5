"""Warm starts: a study that begins from what searches at neighbouring resolutions found.

With ``search.warm_start = "registry"`` the study's first trials after the dense trial 0 are
points taken from the registry's recipes of the same model and partition at *other*
resolutions: the recipe interpolated at the study's resolution
(:func:`~crdiff_search.interpolate.interpolate_recipe`, the training size as a dense anchor),
then the nearest recipes' own ratios, up to ``search.warm_start_points`` distinct points
clipped into the search bounds. An annealing sampler also starts its chain there (its ``start``
option, unless the file sets one). The points and where they came from are written to
``DIR/warm_start.json`` before Ray starts; a resumed study keeps them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crdiff_search.errors import UsageError
from crdiff_search.study_folder import StudyFolder


def plan_warm_start(config, groups) -> dict[str, Any] | None:
    """``{"points": [{group: ratio}, ...], "sources": [...], "registry": uri}`` for the study,
    or None without a warm start. A usage error when the registry has nothing to start from."""
    if config.search.warm_start == "none":
        return None
    from crdiff_search.interpolate import interpolate_recipe
    from crdiff_search.model_info import training_resolution
    from crdiff_search.registry import Registry, model_key, resolution_distance

    reg = Registry(config.tracking.uri or None)
    key = model_key(config.model.source)
    target = (config.width, config.height)
    entries = [e for e in reg.list(key) if e.resolution != target]
    recipes = [reg.read_recipe(e) for e in entries]
    fits = [
        r for r in recipes if r.partition == config.partition.spec and set(r.ratios) == set(groups)
    ]
    if not fits:
        have = ", ".join(f"{r.resolution_str} ({'/'.join(r.ratios)})" for r in recipes) or "none"
        raise UsageError(
            f"search.warm_start = 'registry': the registry at {reg.uri} has no recipe of "
            f"{key!r} with the {config.partition.granularity!r} partition ({'/'.join(groups)}) at "
            f"another resolution than {config.resolution} (it has: {have}); export one first "
            "or set warm_start = 'none'"
        )
    fits.sort(key=lambda r: resolution_distance(target, r.resolution))
    predicted = interpolate_recipe(target, fits, training=training_resolution(key))
    candidates = [(predicted.ratios, predicted.trial_id)]
    candidates += [
        (r.ratios, r.resolution_str + (f" (study {r.study_id})" if r.study_id else ""))
        for r in fits
    ]
    points, sources, seen = [], [], set()
    for ratios, source in candidates:
        point = _clipped(config, groups, ratios)
        key_ = tuple(point[g] for g in groups)
        if key_ in seen:
            continue
        seen.add(key_)
        points.append(point)
        sources.append(source)
        if len(points) == config.search.warm_start_points:
            break
    return {"registry": reg.uri, "points": points, "sources": sources}


def given_points(config, groups, points) -> dict[str, Any]:
    """A warm start of given points ``[{group: ratio}, ...]``, checked and clipped into the
    study's bounds (a missing or unknown group is a usage error)."""
    out = []
    for i, point in enumerate(points):
        if not isinstance(point, dict) or set(point) != set(groups):
            raise UsageError(
                f"start point {i} {point!r} must give a ratio for exactly the groups "
                f"{', '.join(groups)}"
            )
        out.append(_clipped(config, groups, point))
    return {"registry": None, "points": out, "sources": ["given"] * len(out)}


def _clipped(config, groups, ratios) -> dict[str, float]:
    """``ratios`` clipped into the study's bounds, rounded to 6 decimals."""
    out = {}
    for g in groups:
        lo, hi = config.ratios.bounds(g)
        out[g] = round(min(max(float(ratios[g]), lo), hi), 6)
    return out


def save_warm_start(out: Path, plan: dict[str, Any] | None) -> None:
    if plan is None:
        return
    path = StudyFolder(out).warm_start
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(plan, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
