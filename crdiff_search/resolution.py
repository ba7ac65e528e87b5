"""Resolutions: ``"WIDTHxHEIGHT"`` strings and ``(width, height)`` pairs, parsed in one place.

>>> parse_resolution(" 768 X 512 "), parse_resolution([64, 32]), format_resolution(64, 32)
((768, 512), (64, 32), '64x32')
"""

from __future__ import annotations

import os
import re

from crdiff_search.errors import UsageError

# The largest image accepted, in pixels (width x height): 4096x4096 by default, beyond any
# published model's reach; raise it with the environment variable CRDIFF_MAX_PIXELS.
MAX_PIXELS_ENV = "CRDIFF_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 4096 * 4096


def max_pixels() -> int:
    raw = os.environ.get(MAX_PIXELS_ENV, "")
    try:
        return int(raw) if raw.strip() else DEFAULT_MAX_PIXELS
    except ValueError:
        raise UsageError(
            f"{MAX_PIXELS_ENV}={raw!r} is not a whole number of pixels (e.g. {DEFAULT_MAX_PIXELS})"
        ) from None


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
    limit = max_pixels()
    if width * height > limit:
        raise UsageError(
            f"resolution {width}x{height} is {width * height:,} pixels, over the limit of "
            f"{limit:,} ({MAX_PIXELS_ENV}; raise it if your hardware can take it)"
        )
    return width, height


def format_resolution(width: int, height: int) -> str:
    return f"{int(width)}x{int(height)}"
