"""Moving a loaded UNet to a new ratio vector with the Pruner vs reloading and pruning it afresh.

The model is a random-init ``UNet2DConditionModel`` built from the real SD1.5 config (860M
parameters, fp32, CPU; weights drawn from N(0, 0.02): only their count and shapes matter here).
One run measures, side by side:

- engine: ``Pruner(unet, paper, cache="sorted")`` (pointer-swap restore) built once (setup),
  then for each of several seeded ratio vectors ``apply_`` + ``restore_`` (a *move*); also the
  move of one ratio only (a simulated-annealing neighbour), and ``cache="none", swap=False``
  (kthvalue per apply, restore by copy);
- reference, alternating with the engine's moves (the engine's model stays loaded): load the
  UNet from a local ``save_pretrained`` folder (safetensors, temp dir, warm page cache) and prune
  it the reference way: per group, ``kthvalue`` over the concatenated ``|W|``, then
  ``weight *= |W| > t``;
- memory: bytes the engine adds (second copy of the selected tensors + sorted scores) relative
  to the model's bytes, by tensor accounting and by resident-set growth after the first apply.

The engine's pruned tensors are checked against the reference's (zero count and float64 sum per
tensor, both exact) for the first vector.

Usage:
    nice -n 10 .venv/bin/python benchmarks/pruning.py              # SD1.5, ~9 GB RAM, ~5 min
    nice -n 10 .venv/bin/python benchmarks/pruning.py --json
    .venv/bin/python benchmarks/pruning.py --config tiny           # smoke run, seconds
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

GROUPS = ("down", "mid", "up")
BOUNDS = (0.1, 0.8)


def rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def build_unet(config: dict, seed: int):
    """Random N(0, 0.02) weights, built on meta then materialised (default init is much slower)."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
    unet = unet.to_empty(device="cpu").eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in unet.parameters():
            p.normal_(0.0, 0.02, generator=gen)
        for b in unet.buffers():
            b.zero_()
    return unet


def reference_selection(model) -> dict[str, list[torch.Tensor]]:
    """The reference rule, inline: exact Linear/Conv2d, name has attn or ff, not attn2."""
    groups: dict[str, list[torch.Tensor]] = {g: [] for g in GROUPS}
    prefixes = {"down_blocks": "down", "mid_block": "mid", "up_blocks": "up"}
    for name, m in model.named_modules():
        if type(m) not in (torch.nn.Linear, torch.nn.Conv2d):
            continue
        if ("attn" in name or "ff" in name) and "attn2" not in name:
            group = prefixes.get(name.split(".")[0])
            if group:
                groups[group].append(m.weight)
    return groups


def reference_prune(model, ratios: dict[str, float]) -> None:
    with torch.no_grad():
        for group, weights in reference_selection(model).items():
            mags = torch.cat([w.abs().flatten() for w in weights])
            k = int(mags.numel() * ratios[group])
            if k == 0:
                continue
            t = torch.kthvalue(mags, k).values
            del mags
            for w in weights:
                w.mul_(w.abs() > t)


def fingerprint(model, names) -> dict[str, tuple[int, float]]:
    params = dict(model.named_parameters())
    return {
        n: (int(torch.count_nonzero(params[n])), float(params[n].detach().double().sum()))
        for n in names
    }


def ratio_vectors(n: int, seed: int) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    return [{g: round(float(rng.uniform(*BOUNDS)), 4) for g in GROUPS} for _ in range(n)]


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run(args) -> dict:
    from diffusers import UNet2DConditionModel

    from crdiff_search import testing
    from crdiff_search.pruning import Pruner
    from crdiff_search.search_spaces import build_partition

    if args.threads:
        torch.set_num_threads(args.threads)
    config = testing.sd15_unet_config() if args.config == "sd15" else testing.tiny_unet_config()
    vectors = ratio_vectors(args.repeats, args.seed)
    out: dict = {"config": args.config, "torch": torch.__version__}
    out["threads"] = torch.get_num_threads()

    t_build, unet = timed(lambda: build_unet(config, args.seed))
    model_bytes = sum(t.numel() * t.element_size() for t in unet.state_dict().values())
    out.update(
        build_s=t_build,
        model_params=sum(p.numel() for p in unet.parameters()),
        model_bytes=model_bytes,
    )
    with tempfile.TemporaryDirectory(prefix="crdiff-bench-") as tmp:
        folder = Path(tmp) / "unet"
        t0 = time.perf_counter()
        unet.save_pretrained(folder, safe_serialization=True)
        out["save_s"] = time.perf_counter() - t0

        # -- engine, cache="sorted" ------------------------------------------------------------
        partition = build_partition(unet, "paper")
        gc.collect()
        rss0 = rss_bytes()
        t0 = time.perf_counter()
        pruner = Pruner(unet, partition, cache="sorted")
        out["setup_s"] = time.perf_counter() - t0
        extra = pruner.extra_memory_bytes()
        params = dict(unet.named_parameters())
        selected = sum(params[n].numel() for n in partition.param_names)
        out.update(
            selected_params=selected,
            selected_fraction=selected / out["model_params"],
            extra_memory_bytes=extra["total"],
            extra_memory_ratio=extra["total"] / model_bytes,
        )
        # Engine moves and reference reloads alternate, so that both sample the same periods of
        # a shared machine's load; CPU time is recorded next to wall time for the same reason.
        applies, restores, move_cpu = [], [], []
        loads, prunes, reload_cpu = [], [], []
        for i, ratios in enumerate(vectors):
            c0, t0 = time.process_time(), time.perf_counter()
            pruner.apply_(ratios)
            t_apply = time.perf_counter() - t0
            if i == 0:
                # the work buffer's pages are committed by the first apply: measure after it
                rss_engine = rss_bytes() - rss0
                engine_print = fingerprint(unet, partition.param_names)
            t0 = time.perf_counter()
            pruner.restore_()
            restores.append(time.perf_counter() - t0)
            applies.append(t_apply)
            if i > 0:  # the first move includes the fingerprint (and page commits)
                move_cpu.append(time.process_time() - c0)
            if i >= args.reload_repeats:
                continue
            c0, t0 = time.process_time(), time.perf_counter()
            model = UNet2DConditionModel.from_pretrained(folder, use_safetensors=True).eval()
            loads.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            reference_prune(model, ratios)
            prunes.append(time.perf_counter() - t0)
            reload_cpu.append(time.process_time() - c0)
            if i == 0:
                out["identical_to_reference"] = (
                    fingerprint(model, partition.param_names) == engine_print
                )
            del model
            gc.collect()
        out["extra_memory_ratio_rss"] = rss_engine / model_bytes
        moves = [a + r for a, r in zip(applies, restores, strict=True)]
        reloads = [a + b for a, b in zip(loads, prunes, strict=True)]
        out.update(
            apply_s=statistics.median(applies),
            restore_s=statistics.median(restores),
            move_s=statistics.median(moves),
            move_s_all=moves,
            move_cpu_s=statistics.median(move_cpu),
            reload_s=statistics.median(loads),
            reference_prune_s=statistics.median(prunes),
            reload_and_prune_s=statistics.median(reloads),
            reload_and_prune_s_all=reloads,
            reload_and_prune_cpu_s=statistics.median(reload_cpu),
        )
        # an annealing step changes one ratio: only that group is rewritten
        pruner.apply_(vectors[0])
        one = []
        for i, g in enumerate(GROUPS * 2):
            step = {**pruner.current_ratios, g: vectors[1 + i % (len(vectors) - 1)][g]}
            t0 = time.perf_counter()
            pruner.apply_(step)
            one.append(time.perf_counter() - t0)
        out["move_one_group_s"] = statistics.median(one)
        pruner.restore_()
        del pruner
        gc.collect()

        # -- engine, cache="none" (POA / generation) --------------------------------------------
        rss0 = rss_bytes()
        t0 = time.perf_counter()
        lean = Pruner(unet, partition, cache="none", swap=False)
        setup_none = time.perf_counter() - t0
        lean_moves, copy_restores = [], []
        for ratios in vectors[: args.none_repeats]:
            t0 = time.perf_counter()
            lean.apply_(ratios)
            t1 = time.perf_counter()
            lean.restore_()
            lean_moves.append(time.perf_counter() - t0)
            copy_restores.append(time.perf_counter() - t1)
        rss_lean = rss_bytes() - rss0
        # the same move if restore copied the dense values back instead of swapping pointers
        out["restore_copy_s"] = statistics.median(copy_restores)
        out["move_copy_restore_s"] = out["apply_s"] + out["restore_copy_s"]
        out["cache_none"] = {
            "swap": False,
            "setup_s": setup_none,
            "move_s": statistics.median(lean_moves),
            "extra_memory_ratio": lean.extra_memory_bytes()["total"] / model_bytes,
            "extra_memory_ratio_rss": rss_lean / model_bytes,
        }
        del lean, unet
        gc.collect()

    out["speedup_vs_reload"] = out["reload_and_prune_s"] / out["move_s"]
    out["speedup_vs_reload_cpu"] = out["reload_and_prune_cpu_s"] / out["move_cpu_s"]
    out["speedup_copy_restore_vs_reload"] = out["reload_and_prune_s"] / out["move_copy_restore_s"]
    out["speedup_one_group_vs_reload"] = out["reload_and_prune_s"] / (
        out["move_one_group_s"] or 1e-9
    )
    out["cache_none"]["speedup_vs_reload"] = out["reload_and_prune_s"] / out["cache_none"]["move_s"]
    # evaluations after which the one-time setup has paid for itself
    out["break_even_evaluations"] = out["setup_s"] / (out["reload_and_prune_s"] - out["move_s"])
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=("sd15", "tiny"), default="sd15")
    parser.add_argument("--repeats", type=int, default=5, help="ratio vectors for the engine")
    parser.add_argument("--reload-repeats", type=int, default=3)
    parser.add_argument("--none-repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.repeats < 2 or not 1 <= args.reload_repeats <= args.repeats:
        parser.error("need --repeats >= 2 and 1 <= --reload-repeats <= --repeats")
    res = run(args)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    gib = 2**30
    print(
        f"UNet {args.config}: {res['model_params'] / 1e6:.0f}M params, "
        f"{res['model_bytes'] / gib:.2f} GiB fp32; paper selection "
        f"{res['selected_params'] / 1e6:.0f}M ({res['selected_fraction']:.1%}); "
        f"{res['threads']} threads"
    )
    print(f"engine setup (backup + sort, once): {res['setup_s']:.2f} s")
    print(
        f"move to a new vector (apply + restore): {res['move_s']:.3f} s "
        f"(apply {res['apply_s']:.3f}, restore {res['restore_s']:.3f}); "
        f"one ratio changed: {res['move_one_group_s']:.3f} s"
    )
    print(
        f"reload + reference prune: {res['reload_and_prune_s']:.2f} s "
        f"(load {res['reload_s']:.2f}, kthvalue+mask {res['reference_prune_s']:.2f})"
    )
    print(
        f"with a copy-back restore instead of the pointer swap: "
        f"{res['move_copy_restore_s']:.3f} s ({res['speedup_copy_restore_vs_reload']:.1f}x)"
    )
    print(
        f"CPU time: move {res['move_cpu_s']:.3f} s, reload + prune "
        f"{res['reload_and_prune_cpu_s']:.2f} s: {res['speedup_vs_reload_cpu']:.1f}x"
    )
    print(
        f"speedup_vs_reload: {res['speedup_vs_reload']:.1f}x  "
        f"(one ratio changed: {res['speedup_one_group_vs_reload']:.0f}x; "
        f"break-even after {res['break_even_evaluations']:.2f} evaluations)"
    )
    print(
        f"extra_memory_ratio: {res['extra_memory_ratio']:.3f} "
        f"(resident growth {res['extra_memory_ratio_rss']:.3f})"
    )
    none = res["cache_none"]
    print(
        f"cache='none': move {none['move_s']:.2f} s, speedup {none['speedup_vs_reload']:.1f}x, "
        f"extra memory {none['extra_memory_ratio']:.3f}"
    )
    print(f"identical to reference: {res['identical_to_reference']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
