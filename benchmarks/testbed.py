"""Time one search trial's batch on the testbed: generate and score 16 prompts at 2R.

    .venv/bin/python benchmarks/testbed.py [--repeats 3] [--size 64x64] [--model FOLDER]

Prints the median wall time of generation + scoring (the model is loaded once, untimed).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

# Run as a script, this folder comes first on sys.path and its modules would shadow the packages.
sys.path[0] = str(Path(__file__).resolve().parents[1])


def main() -> None:
    from crdiff_search import testbed
    from crdiff_search.models import generate_images
    from crdiff_search.objectives.scene import SceneObjective
    from crdiff_search.resolution import parse_resolution
    from crdiff_search.testbed.scenes import sample_captions

    w, h = testbed.TRAINING_RESOLUTION
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default=f"{2 * w}x{2 * h}")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    width, height = parse_resolution(args.size)
    pipe = testbed.load_pipeline(folder=args.model)
    objective = SceneObjective()
    prompts = sample_captions(args.prompts, seed=0)
    seeds = list(range(args.prompts))
    times, score = [], 0.0
    for _ in range(args.repeats):
        start = time.perf_counter()
        images = generate_images(
            pipe,
            prompts,
            seeds,
            width=width,
            height=height,
            steps=testbed.DEFAULT_STEPS,
            guidance=testbed.DEFAULT_GUIDANCE,
        )
        score = objective.aggregate(objective.score(images, prompts))
        times.append(time.perf_counter() - start)
    print(
        f"{args.prompts} prompts at {width}x{height}, {testbed.DEFAULT_STEPS} steps, guidance "
        f"{testbed.DEFAULT_GUIDANCE}: median {statistics.median(times):.2f} s "
        f"(runs: {', '.join(f'{t:.2f}' for t in times)}), mean score {score:.3f}"
    )


if __name__ == "__main__":
    main()
