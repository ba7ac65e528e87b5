"""Procedural scenes: a tiny caption grammar and an anti-aliased renderer at any size.

Grammar (lower case, words separated by single spaces)::

    caption := group | group " and " group
    group   := count " " colour " " shape      (shape in the plural when count > 1)
    count   := "a" | "an" | "one" | "two" | "three"
    colour  := red | yellow | green | cyan | blue | magenta
    shape   := circle | square | triangle | diamond

The two groups of a caption differ in colour or shape. Layouts (positions and sizes) are drawn
from a seed in units of the image's shorter side, so one seed gives the same scene, scaled, at
32x32 and at 64x64; objects never overlap.

Example::

    >>> scene = parse_caption("two red circles and a blue square")
    >>> scene.n_objects
    3
    >>> render(scene, 96, 64, seed=1).size
    (96, 64)
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from crdiff_search.errors import UsageError

# Colours one hue step (60 degrees) apart, so that a pixel's hue names its colour unambiguously.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),
    "yellow": (225, 225, 25),
    "green": (25, 180, 25),
    "cyan": (25, 200, 200),
    "blue": (40, 40, 230),
    "magenta": (210, 30, 210),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
COUNT_WORDS: dict[str, int] = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3}
MAX_GROUPS = 2
MAX_COUNT = 3
BACKGROUND: tuple[int, int, int] = (250, 250, 250)

# Object diameters as fractions of the shorter image side, and the gap kept between objects.
MIN_SIZE, MAX_SIZE, GAP = 0.22, 0.30, 0.05
_SUPERSAMPLE = 4

GRAMMAR = (
    "caption = GROUP or 'GROUP and GROUP'; GROUP = COUNT COLOUR SHAPE[s]; "
    f"COUNT in {sorted(COUNT_WORDS)}; COLOUR in {list(COLOURS)}; SHAPE in {list(SHAPES)} "
    "(plural when COUNT > 1); the two groups must differ"
)


@dataclass(frozen=True)
class Group:
    """``count`` objects of one colour and shape."""

    count: int
    colour: str
    shape: str

    @property
    def kind(self) -> tuple[str, str]:
        return (self.colour, self.shape)

    @property
    def phrase(self) -> str:
        word = "a" if self.count == 1 else ("two", "three")[self.count - 2]
        return f"{word} {self.colour} {self.shape}{'s' if self.count > 1 else ''}"


@dataclass(frozen=True)
class Scene:
    """A parsed caption: one or two groups."""

    groups: tuple[Group, ...]

    @property
    def caption(self) -> str:
        return " and ".join(g.phrase for g in self.groups)

    @property
    def n_objects(self) -> int:
        return sum(g.count for g in self.groups)

    def objects(self) -> list[tuple[str, str]]:
        """One ``(colour, shape)`` per object."""
        return [(g.colour, g.shape) for g in self.groups for _ in range(g.count)]


def _bad(caption: str, why: str) -> UsageError:
    return UsageError(f"bad scene caption {caption!r}: {why}. Grammar: {GRAMMAR}")


def _parse_group(words: list[str], caption: str) -> Group:
    if len(words) != 3:
        raise _bad(caption, f"group {' '.join(words)!r} is not COUNT COLOUR SHAPE")
    count_word, colour, shape_word = words
    if count_word not in COUNT_WORDS:
        raise _bad(caption, f"unknown count {count_word!r}")
    if colour not in COLOURS:
        raise _bad(caption, f"unknown colour {colour!r}")
    count = COUNT_WORDS[count_word]
    plural = shape_word.endswith("s")
    shape = shape_word[:-1] if plural else shape_word
    if shape not in SHAPES:
        raise _bad(caption, f"unknown shape {shape_word!r}")
    if (count > 1) != plural:
        raise _bad(caption, f"{count_word!r} does not agree with {shape_word!r}")
    return Group(count, colour, shape)


def parse_caption(caption: str) -> Scene:
    """Parse a caption of the scene grammar; :class:`UsageError` names the grammar otherwise."""
    if not isinstance(caption, str) or not caption.strip():
        raise _bad(str(caption), "empty caption")
    words = caption.strip().lower().split()
    parts: list[list[str]] = [[]]
    for word in words:
        if word == "and":
            parts.append([])
        else:
            parts[-1].append(word)
    if len(parts) > MAX_GROUPS:
        raise _bad(caption, f"at most {MAX_GROUPS} groups")
    groups = tuple(_parse_group(p, caption) for p in parts)
    if len(groups) == 2 and groups[0].kind == groups[1].kind:
        raise _bad(caption, "both groups have the same colour and shape")
    return Scene(groups)


def sample_scene(rng: np.random.Generator, *, max_objects: int = 4) -> Scene:
    """A random scene of one or two groups with at most ``max_objects`` objects."""
    colours, shapes = list(COLOURS), list(SHAPES)
    n_groups = 1 if rng.random() < 0.4 else 2
    while True:
        groups = []
        for _ in range(n_groups):
            groups.append(
                Group(
                    int(rng.integers(1, MAX_COUNT + 1)),
                    colours[int(rng.integers(len(colours)))],
                    shapes[int(rng.integers(len(shapes)))],
                )
            )
        if sum(g.count for g in groups) > max_objects:
            continue
        if n_groups == 2 and groups[0].kind == groups[1].kind:
            continue
        return Scene(tuple(groups))


def sample_captions(
    n: int, seed: int, *, max_objects: int = 4, exclude: Collection[str] = ()
) -> list[str]:
    """``n`` captions drawn from the grammar with a fixed seed (at most ``max_objects`` objects).

    Captions in ``exclude`` are skipped (a held-out set that shares no caption with a search
    set); the draws stay the same, so the result is a prefix-stable function of the seed.
    """
    if n < 0:
        raise UsageError(f"number of captions must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    if not exclude:
        return [sample_scene(rng, max_objects=max_objects).caption for _ in range(n)]
    skip = set(exclude)
    out: list[str] = []
    for _ in range(100 * n + 100):
        if len(out) == n:
            return out
        caption = sample_scene(rng, max_objects=max_objects).caption
        if caption not in skip:
            out.append(caption)
    if len(out) == n:
        return out
    raise UsageError(
        f"cannot draw {n} captions outside the {len(skip)} excluded ones from the grammar"
    )


@dataclass(frozen=True)
class Placed:
    """One object of a layout, in units of the shorter image side."""

    colour: str
    shape: str
    x: float
    y: float
    size: float


def layout(scene: Scene, aspect: float, *, seed: int = 0) -> list[Placed]:
    """Non-overlapping positions and sizes for ``scene`` on a canvas ``aspect`` = width / height."""
    rng = np.random.default_rng(seed)
    extent = (max(aspect, 1.0), max(1.0 / aspect, 1.0))  # canvas in shorter-side units
    objects = scene.objects()
    order = rng.permutation(len(objects))
    scale = 1.0
    for attempt in range(400):
        if attempt and attempt % 100 == 0:
            scale *= 0.85  # crowded: shrink everything rather than overlap
        placed: list[Placed] = []
        for i in order:
            colour, shape = objects[i]
            size = scale * rng.uniform(MIN_SIZE, MAX_SIZE)
            r = size / 2
            for _ in range(60):
                x = rng.uniform(r + GAP / 2, extent[0] - r - GAP / 2)
                y = rng.uniform(r + GAP / 2, extent[1] - r - GAP / 2)
                if all(np.hypot(x - p.x, y - p.y) >= r + p.size / 2 + GAP for p in placed):
                    placed.append(Placed(colour, shape, x, y, size))
                    break
            else:
                break
        if len(placed) == len(objects):
            return placed
    raise RuntimeError(f"could not place {len(objects)} objects for {scene.caption!r}")


def shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    """Vertices of ``shape`` centred at (cx, cy) with half-extent r; None for a circle."""
    if shape == "square":
        h = 0.85 * r  # a square of the same diameter looks bigger than a circle; even them out
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + 0.8 * r), (cx - r, cy + 0.8 * r)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    if shape == "circle":
        return None
    raise UsageError(f"unknown shape {shape!r}; valid: {list(SHAPES)}")


def _draw(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    poly = shape_polygon(shape, cx, cy, r)
    if poly is None:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon(poly, fill=fill)


def _check_size(width: int, height: int) -> None:
    if not (isinstance(width, int) and isinstance(height, int)) or width < 8 or height < 8:
        raise UsageError(f"image size must be integers >= 8, got {width}x{height}")


def render(scene_or_caption: Scene | str, width: int, height: int, *, seed: int = 0) -> Image.Image:
    """Draw a scene (or a caption) at ``width`` x ``height`` with anti-aliasing.

    The same ``seed`` and aspect ratio give the same layout at every size.
    """
    scene = (
        parse_caption(scene_or_caption) if isinstance(scene_or_caption, str) else scene_or_caption
    )
    _check_size(width, height)
    unit = min(width, height) * _SUPERSAMPLE
    big = Image.new("RGB", (width * _SUPERSAMPLE, height * _SUPERSAMPLE), BACKGROUND)
    draw = ImageDraw.Draw(big)
    for p in layout(scene, width / height, seed=seed):
        _draw(draw, p.shape, p.x * unit, p.y * unit, p.size * unit / 2, COLOURS[p.colour])
    return big.resize((width, height), Image.Resampling.BOX)


def render_mask(shape: str, width: int, height: int) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of ``shape`` filling a ``width`` x ``height`` box.

    The shape is stretched to the box, as a detected object's bounding box would frame it.
    """
    s = _SUPERSAMPLE * 2
    big = Image.new("L", (width * s, height * s), 0)
    draw = ImageDraw.Draw(big)
    poly = shape_polygon(shape, 0.5, 0.5, 0.5)
    if poly is None:
        draw.ellipse([0, 0, width * s - 1, height * s - 1], fill=255)
    else:
        if shape == "square":
            poly = [(0, 0), (1, 0), (1, 1), (0, 1)]
        ys = [y for _, y in poly]
        lo, hi = min(ys), max(ys)
        draw.polygon(
            [(x * width * s, (y - lo) / (hi - lo) * height * s) for x, y in poly], fill=255
        )
    small = big.resize((width, height), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0
