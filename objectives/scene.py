"""The ``scene`` objective: does the image show exactly the objects its caption asks for?

Weight-free. Each pixel's colour coverage is estimated from its chroma (the scene background is
grey, so chroma is zero there and grows linearly with an object's coverage of the pixel); its hue
names one of the grammar's six colours. Connected components of each colour are objects, or
fragments when smaller than ``fragment_area`` (a fraction of the shorter side squared). Each
object's shape is the template (circle, square, triangle, diamond), stretched to the object's
bounding box, with the highest soft IoU with its coverage.

Per image, with E the expected objects and D the detected ones (``n`` = max(|E|, |D|))::

    count  = 1 - min(1, | |D| - |E| | / |E|)
    colour = sum over colours of min(E_c, D_c) / n
    shape  = sum over (colour, shape) of min(E_cs, D_cs) / n
    score  = clip(mean(count, colour, shape)
                  - 0.05 * min(fragments, 4) - 0.1 * min(duplicates, 3), 0, 1)

``duplicates`` counts objects beyond the number asked of a requested colour, the repetition
typical of models sampled above their training resolution. A rendered caption scores 1.

Example::

    obj = SceneObjective()
    obj.score([render("a red circle", 64, 64)], ["a red circle"])   # array([1.])
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from crdiff_search.objectives.base import Objective

COLOUR_NAMES = ("red", "yellow", "green", "cyan", "blue", "magenta")  # hue 0, 60, ..., 300
SHAPE_NAMES = ("circle", "square", "triangle", "diamond")


@dataclass(frozen=True)
class Detection:
    colour: str
    shape: str
    area: int
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


# Unit shapes (half-extent 1 in x and y), drawn as the scene renderer draws them up to scale.
_UNIT_POLYGONS: dict[str, list[tuple[float, float]] | None] = {
    "circle": None,
    "square": [(-1, -1), (1, -1), (1, 1), (-1, 1)],
    "triangle": [(0, -1), (1, 0.8), (-1, 0.8)],
    "diamond": [(0, -1), (1, 0), (0, 1), (-1, 0)],
}
_SS = 8  # supersampling of the templates


def _raster(shape: str, cx: float, cy: float, a: float, b: float, w: int, h: int, ss: int = _SS):
    """Coverage of ``shape`` centred at (cx, cy) with half-extents (a, b) on a w x h pixel grid."""
    from PIL import Image, ImageDraw

    big = Image.new("L", (w * ss, h * ss), 0)
    draw = ImageDraw.Draw(big)
    poly = _UNIT_POLYGONS[shape]
    if poly is None:
        draw.ellipse([(cx - a) * ss, (cy - b) * ss, (cx + a) * ss, (cy + b) * ss], fill=255)
    else:
        draw.polygon([((cx + a * x) * ss, (cy + b * y) * ss) for x, y in poly], fill=255)
    return np.asarray(big.resize((w, h), Image.Resampling.BOX), dtype=np.float32) / 255.0


def _moments(cover: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.indices(cover.shape, dtype=np.float64) + 0.5
    total = cover.sum()
    mx, my = (cover * xs).sum() / total, (cover * ys).sum() / total
    vx = (cover * (xs - mx) ** 2).sum() / total
    vy = (cover * (ys - my) ** 2).sum() / total
    return mx, my, vx, vy


@cache
def _unit_moments(shape: str) -> tuple[float, float, float, float]:
    """Centroid offset and variances of the unit shape, per unit of half-extent."""
    n = 100
    mx, my, vx, vy = _moments(_raster(shape, n, n, n / 2, n / 2, 2 * n, 2 * n, ss=2))
    s = n / 2
    return (mx - n) / s, (my - n) / s, vx / s**2, vy / s**2


def classify_shape(cover: np.ndarray) -> tuple[str, dict[str, float]]:
    """The template shape that best explains a patch of coverage, and each template's soft IoU.

    Each template is fitted by moments (centroid and variance along x and y), so partially
    covered edge pixels count and a stretched object still matches its shape.
    """
    mx, my, vx, vy = _moments(cover)
    h, w = cover.shape
    ious = {}
    for shape in SHAPE_NAMES:
        ox, oy, ux, uy = _unit_moments(shape)
        a, b = np.sqrt(vx / ux), np.sqrt(vy / uy)
        t = _raster(shape, mx - a * ox, my - b * oy, a, b, w, h)
        ious[shape] = float(np.minimum(t, cover).sum() / max(np.maximum(t, cover).sum(), 1e-9))
    return max(ious, key=ious.get), ious


def _to_array(image: Any) -> np.ndarray:
    """HxWx3 float array in [0, 255]."""
    if hasattr(image, "convert"):
        return np.asarray(image.convert("RGB"), dtype=np.float32)
    import torch

    if isinstance(image, torch.Tensor):
        arr = image.detach().float().cpu().numpy()
        if arr.ndim == 3 and arr.shape[0] in (1, 3):
            arr = np.moveaxis(arr, 0, -1)
        if arr.shape[-1] == 1:
            arr = np.repeat(arr, 3, axis=-1)
        return np.clip(arr, 0, 1) * 255.0
    arr = np.asarray(image, dtype=np.float32)
    return arr * 255.0 if arr.max() <= 1.0 else arr


def _full_chroma() -> np.ndarray:
    from crdiff_search.testbed.scenes import COLOURS

    return np.array([max(COLOURS[c]) - min(COLOURS[c]) for c in COLOUR_NAMES], dtype=np.float32)


def coverage_and_colour(rgb: np.ndarray):
    """Per-pixel object coverage in [0, 1] and colour index (hue sector), from an RGB array."""
    mx, mn = rgb.max(axis=-1), rgb.min(axis=-1)
    chroma = mx - mn
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    safe = np.where(chroma > 0, chroma, 1.0)
    hue = np.where(
        mx == r, ((g - b) / safe) % 6, np.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4)
    )
    colour = np.round(hue).astype(np.int64) % 6
    return np.clip(chroma / _full_chroma()[colour], 0.0, 1.0), colour


def detect(image: Any, *, threshold: float = 0.5, fragment_area: float = 0.004):
    """Objects and the number of fragments in one image."""
    from scipy import ndimage

    rgb = _to_array(image)
    cover, colour = coverage_and_colour(rgb)
    h, w = cover.shape
    min_area = max(3.0, fragment_area * min(h, w) ** 2)
    solid = cover >= threshold
    objects: list[Detection] = []
    fragments = 0
    for ci, name in enumerate(COLOUR_NAMES):
        labels, n = ndimage.label(solid & (colour == ci))
        if n == 0:
            continue
        for k, sl in enumerate(ndimage.find_objects(labels), start=1):
            mask = labels[sl] == k
            area = int(mask.sum())
            if area < min_area:
                fragments += 1
                continue
            ys, xs = sl
            # A margin of 2 pixels keeps the object's soft edges; other objects stay out.
            y0, y1 = max(ys.start - 2, 0), min(ys.stop + 2, h)
            x0, x1 = max(xs.start - 2, 0), min(xs.stop + 2, w)
            near = ndimage.binary_dilation(labels[y0:y1, x0:x1] == k, iterations=2)
            patch = np.where(near & (colour[y0:y1, x0:x1] == ci), cover[y0:y1, x0:x1], 0.0)
            shape, _ = classify_shape(patch)
            objects.append(Detection(name, shape, area, (xs.start, ys.start, xs.stop, ys.stop)))
    return objects, fragments


def score_parts(expected: Sequence[tuple[str, str]], objects: Sequence[Detection], fragments: int):
    """The score and its parts for one image (see the module docstring)."""
    n_e, n_d = len(expected), len(objects)
    n = max(n_e, n_d, 1)
    e_c = Counter(c for c, _ in expected)
    d_c = Counter(o.colour for o in objects)
    e_cs = Counter(expected)
    d_cs = Counter((o.colour, o.shape) for o in objects)
    count = 1.0 - min(1.0, abs(n_d - n_e) / max(n_e, 1))
    colour = sum(min(e_c[c], d_c[c]) for c in e_c) / n
    shape = sum(min(e_cs[k], d_cs[k]) for k in e_cs) / n
    duplicates = sum(max(0, d_c[c] - e_c[c]) for c in e_c)
    penalty = 0.05 * min(fragments, 4) + 0.1 * min(duplicates, 3)
    score = float(np.clip((count + colour + shape) / 3 - penalty, 0.0, 1.0))
    exact = fragments == 0 and Counter(expected) == d_cs
    return {
        "score": score,
        "count": count,
        "colour": colour,
        "shape": shape,
        "n_expected": n_e,
        "n_detected": n_d,
        "fragments": fragments,
        "duplicates": duplicates,
        "exact": exact,
    }


class SceneObjective(Objective):
    """Counts, colours and shapes of the objects found in an image, against its scene caption.

    Prompts must follow the grammar of :mod:`crdiff_search.testbed.scenes`.
    """

    name = "scene"
    higher_is_better = True

    def __init__(self, *, threshold: float = 0.5, fragment_area: float = 0.004):
        self.threshold = threshold
        self.fragment_area = fragment_area

    def _rows(self, images, prompts) -> list[dict]:
        from crdiff_search.testbed.scenes import parse_caption

        self._check_batch(images, prompts)
        expected = [parse_caption(p).objects() for p in prompts]  # errors before any work
        rows = []
        for image, exp, prompt in zip(images, expected, prompts, strict=True):
            objects, fragments = detect(
                image, threshold=self.threshold, fragment_area=self.fragment_area
            )
            rows.append({"prompt": prompt, **score_parts(exp, objects, fragments)})
        return rows

    def score(self, images: Sequence[Any], prompts: Sequence[str]) -> np.ndarray:
        return np.array([r["score"] for r in self._rows(images, prompts)], dtype=np.float64)

    def parts(self, images: Sequence[Any], prompts: Sequence[str]):
        import pandas as pd

        return pd.DataFrame(self._rows(images, prompts))
