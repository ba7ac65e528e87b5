"""The cross-resolution gap: the ``scene`` score of the testbed model at several sizes.

The prompt set and the noise are fixed by one seed (prompt ``i`` uses noise seed ``seed + i``), so
every size sees the same prompts and the same starting noise up to its shape.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

from crdiff_search.errors import UsageError

_SIZE = re.compile(r"^(\d+)x(\d+)$")


def standard_sizes() -> list[tuple[int, int]]:
    """R, 1.5R, 2R, a 2:1 landscape size at 2R x R, and 0.75R (width x height)."""
    from crdiff_search.testbed import TRAINING_RESOLUTION

    w, h = TRAINING_RESOLUTION
    return [(w, h), (w * 3 // 2, h * 3 // 2), (2 * w, 2 * h), (2 * w, h), (w * 3 // 4, h * 3 // 4)]


def parse_resolution(text: str, *, multiple: int = 8) -> tuple[int, int]:
    """``"96x64"`` -> ``(96, 64)`` (width, height), multiples of ``multiple``."""
    m = _SIZE.match(str(text).strip().lower())
    if not m:
        raise UsageError(f"bad resolution {text!r}: expected WIDTHxHEIGHT such as 64x64 or 96x64")
    w, h = int(m.group(1)), int(m.group(2))
    if w < multiple or h < multiple or w % multiple or h % multiple:
        raise UsageError(
            f"bad resolution {text!r}: width and height must be positive multiples of {multiple}"
        )
    return w, h


def evaluate(
    sizes: Sequence[tuple[int, int]] | None = None,
    *,
    n_prompts: int = 64,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    model: str | None = None,
    batch_size: int = 16,
    pipe=None,
) -> dict:
    """Mean ``scene`` score per size; the report of ``crdiff testbed eval``.

    Returns ``{"training_resolution": "32x32", "results": [{"resolution", "mean_score", "n",
    ...parts}], "settings": {...}}``.
    """
    from crdiff_search import testbed
    from crdiff_search.models import generate_images
    from crdiff_search.testbed.scenes import sample_captions
    from objectives.scene import SceneObjective

    if n_prompts < 1:
        raise UsageError(f"--prompts must be >= 1, got {n_prompts}")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {batch_size}")
    sizes = list(sizes) if sizes else standard_sizes()
    steps = testbed.DEFAULT_STEPS if steps is None else steps
    guidance = testbed.DEFAULT_GUIDANCE if guidance is None else guidance
    if steps < 1:
        raise UsageError(f"--steps must be >= 1, got {steps}")
    if pipe is None:
        pipe = testbed.load_pipeline(folder=model)
    multiple = pipe.size_multiple
    for w, h in sizes:
        if w % multiple or h % multiple:
            raise UsageError(f"bad resolution {w}x{h}: sides must be multiples of {multiple}")

    prompts = sample_captions(n_prompts, seed)
    seeds = [seed + i for i in range(n_prompts)]
    objective = SceneObjective()
    results = []
    for w, h in sizes:
        start = time.perf_counter()
        images = generate_images(
            pipe,
            prompts,
            seeds,
            width=w,
            height=h,
            steps=steps,
            guidance=guidance,
            batch_size=batch_size,
        )
        parts = objective.parts(images, prompts)
        results.append(
            {
                "resolution": f"{w}x{h}",
                "mean_score": round(float(parts["score"].mean()), 4),
                "n": len(prompts),
                "count": round(float(parts["count"].mean()), 4),
                "colour": round(float(parts["colour"].mean()), 4),
                "shape": round(float(parts["shape"].mean()), 4),
                "exact": round(float(parts["exact"].mean()), 4),
                "objects_per_image": round(float(parts["n_detected"].mean()), 2),
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
    tw, th = testbed.TRAINING_RESOLUTION
    return {
        "training_resolution": f"{tw}x{th}",
        "results": results,
        "settings": {"prompts": n_prompts, "steps": steps, "guidance": guidance, "seed": seed},
    }


def to_json(report: dict) -> dict:
    """The stable JSON form: training resolution and, per size, resolution, mean score and n."""
    return {
        "training_resolution": report["training_resolution"],
        "results": [
            {"resolution": r["resolution"], "mean_score": r["mean_score"], "n": r["n"]}
            for r in report["results"]
        ],
    }


def format_table(report: dict) -> str:
    """A Markdown table of the report, training size marked."""
    s = report["settings"]
    lines = [
        f"scene score, {s['prompts']} prompts, {s['steps']} steps, guidance {s['guidance']}, "
        f"seed {s['seed']} (trained at {report['training_resolution']})",
        "",
        "| resolution | mean score | count | colour | shape | exact | objects/image | n | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        mark = " (R)" if r["resolution"] == report["training_resolution"] else ""
        lines.append(
            f"| {r['resolution']}{mark} | {r['mean_score']:.3f} | {r['count']:.3f} | "
            f"{r['colour']:.3f} | {r['shape']:.3f} | {r['exact']:.3f} | "
            f"{r['objects_per_image']:.2f} | {r['n']} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"
