"""Scorers for generated images, by name.

Every scorer is an :class:`objectives.base.Objective`. Names map to factories here, at the edge;
each scorer lives in its own module, imported only when its name is first asked for, so that
``import objectives`` stays cheap (no torch, no transformers).

Example::

    from crdiff_search.objectives import create_objective

    reward = create_objective("imagereward", checkpoint="/models/ImageReward.pt",
                              med_config="/models/med_config.json")
    scores = reward.score(images, prompts)   # one float per image
    value = reward.aggregate(scores)

``create_objective`` caches one instance per process for each (name, options), so a trial worker
that asks for the same scorer again gets the already-loaded model.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Mapping
from typing import Any

from crdiff_search.errors import UsageError
from crdiff_search.objectives.base import Objective
from crdiff_search.plugins import PluginRegistry

__all__ = [
    "OBJECTIVES",
    "OBJECTIVE_NAMES",
    "Objective",
    "check_options",
    "clear_objective_cache",
    "create_objective",
    "higher_is_better",
    "register_objective",
]

# The registry of scorers (entry point group "crdiff_search.objectives"). Built-ins are
# imported lazily; ``higher_is_better`` is known without importing them, so an experiment's
# objective.mode is checked before Ray starts.
OBJECTIVES = PluginRegistry("objective")
for _name, _target, _higher, _per_image in (
    ("imagereward", "crdiff_search.objectives.imagereward:ImageRewardObjective", True, True),
    ("clip", "crdiff_search.objectives.clip:ClipScoreObjective", True, True),
    ("pickscore", "crdiff_search.objectives.pickscore:PickScoreObjective", True, True),
    ("aesthetic", "crdiff_search.objectives.aesthetic:AestheticObjective", True, True),
    ("fid", "crdiff_search.objectives.fid:FidObjective", False, False),
    ("kid", "crdiff_search.objectives.fid:KidObjective", False, False),
    ("composite", "crdiff_search.objectives.composite:CompositeObjective", None, True),
    ("scene", "crdiff_search.objectives.scene:SceneObjective", True, True),
):
    OBJECTIVES.register(
        _name, _target, origin="builtin", higher_is_better=_higher, per_image=_per_image
    )

_CACHE: dict[tuple, Objective] = {}
_LOCK = threading.RLock()

BAD_OPTION = "objective {name!r} does not take {detail}; it accepts: {valid}"

OBJECTIVE_NAMES = OBJECTIVES  # a live, sorted sequence of the registered names


def _forget(name: str) -> None:
    with _LOCK:
        for key in [k for k in _CACHE if k[0] == name]:
            del _CACHE[key]


OBJECTIVES.on_change(_forget)


def register_objective(
    name: str,
    factory: str | Callable[..., Objective],
    *,
    replace: bool = False,
    higher_is_better: bool | None = None,
    per_image: bool | None = None,
) -> None:
    """Add a scorer (``OBJECTIVES.register``): a callable returning an :class:`Objective` (a
    class works), or a ``"module:attribute"`` string imported on first use.

    >>> register_objective("brightness", BrightnessObjective)
    >>> create_objective("brightness").score(images, prompts)
    """
    OBJECTIVES.register(
        name, factory, replace=replace, higher_is_better=higher_is_better, per_image=per_image
    )


def higher_is_better(name: str) -> bool | None:
    """The scorer's direction, from its registration or its class attribute (None: unknown
    without building it)."""
    declared = OBJECTIVES.metadata(name).get("higher_is_better")
    if declared is not None:
        return bool(declared)
    target = OBJECTIVES.plugin(name).target
    value = getattr(target, "higher_is_better", None) if isinstance(target, type) else None
    return None if value is None else bool(value)


def _freeze(value: Any) -> Any:
    """A hashable, order-independent form of an option value (for the cache key)."""
    if isinstance(value, Mapping):
        return ("map", tuple(sorted((str(k), _freeze(v)) for k, v in value.items())))
    if isinstance(value, list | tuple):
        return ("seq", tuple(_freeze(v) for v in value))
    if isinstance(value, set | frozenset):
        return ("set", tuple(sorted(_freeze(v) for v in value)))
    try:
        hash(value)
    except TypeError:
        # Unhashable objects (a module passed in by a test) are keyed by identity.
        return ("id", type(value).__qualname__, id(value))
    return value


def _check_options(name: str, factory: Callable[..., Any], options: dict) -> None:
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return
    params = [
        p.name
        for p in signature.parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if not any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values()):
        unknown = sorted(set(options) - set(params))
        if unknown:
            detail = "option" + ("s " if len(unknown) > 1 else " ") + ", ".join(map(repr, unknown))
            raise UsageError(
                BAD_OPTION.format(name=name, detail=detail, valid=", ".join(params) or "no options")
            )
    try:
        signature.bind(**options)
    except TypeError as err:
        raise UsageError(
            BAD_OPTION.format(
                name=name, detail=f"these options ({err})", valid=", ".join(params) or "no options"
            )
        ) from None


def check_options(name: str, options: Mapping[str, Any]) -> None:
    """A usage error if the scorer ``name`` does not take ``options`` (its signature is read;
    nothing is built or loaded)."""
    _check_options(name, OBJECTIVES.get(name), dict(options))


def create_objective(name: str, **options: Any) -> Objective:
    """The scorer called ``name``, built with ``options`` once per process and then reused.

    Raises :class:`~crdiff_search.errors.UsageError` for an unknown name (listing the valid ones)
    or an option the scorer does not take, before any model is loaded.
    """
    key_name = name.strip().lower() if isinstance(name, str) else name
    if key_name not in OBJECTIVES:
        raise UsageError(OBJECTIVES.unknown(name))
    key = (key_name, _freeze(options))
    with _LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            return cached
        factory = OBJECTIVES.get(key_name)
        _check_options(key_name, factory, options)
        objective = factory(**options)
        if not isinstance(objective, Objective):
            raise TypeError(
                f"the factory of objective {key_name!r} returned {type(objective).__name__}, "
                "not an Objective"
            )
        _CACHE[key] = objective
        return objective


def clear_objective_cache() -> None:
    """Forget every cached scorer (their models are freed once nothing else holds them)."""
    with _LOCK:
        _CACHE.clear()
