"""One plug-in registry for every kind: samplers, objectives, pruning criteria, partitions.

A :class:`PluginRegistry` maps names to factories: a callable, or a ``"module:attr"`` string
imported on first use (so listing names stays cheap). A user's package adds its own without
editing ours, through an entry point in the kind's group, e.g. in its ``pyproject.toml``::

    [project.entry-points."crdiff_search.objectives"]
    sharpness = "my_package.scores:SharpnessObjective"

or at run time::

    from crdiff_search.objectives import OBJECTIVES
    OBJECTIVES.register("sharpness", SharpnessObjective)
    OBJECTIVES.unregister("sharpness")

Entry points are read once, the first time a registry is asked for its names; names registered
in code win over entry points of the same name.
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crdiff_search.errors import UsageError

ENTRY_POINT_PREFIX = "crdiff_search."


@dataclass(frozen=True)
class Plugin:
    """A registered name: its factory (or ``"module:attr"``) and free-form metadata."""

    name: str
    target: Any
    metadata: Mapping[str, Any] = field(default_factory=dict)
    origin: str = "builtin"  # builtin | code | entry point <dist>


def load_target(target: Any) -> Any:
    """Import ``"module:attr"`` (dotted attributes allowed); anything else is returned as is."""
    if not isinstance(target, str):
        return target
    module_name, _, attr = target.partition(":")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class PluginRegistry(Sequence):
    """Names -> factories of one kind (a live, sorted sequence of the names)."""

    def __init__(self, kind: str, *, group: str | None = None, normalize: bool = True) -> None:
        self.kind = kind
        self.group = group or f"{ENTRY_POINT_PREFIX}{kind}s"
        self._normalize = normalize
        self._plugins: dict[str, Plugin] = {}
        self._entry_points_read = False
        self._lock = threading.RLock()
        self._listeners: list[Callable[[str], None]] = []

    # ---- registering
    def register(
        self,
        name: str,
        target: Any,
        *,
        replace: bool = False,
        origin: str = "code",
        **metadata: Any,
    ) -> None:
        """Add ``name``; ``target`` is a callable or ``"module:attr"``. An existing name needs
        ``replace=True``."""
        key = self._key(name, strict=True)
        if not (callable(target) or (isinstance(target, str) and ":" in target)):
            raise UsageError(
                f"{self.kind} factory for {name!r} must be a callable or 'module:attribute', "
                f"got {target!r}"
            )
        with self._lock:
            if key in self._plugins and not replace:
                raise UsageError(
                    f"{self.kind} {name!r} is already registered; pass replace=True to override it"
                )
            self._plugins[key] = Plugin(key, target, dict(metadata), origin)
            for listener in self._listeners:
                listener(key)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (an unknown name is an error listing the valid ones)."""
        key = self._key(name)
        with self._lock:
            self._read_entry_points()
            if key not in self._plugins:
                raise UsageError(self.unknown(name))
            del self._plugins[key]
            for listener in self._listeners:
                listener(key)

    def on_change(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(name)`` whenever a name is (re)registered or removed (caches)."""
        self._listeners.append(listener)

    # ---- looking up
    def plugin(self, name: str) -> Plugin:
        key = self._key(name)
        with self._lock:
            self._read_entry_points()
            if key not in self._plugins:
                raise UsageError(self.unknown(name))
            return self._plugins[key]

    def get(self, name: str) -> Any:
        """The factory registered under ``name``, imported if it was a string."""
        plugin = self.plugin(name)
        if isinstance(plugin.target, str):
            try:
                loaded = load_target(plugin.target)
            except (ImportError, AttributeError) as exc:
                raise UsageError(
                    f"{self.kind} {plugin.name!r} ({plugin.origin}) points at "
                    f"{plugin.target!r}, which cannot be imported: {exc}"
                ) from exc
            return loaded  # not kept: importlib caches the module, and a patched attribute shows
        return plugin.target

    def metadata(self, name: str) -> Mapping[str, Any]:
        return self.plugin(name).metadata

    def unknown(self, name: Any) -> str:
        return f"unknown {self.kind} {name!r}; valid names: {', '.join(self)}"

    # ---- the sequence of names
    def _names(self) -> list[str]:
        with self._lock:
            self._read_entry_points()
            return sorted(self._plugins)

    def __getitem__(self, index):
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        with self._lock:
            self._read_entry_points()
            return self._key(name) in self._plugins

    def __repr__(self) -> str:
        return f"PluginRegistry({self.kind!r}, {tuple(self)!r})"

    # ---- internals
    def _key(self, name: Any, *, strict: bool = False) -> str:
        if not isinstance(name, str) or not name.strip():
            raise UsageError(f"{self.kind} names are non-empty strings, got {name!r}")
        key = name.strip().lower() if self._normalize else name.strip()
        if strict and key != name:
            raise UsageError(f"{self.kind} names are lower-case without spaces, got {name!r}")
        return key

    def _read_entry_points(self) -> None:
        if self._entry_points_read:
            return
        self._entry_points_read = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=self.group):
            key = ep.name.strip().lower() if self._normalize else ep.name.strip()
            if key in self._plugins:  # ours, or registered in code: they win
                continue
            dist = getattr(ep, "dist", None)
            origin = f"entry point {getattr(dist, 'name', '?')}"
            self._plugins[key] = Plugin(key, ep.value, {}, origin)


def import_modules(modules: Sequence[str], paths: Sequence[str] = ()) -> None:
    """Import the modules that register extra objectives (``register_objective``).

    ``paths`` are the folders the driver found them in (:func:`module_roots`): a worker on the
    same machine does not share the driver's ``sys.path``.
    """
    for path in paths:
        if path not in sys.path:
            sys.path.append(path)
    for name in modules:
        importlib.import_module(name)


def module_roots(modules: Sequence[str]) -> list[str]:
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
