"""POA memory and time: one set of weights (ours) vs two full UNets (the reference) vs dense.

A random-init UNet of SD1.5's size runs on CPU, each variant in its own subprocess so that
peak memory is measured fairly (Linux ``VmHWM``). Per variant:

* ``dense``: one UNet, one forward per step (the baseline);
* ``poa``: the same UNet pruned in place by :class:`crdiff_search.pruning.Pruner`
  (``cache="none"``) and :class:`crdiff_search.poa.PrunedOutputAmplifier` (w = 1.5), its
  default (``batched="auto"``: one forward at twice the batch per step at batches up to 4),
  only the pruned tensors held twice;
* ``poa2``: the same with ``batched=False``: two forwards per step;
* ``twin``: the reference way, a dense UNet plus a full pruned copy, two forwards per step.

``peak_rss_mb`` is the whole process's peak; ``sampling_peak_rss_mb`` the peak while stepping
(the counter is reset after setup, so one-off costs such as threshold selection are excluded).
The ratios use the whole-process peak.

Usage::

    python benchmarks/poa.py            # a table
    python benchmarks/poa.py --json     # memory_ratio_vs_dense, time_ratio_vs_dense, ...
    python benchmarks/poa.py --json --steps 6 --rounds 2   # interleaved, pooled: steadier

``time_ratio_vs_dense`` is the ratio of median step times (pooled over rounds); the means are
reported beside it (``*_time_ratio_mean``), and the fastest steps (``*_time_ratio_min``).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("dense", "poa", "poa2", "twin")
RATIOS = {"down": 0.3, "mid": 0.3, "up": 0.3}
TARGETS = {"memory_ratio_vs_dense": 1.35, "time_ratio_vs_dense": 2.1}


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def run_variant(variant: str, *, latent: int, batch: int, steps: int, warmup: int) -> dict:
    import torch

    from crdiff_search.testing import sd15_unet_config, unet_from_config

    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    unet = unet_from_config(sd15_unet_config(), seed=0)
    combine = None
    if variant in ("poa", "poa2"):
        from crdiff_search.apply import dense_tensors_of
        from crdiff_search.poa import PrunedOutputAmplifier
        from crdiff_search.pruning import Pruner
        from crdiff_search.search_spaces import build_partition

        pruner = Pruner(unet, build_partition(unet, "paper"), cache="none").apply_(RATIOS)
        amp = PrunedOutputAmplifier(
            unet,
            dense_tensors_of(pruner, RATIOS),
            w=1.5,
            batched="auto" if variant == "poa" else False,
        )
        amp.__enter__()
    elif variant == "twin":
        import copy

        from crdiff_search.pruning import Pruner
        from crdiff_search.search_spaces import build_partition

        pruned = copy.deepcopy(unet)
        pruner = Pruner(pruned, build_partition(pruned, "paper"), cache="none").apply_(RATIOS)
        del pruner  # the reference holds the pruned model only, no dense backup

        def combine(x, t, ctx):
            d = unet(x, t, ctx, return_dict=False)[0]
            p = pruned(x, t, ctx, return_dict=False)[0]
            return (1 - 1.5) * d + 1.5 * p

    import gc

    gc.collect()
    setup_s = time.perf_counter() - t0
    step = combine or (lambda x, t, ctx: unet(x, t, ctx, return_dict=False)[0])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 4, latent, latent, generator=g)
    ctx = torch.randn(batch, 77, 768, generator=g)
    _reset_peak()
    times = []
    with torch.inference_mode():
        for i in range(warmup + steps):
            t = torch.tensor(999 - 50 * i)
            start = time.perf_counter()
            out = step(x, t, ctx)
            if i >= warmup:
                times.append(time.perf_counter() - start)
            x = x - 0.01 * out
    return {
        "variant": variant,
        "params_m": sum(p.numel() for p in unet.parameters()) / 1e6,
        "setup_s": setup_s,
        "step_s": sum(times) / len(times),
        "step_s_min": min(times),
        "step_s_median": statistics.median(times),
        "step_times": times,
        "sampling_peak_rss_mb": _rss_mb("VmHWM"),
        "lifetime_peak_rss_mb": _lifetime_peak_mb(),
        "steps": steps,
    }


def _lifetime_peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _pool(rows: list[dict]) -> dict:
    """One variant's runs: pooled step times, the largest memory peaks."""
    times = [t for row in rows for t in row["step_times"]]
    return {
        **rows[-1],
        "runs": len(rows),
        "step_times": times,
        "step_s": sum(times) / len(times),
        "step_s_min": min(times),
        "step_s_median": statistics.median(times),
        "setup_s": max(row["setup_s"] for row in rows),
        "peak_rss_mb": max(row["peak_rss_mb"] for row in rows),
        "sampling_peak_rss_mb": max(row["sampling_peak_rss_mb"] for row in rows),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latent", type=int, default=32, help="latent side (default 32)")
    parser.add_argument("--batch", type=int, default=2, help="batch (default 2: one CFG pair)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every variant this many times, interleaved (default 1); times are pooled",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    opts = dict(latent=args.latent, batch=args.batch, steps=args.steps, warmup=args.warmup)
    if args._child:
        print(json.dumps(run_variant(args._child, **opts)))
        return 0
    runs: dict[str, list[dict]] = {}
    for _round, variant in itertools.product(range(args.rounds), args.variants.split(",")):
        cmd = [
            sys.executable,
            __file__,
            "--_child",
            variant,
            "--latent",
            str(args.latent),
            "--batch",
            str(args.batch),
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["peak_rss_mb"] = row.pop("lifetime_peak_rss_mb")
        runs.setdefault(variant, []).append(row)
        if not args.json:
            print(
                f"{variant:6s} peak {row['peak_rss_mb']:8.0f} MB  sampling peak "
                f"{row['sampling_peak_rss_mb']:8.0f} MB  {row['step_s']:.2f} s/step",
                flush=True,
            )
    results = {v: _pool(rows) for v, rows in runs.items()}
    summary = {"settings": {**opts, "rounds": args.rounds}, "variants": results}
    if "dense" in results:
        base = results["dense"]
        for v in results:
            if v == "dense":
                continue
            summary[f"{v}_memory_ratio"] = results[v]["peak_rss_mb"] / base["peak_rss_mb"]
            summary[f"{v}_sampling_memory_ratio"] = (
                results[v]["sampling_peak_rss_mb"] / base["sampling_peak_rss_mb"]
            )
            # medians of the pooled step times: one slow step (other jobs) moves them little
            summary[f"{v}_time_ratio"] = results[v]["step_s_median"] / base["step_s_median"]
            summary[f"{v}_time_ratio_mean"] = results[v]["step_s"] / base["step_s"]
            # the fastest step of each: less sensitive to other load on a shared machine
            summary[f"{v}_time_ratio_min"] = results[v]["step_s_min"] / base["step_s_min"]
        if "poa" in results:
            summary["memory_ratio_vs_dense"] = summary["poa_memory_ratio"]
            summary["time_ratio_vs_dense"] = summary["poa_time_ratio"]
            summary["time_ratio_vs_dense_min"] = summary["poa_time_ratio_min"]
            summary["targets"] = TARGETS
            summary["meets_targets"] = all(summary[k] <= v for k, v in TARGETS.items())
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for k, v in summary.items():
            if k.endswith("ratio") or k.endswith("dense"):
                print(f"{k}: {v:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
