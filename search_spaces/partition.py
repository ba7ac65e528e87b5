"""The :class:`Partition`: which weights of a model form which named group."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from crdiff_search.errors import UsageError

PARTITION_VERSION = 1


@dataclass(frozen=True)
class Partition:
    """Named groups of parameter names; one pruning ratio applies to each group.

    ``groups`` maps a group name to the names of the weight tensors it holds, such as
    ``"down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight"``. Groups are
    disjoint and non-empty. Build one with :func:`search_spaces.build_partition`; a hand-made
    partition (any names) is fine too:

    >>> Partition("custom", {"a": ("x.weight",), "b": ("y.weight", "z.weight")}).group_names
    ('a', 'b')
    """

    name: str
    groups: Mapping[str, tuple[str, ...]]
    granularity: str = "custom"
    include: tuple[str, ...] | None = None
    model_class: str = ""
    version: int = field(default=PARTITION_VERSION, compare=False)

    def __post_init__(self) -> None:
        groups = {str(g): tuple(names) for g, names in dict(self.groups).items()}
        if not groups:
            raise UsageError(f"partition {self.name!r} has no groups")
        empty = [g for g, names in groups.items() if not names]
        if empty:
            raise UsageError(
                f"partition {self.name!r}: group(s) {', '.join(empty)} select no weights; "
                "a group that prunes nothing would silently be a no-op"
            )
        seen: dict[str, str] = {}
        for g, names in groups.items():
            for n in names:
                if n in seen:
                    raise UsageError(
                        f"partition {self.name!r}: {n!r} is in both groups {seen[n]!r} and {g!r}"
                    )
                seen[n] = g
        object.__setattr__(self, "groups", groups)
        if self.include is not None:
            object.__setattr__(self, "include", tuple(self.include))

    @property
    def group_names(self) -> tuple[str, ...]:
        return tuple(self.groups)

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(n for names in self.groups.values() for n in names)

    def group_of(self, param_name: str) -> str:
        for g, names in self.groups.items():
            if param_name in names:
                return g
        raise KeyError(param_name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "name": self.name,
            "granularity": self.granularity,
            "include": list(self.include) if self.include is not None else None,
            "model_class": self.model_class,
            "groups": {g: list(names) for g, names in self.groups.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Partition:
        version = int(data.get("version", PARTITION_VERSION))
        if version > PARTITION_VERSION:
            raise UsageError(
                f"partition version {version} is newer than this code understands "
                f"({PARTITION_VERSION})"
            )
        include = data.get("include")
        return cls(
            name=data["name"],
            groups={g: tuple(names) for g, names in data["groups"].items()},
            granularity=data.get("granularity", "custom"),
            include=tuple(include) if include is not None else None,
            model_class=data.get("model_class", ""),
        )
