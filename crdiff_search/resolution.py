"""Resolutions: ``"WIDTHxHEIGHT"`` strings and ``(width, height)`` pairs, parsed in one place.

>>> parse_resolution(" 768 X 512 "), parse_resolution([64, 32]), format_resolution(64, 32)
((768, 512), (64, 32), '64x32')
"""

from __future__ import annotations

import re

from crdiff_search.errors import UsageError

_RESOLUTION = re.compile(r"^\s*(\d+)\s*[xX\u00d7]\s*(\d+)\s*$")


def parse_resolution(value) -> tuple[int, int]:
    """``"768x512"``, ``(768, 512)`` or ``[768, 512]`` -> ``(width, height)``, both positive."""
    if isinstance(value, str):
        match = _RESOLUTION.match(value)
        width, height = (int(match[1]), int(match[2])) if match else (0, 0)
    else:
        try:
            width, height = (int(v) for v in value)
        except (TypeError, ValueError):
            width, height = 0, 0
    if width <= 0 or height <= 0:
        raise UsageError(
            f"resolution {value!r} is not WIDTHxHEIGHT with positive integers, e.g. 768x512"
        )
    return width, height


def format_resolution(width: int, height: int) -> str:
    return f"{int(width)}x{int(height)}"
