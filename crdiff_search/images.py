"""Pictures for people: labelled side-by-side grids of generated images.

Text is set in DejaVu Sans (shipped with matplotlib, so present wherever the package is), not
PIL's 10-pixel bitmap default; small images are enlarged with nearest neighbour so that their
pixels stay visible.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence


@functools.lru_cache(maxsize=16)
def legible_font(size: int = 14, bold: bool = False):
    """DejaVu Sans at ``size`` pixels (PIL's scalable default if matplotlib's copy is missing)."""
    from PIL import ImageFont

    try:
        from matplotlib import font_manager

        path = font_manager.findfont(
            font_manager.FontProperties(family="DejaVu Sans", weight="bold" if bold else "normal"),
            fallback_to_default=True,
        )
        return ImageFont.truetype(path, size)
    except Exception:
        return ImageFont.load_default(size)


def _text_width(draw, text: str, font) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    return right - left


def _wrap(draw, text: str, font, width: int, max_lines: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels, at most ``max_lines`` (the last one ellipsised)."""
    words, lines, line = str(text).split(), [], ""
    for word in words:
        trial = f"{line} {word}".strip()
        if _text_width(draw, trial, font) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        while lines[-1] and _text_width(draw, lines[-1] + "...", font) > width:
            lines[-1] = lines[-1][:-1]
        lines[-1] += "..."
    return lines


def compare_grid(
    columns: Mapping[str, Sequence],
    prompts: Sequence[str],
    *,
    min_tile: int = 192,
    title: str | None = None,
    notes: Mapping[str, Sequence[str]] | None = None,
    scores: Mapping[str, Sequence[float] | None] | None = None,
    score_name: str = "score",
):
    """One row per prompt, one column per variant (e.g. dense | pruned | POA).

    Each column's header is its label in bold, then ``notes[label]`` (e.g. its ratios) and, with
    ``scores``, its mean score; each image carries its own score under it and the row's prompt
    runs under the row. ``title`` (what is compared, at which resolution) goes on top.
    """
    from PIL import Image, ImageDraw

    labels = list(columns)
    if not labels:
        raise ValueError("compare_grid needs at least one column")
    first = columns[labels[0]][0]
    w, h = first.size
    scale = max(1, math.ceil(min_tile / w))
    tw, th = w * scale, h * scale
    pad = 8
    head_font, body_font, small_font = (
        legible_font(16, bold=True),
        legible_font(14),
        legible_font(13),
    )
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = 18
    width = len(labels) * (tw + pad) + pad
    title_lines = _wrap(scratch, title, body_font, width - 2 * pad, 2) if title else []
    header_lines = {}
    for label in labels:
        lines = [label]
        for note in (notes or {}).get(label, []):
            lines += _wrap(scratch, note, small_font, tw, 2)
        values = (scores or {}).get(label)
        if values is not None and len(values):
            mean = sum(values) / len(values)
            lines.append(f"mean {score_name} {mean:.3f} (n={len(values)})")
        header_lines[label] = lines
    header_h = max(len(v) for v in header_lines.values()) * line_h + pad
    top = pad + len(title_lines) * line_h + (pad if title_lines else 0)
    has_scores = any((scores or {}).get(label) is not None for label in labels)
    under = (line_h if has_scores else 0) + 2 * line_h + pad  # image score + 2 prompt lines
    grid = Image.new("RGB", (width, top + header_h + len(prompts) * (th + under)), "white")
    draw = ImageDraw.Draw(grid)
    for i, line in enumerate(title_lines):
        draw.text((pad, pad + i * line_h), line, fill="black", font=body_font)
    for c, label in enumerate(labels):
        x = pad + c * (tw + pad)
        for j, line in enumerate(header_lines[label]):
            font = head_font if j == 0 else small_font
            draw.text((x, top + j * line_h), line, fill="black" if j == 0 else "#333", font=font)
    for r, prompt in enumerate(prompts):
        y = top + header_h + r * (th + under)
        for c, label in enumerate(labels):
            x = pad + c * (tw + pad)
            tile = columns[label][r].convert("RGB").resize((tw, th), Image.NEAREST)
            grid.paste(tile, (x, y))
            values = (scores or {}).get(label)
            if values is not None and r < len(values):
                draw.text((x, y + th + 2), f"{score_name} {values[r]:.3f}", fill="#333",
                          font=small_font)  # fmt: skip
        text_y = y + th + 2 + (line_h if has_scores else 0)
        for j, line in enumerate(_wrap(draw, prompt, body_font, width - 2 * pad, 2)):
            draw.text((pad, text_y + j * line_h), line, fill="black", font=body_font)
    return grid


def ratio_note(ratios: Mapping[str, float]) -> str:
    """``down 0.90, mid 0.10, up 0.35`` for a header."""
    return ", ".join(f"{g} {r:.2f}" for g, r in ratios.items())


__all__ = ["compare_grid", "legible_font", "ratio_note"]
