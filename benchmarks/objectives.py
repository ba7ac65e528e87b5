"""Throughput of every scorer: images per second, at its tiny size and at real size.

Tiny: the random-weight checkpoints of ``objectives._tiny`` (same code paths as the real files).
FID's tiny row uses a 64-d conv feature extractor (FID's real cost is InceptionV3 plus the
2048-d matrix square root, measured by the real row when weights and a reference are present). Real size: each scorer with its default weights, looked up locally only
(``HF_HUB_OFFLINE=1`` unless set); a scorer whose weights are absent prints a skipped line
saying what is missing.

Usage:
    nice -n 10 .venv/bin/python benchmarks/objectives.py               # table
    nice -n 10 .venv/bin/python benchmarks/objectives.py --json        # {"results": [...]}
    nice -n 10 .venv/bin/python benchmarks/objectives.py --images 32 --size 512 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

SCORERS = ("imagereward", "clip", "pickscore", "aesthetic", "fid")


def _images(n: int, size: int):
    from PIL import Image

    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)
    ]


def _tiny_extractor():
    """A 64-d conv feature extractor with Inception's interface (uint8 in, resized inside)."""
    import torch
    from torch import nn

    class Extractor(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 64, 5, stride=4)

        def forward(self, x):
            x = nn.functional.interpolate(x.float() / 255, size=(64, 64), mode="bilinear")
            return torch.tanh(self.conv(x)).mean((2, 3))

    torch.manual_seed(0)
    return Extractor()


def tiny_options(folder: Path, device: str) -> dict[str, dict]:
    from crdiff_search.objectives import _tiny

    config, checkpoint = _tiny.write_tiny_open_clip(folder / "clip")
    ir = _tiny.write_tiny_imagereward(folder / "imagereward")
    reference = folder / "reference"
    reference.mkdir()
    for i, image in enumerate(_images(8, 64)):
        image.save(reference / f"{i}.png")
    return {
        "imagereward": {**{k: str(v) for k, v in ir.items()}, "vision_heads": 4},
        "clip": {"model": str(config), "pretrained": str(checkpoint)},
        "pickscore": {"model": str(_tiny.write_tiny_pickscore(folder / "pick"))}
        | {"processor": str(folder / "pick")},
        "aesthetic": {
            "weights": str(_tiny.write_tiny_aesthetic(folder / "aesthetic")),
            "clip_model": str(config),
            "clip_pretrained": str(checkpoint),
        },
        "fid": {
            "reference": str(reference),
            "extractor": _tiny_extractor(),
            "kid_subsets": 10,
            "cache_dir": str(folder / "cache"),
        },
    }


def measure(name: str, size_label: str, options: dict, args) -> dict:
    from crdiff_search.objectives import create_objective
    from crdiff_search.objectives._common import MissingWeightsError

    row = {"scorer": name, "size": size_label, "device": args.device, "n_images": args.images}
    start = time.perf_counter()
    try:
        scorer = create_objective(name, device=args.device, **options)
    except MissingWeightsError as err:
        lines = [line.strip(" -") for line in str(err).splitlines()]
        return row | {"status": "skipped", "reason": " ".join(lines)}
    except Exception as err:  # a real-size load can fail for reasons worth reporting
        return row | {"status": "skipped", "reason": f"{type(err).__name__}: {err}".splitlines()[0]}
    row["load_s"] = round(time.perf_counter() - start, 3)
    images = _images(args.images, args.size)
    prompts = ["a red cube and two blue spheres on a table"] * len(images)
    scorer.score(images[: min(2, len(images))], prompts[:2])  # warm-up
    start = time.perf_counter()
    scores = scorer.score(images, prompts)
    seconds = time.perf_counter() - start
    return row | {
        "status": "ok",
        "images_per_s": round(len(images) / seconds, 2),
        "score_s": round(seconds, 3),
        "mean_score": round(float(np.mean(scores)), 4),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16, help="images per measurement")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--scorers", nargs="+", default=list(SCORERS), choices=SCORERS)
    parser.add_argument("--no-real", action="store_true", help="only the tiny models")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    import torch

    torch.manual_seed(0)
    results = []
    with tempfile.TemporaryDirectory(prefix="crdiff-bench-objectives-") as tmp:
        tiny = tiny_options(Path(tmp), args.device)
        for name in args.scorers:
            results.append(measure(name, "tiny", tiny[name], args))
            if not args.no_real:
                real = {"fid": {"reference": os.environ.get("CRDIFF_FID_REFERENCE")}}.get(name, {})
                if name == "fid" and real["reference"] is None:
                    results.append(
                        {"scorer": name, "size": "real", "status": "skipped"}
                        | {"reason": "no reference folder: set CRDIFF_FID_REFERENCE"}
                    )
                    continue
                results.append(measure(name, "real", real, args))
    if args.json:
        print(json.dumps({"results": results}, indent=2))
        return 0
    print(f"{'scorer':<12} {'size':<5} {'images/s':>9} {'load s':>7}  note")
    for r in results:
        if r["status"] == "ok":
            print(
                f"{r['scorer']:<12} {r['size']:<5} {r['images_per_s']:>9.2f} {r['load_s']:>7.2f}"
                f"  {r['n_images']} images {args.size}px on {r['device']}"
            )
        else:
            print(f"{r['scorer']:<12} {r['size']:<5} {'-':>9} {'-':>7}  skipped: {r['reason']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
