"""Checking and parsing ``{group: ratio}`` mappings."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping

from crdiff_search.errors import UsageError


def validate_ratios(ratios: Mapping[str, float] | None, groups: Iterable[str]) -> dict[str, float]:
    """A complete ``{group: float}`` for ``groups`` (groups not given are 0.0, i.e. dense).

    >>> validate_ratios({"up": 0.3}, ["down", "mid", "up"])
    {'down': 0.0, 'mid': 0.0, 'up': 0.3}

    Raises :class:`UsageError` for a name not in ``groups`` (listing the valid ones), a value
    that is not a real number (strings and booleans included), or one outside ``[0, 1)``.
    """
    valid = tuple(groups)
    if ratios is None:
        ratios = {}
    if not isinstance(ratios, Mapping):
        raise UsageError(
            f"ratios must be a mapping {{group: ratio}}, got {type(ratios).__name__}; "
            f"groups: {', '.join(valid)}"
        )
    unknown = [g for g in ratios if g not in valid]
    if unknown:
        raise UsageError(
            f"unknown group(s) {', '.join(repr(g) for g in unknown)}; valid: {', '.join(valid)}"
        )
    out = dict.fromkeys(valid, 0.0)
    for group, value in ratios.items():
        out[group] = _check_ratio(group, value)
    return out


def _check_ratio(group: str, value) -> float:
    if hasattr(value, "ndim") and getattr(value, "ndim", 1) == 0 and hasattr(value, "item"):
        value = value.item()  # 0-d numpy/torch scalars
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UsageError(f"ratio for group {group!r} must be a number in [0, 1), got {value!r}")
    ratio = float(value)
    if math.isnan(ratio) or not 0.0 <= ratio < 1.0:
        raise UsageError(f"ratio for group {group!r} must be in [0, 1), got {ratio!r}")
    return ratio


def parse_ratios(text: str) -> dict[str, float]:
    """Parse ``"down=0.3,mid=0.2"``; a bare number (``"0.3"``) means every group: ``{"*": 0.3}``.

    Values are range-checked here; group names are checked against a partition later
    (:func:`expand_ratios`).
    """
    text = (text or "").strip()
    if not text:
        raise UsageError("empty ratios; write e.g. down=0.3,mid=0.3,up=0.3 (or one number)")
    if "=" not in text:
        return {"*": _check_ratio("*", _to_float("*", text))}
    out: dict[str, float] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UsageError(f"bad ratio item {item!r}; write GROUP=RATIO, e.g. down=0.3")
        if name in out:
            raise UsageError(f"group {name!r} is given twice in {text!r}")
        out[name] = _check_ratio(name, _to_float(name, value.strip()))
    return out


def expand_ratios(ratios: Mapping[str, float], groups: Iterable[str]) -> dict[str, float]:
    """Resolve a ``{"*": r}`` from :func:`parse_ratios` to every group, then validate."""
    groups = tuple(groups)
    if set(ratios) == {"*"}:
        ratios = dict.fromkeys(groups, ratios["*"])
    return validate_ratios(ratios, groups)


def _to_float(group: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise UsageError(
            f"ratio for group {group!r} must be a number in [0, 1), got {text!r}"
        ) from None
