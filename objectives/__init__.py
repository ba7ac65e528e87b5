"""Scorers for generated images, by name.

Every scorer is an :class:`objectives.base.Objective`. Names map to factories here, at the edge;
each scorer lives in its own module, imported only when its name is first asked for, so that
``import objectives`` stays cheap (no torch, no transformers).

Example::

    from objectives import create_objective

    reward = create_objective("imagereward", checkpoint="/models/ImageReward.pt",
                              med_config="/models/med_config.json")
    scores = reward.score(images, prompts)   # one float per image
    value = reward.aggregate(scores)

``create_objective`` caches one instance per process for each (name, options), so a trial worker
that asks for the same scorer again gets the already-loaded model.
"""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from crdiff_search.errors import UsageError
from objectives.base import Objective

__all__ = [
    "OBJECTIVE_NAMES",
    "Objective",
    "clear_objective_cache",
    "create_objective",
    "register_objective",
]

# name -> "module:attribute" (imported lazily) or a callable registered at run time.
_FACTORIES: dict[str, str | Callable[..., Objective]] = {
    "imagereward": "objectives.imagereward:ImageRewardObjective",
    "clip": "objectives.clip:ClipScoreObjective",
    "pickscore": "objectives.pickscore:PickScoreObjective",
    "aesthetic": "objectives.aesthetic:AestheticObjective",
    "fid": "objectives.fid:FidObjective",
    "kid": "objectives.fid:KidObjective",
    "composite": "objectives.composite:CompositeObjective",
    "scene": "objectives.scene:SceneObjective",
}

_CACHE: dict[tuple, Objective] = {}
_LOCK = threading.RLock()

UNKNOWN_NAME = "unknown objective {name!r}; valid names: {valid}"
BAD_OPTION = "objective {name!r} does not take {detail}; it accepts: {valid}"


class _Names(Sequence):
    """A live, sorted view of the registered names (plug-ins included)."""

    def __getitem__(self, index):
        return sorted(_FACTORIES)[index]

    def __len__(self) -> int:
        return len(_FACTORIES)

    def __contains__(self, name: object) -> bool:
        return name in _FACTORIES

    def __repr__(self) -> str:
        return repr(tuple(self))


OBJECTIVE_NAMES: Sequence[str] = _Names()


def register_objective(
    name: str, factory: str | Callable[..., Objective], *, replace: bool = False
) -> None:
    """Add a scorer to the table.

    ``factory`` is a callable returning an :class:`Objective` (a class works), or a
    ``"module:attribute"`` string imported on first use.

    >>> register_objective("brightness", BrightnessObjective)
    >>> create_objective("brightness").score(images, prompts)
    """
    if not isinstance(name, str) or not name.strip() or name != name.strip().lower():
        raise UsageError(f"objective names are non-empty lower-case strings, got {name!r}")
    if not (callable(factory) or (isinstance(factory, str) and ":" in factory)):
        raise UsageError(
            f"objective factory for {name!r} must be a callable or 'module:attribute', "
            f"got {factory!r}"
        )
    with _LOCK:
        if name in _FACTORIES and not replace:
            raise UsageError(
                f"objective {name!r} is already registered; pass replace=True to override it"
            )
        _FACTORIES[name] = factory
        for key in [k for k in _CACHE if k[0] == name]:
            del _CACHE[key]


def _resolve(name: str) -> Callable[..., Objective]:
    factory = _FACTORIES[name]
    if isinstance(factory, str):
        module_name, _, attr = factory.partition(":")
        module = importlib.import_module(module_name)
        factory = getattr(module, attr)
    return factory


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
    try:
        signature.bind(**options)
    except TypeError as err:
        params = [
            p.name
            for p in signature.parameters.values()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        raise UsageError(
            BAD_OPTION.format(name=name, detail=str(err), valid=", ".join(params) or "no options")
        ) from None


def create_objective(name: str, **options: Any) -> Objective:
    """The scorer called ``name``, built with ``options`` once per process and then reused.

    Raises :class:`~crdiff_search.errors.UsageError` for an unknown name (listing the valid ones)
    or an option the scorer does not take, before any model is loaded.
    """
    key_name = name.strip().lower() if isinstance(name, str) else name
    if key_name not in _FACTORIES:
        raise UsageError(UNKNOWN_NAME.format(name=name, valid=", ".join(OBJECTIVE_NAMES)))
    key = (key_name, _freeze(options))
    with _LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            return cached
        factory = _resolve(key_name)
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
