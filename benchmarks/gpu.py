"""The GPU check: what users pay for a search on real architectures, on one accelerator.

Random-init models at their real sizes (SD1.5, SDXL, the four scorers), fp16 (bf16 where it
differs). One run measures and prints one JSON object:

- ``env``: device, versions, HBM bandwidth (a large ``copy_``, bytes read + written) and the
  host-to-device bandwidth from pinned memory;
- ``scorers``: ImageReward, CLIP (ViT-L/14), PickScore (ViT-H/14), aesthetic (ViT-L/14 + MLP)
  loaded through the code paths that load real weights: images per second and memory;
- ``sd15`` / ``sdxl``: per model
  - ``pruner``: for each engine layout (backup on the device or in pinned host memory; sorted
    cache, histogram selection, or ``kthvalue``): setup time and its transient memory, extra
    memory held, time to switch to a new ratio vector and to move one ratio, the transient of a
    switch, the bandwidth bound of a switch, and whether the masks equal a direct ``kthvalue``
    on the GPU tensors (bf16 checked too);
  - ``trial``: images per second at batch 1, 4 and 8 per resolution (SDPA attention, fp16),
    channels-last and ``torch.compile`` where time allows, and one trial (switch, generation,
    scoring, restore) with the share that is not generation or scoring;
  - ``poa`` (SD1.5): time per step and memory, dense against POA batched and two-pass, and the
    out-of-memory fallback forced with a memory cap;
- ``tune``: a Ray Tune search on the GPU (4 trials, 2 in flight at ``gpu = 0.5``), GPU processes
  seen while it runs.

Every section is timed against ``--budget-s``; a section that fails records its error and the
run goes on; the JSON so far is rewritten to ``--out`` after each section.

Usage:
    python benchmarks/gpu.py --out gpu.json                  # CUDA, real sizes, ~8 minutes
    python benchmarks/gpu.py --device cpu --config tiny      # the same logic in under a minute
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
try:  # an installed package first (the GPU machine), else this checkout
    import crdiff_search.objectives  # noqa: F401
except ImportError:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

GIB = 1 << 30
RATIOS = {"down": 0.3, "mid": 0.5, "up": 0.7}
PROMPTS = [
    "a red cube on a wooden table",
    "two blue spheres in the snow",
    "a photo of a cat sitting on a windowsill",
    "three yellow triangles on a white background",
    "a lighthouse at night, oil painting",
    "a bowl of fruit, studio lighting",
    "a green car parked in a narrow street",
    "an astronaut riding a horse on the moon",
]
# per configuration: the models, their trial resolutions, steps, and the scorers' image size
CONFIGS = {
    "real": {
        "models": {"sd15": "sd15", "sdxl": "sdxl"},
        "resolutions": {"sd15": [768], "sdxl": [512, 1024]},
        "batches": [1, 4, 8],
        "steps": 20,
        "scorer_size": "real",
        "score_images": 32,
        "image_size": 768,
    },
    "tiny": {
        "models": {"sd15": "tiny-sd", "sdxl": "tiny-sdxl"},
        "resolutions": {"sd15": [64], "sdxl": [64, 96]},
        "batches": [1, 4],
        "steps": 2,
        "scorer_size": "tiny",
        "score_images": 4,
        "image_size": 64,
    },
}


# -- measuring ------------------------------------------------------------------------------


class Meter:
    """Wall time and accelerator memory of a block (CUDA: allocator counters; CPU: none)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def allocated(self) -> int:
        return torch.cuda.memory_allocated(self.device) if self.cuda else 0

    @contextlib.contextmanager
    def measure(self, out: dict, prefix: str = ""):
        """Sets ``{prefix}s`` (seconds), ``{prefix}held_gib`` (allocated after - before) and
        ``{prefix}transient_gib`` (peak during the block above what it leaves held)."""
        self.sync()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        before = self.allocated()
        t0 = time.perf_counter()
        yield
        self.sync()
        out[f"{prefix}s"] = time.perf_counter() - t0
        if self.cuda:
            after = self.allocated()
            peak = torch.cuda.max_memory_allocated(self.device)
            out[f"{prefix}held_gib"] = (after - before) / GIB
            out[f"{prefix}transient_gib"] = (peak - after) / GIB


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


# -- sections -------------------------------------------------------------------------------


def section_env(ctx) -> dict:
    device, meter = ctx["device"], ctx["meter"]
    out = {
        "device": torch.cuda.get_device_name(device) if meter.cuda else platform.processor(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
    }
    for name in ("diffusers", "transformers", "ray", "optuna", "open_clip"):
        try:
            out[name] = __import__(name).__version__
        except Exception as err:  # a missing package is a fact to report, not a failure
            out[name] = f"unavailable ({type(err).__name__})"
    if meter.cuda:
        out["gpu_memory_gib"] = torch.cuda.get_device_properties(device).total_memory / GIB
    n = (1 << 28) if meter.cuda else (1 << 24)  # 512 MiB / 32 MiB of fp16
    src = torch.empty(n, dtype=torch.float16, device=device).normal_()
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(5):
        meter.sync()
        t0 = time.perf_counter()
        dst.copy_(src)
        meter.sync()
        times.append(time.perf_counter() - t0)
    out["hbm_gbs"] = 2 * src.numel() * 2 / min(times) / 1e9
    if meter.cuda:
        host = torch.empty(n, dtype=torch.float16, pin_memory=True).normal_()
        times = []
        for _ in range(3):
            meter.sync()
            t0 = time.perf_counter()
            dst.copy_(host, non_blocking=True)
            meter.sync()
            times.append(time.perf_counter() - t0)
        out["h2d_pinned_gbs"] = host.numel() * 2 / min(times) / 1e9
        del host
    ctx["hbm_gbs"] = out["hbm_gbs"]
    ctx["h2d_gbs"] = out.get("h2d_pinned_gbs", out["hbm_gbs"])
    del src, dst
    free_memory()
    return out


def _scorer_options(kind: str, folder: Path, size: str, device: str) -> dict:
    from crdiff_search.objectives import _tiny

    if kind == "imagereward":
        files = _tiny.write_tiny_imagereward(folder / "imagereward", size=size)
        return {"checkpoint": str(files["checkpoint"]), "med_config": str(files["med_config"]),
                "vocab": str(files["vocab"]), "device": device}  # fmt: skip
    if kind == "pickscore":
        path = _tiny.write_tiny_pickscore(folder / "pickscore", size=size)
        return {"model": str(path), "processor": str(path), "device": device}
    if size == "real":
        clip = folder / "ViT-L-14-random.safetensors"
        if not clip.exists():
            clip = _tiny.write_open_clip(folder)
        model, in_features = "ViT-L-14", 768
    else:
        config, clip = _tiny.write_tiny_open_clip(folder / "clip")
        model, in_features = str(config), 16
    if kind == "clip":
        return {"model": model, "pretrained": str(clip), "device": device}
    head = _tiny.write_tiny_aesthetic(folder / "aesthetic", in_features=in_features, size=size)
    return {"weights": str(head), "clip_model": model, "clip_pretrained": str(clip),
            "device": device}  # fmt: skip


def section_scorers(ctx) -> dict:
    from PIL import Image

    from crdiff_search.objectives import create_objective

    cfg, meter = ctx["cfg"], ctx["meter"]
    size, n = cfg["image_size"], cfg["score_images"]
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)
    ]
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(n)]
    out: dict = {"images": n, "image_px": size}
    folder = Path(ctx["tmp"]) / "scorers"
    for kind in ("imagereward", "clip", "pickscore", "aesthetic"):
        row: dict = {}
        try:
            t0 = time.perf_counter()
            options = _scorer_options(kind, folder, cfg["scorer_size"], str(ctx["device"]))
            row["write_s"] = time.perf_counter() - t0
            with meter.measure(row, "load_"):
                objective = create_objective(kind, **options)
            objective.score(images[:2], prompts[:2])  # warm-up
            with meter.measure(row, "score_"):
                scores = objective.score(images, prompts)
            row["images_per_s"] = n / row["score_s"]
            row["finite"] = bool(np.isfinite(scores).all())
            row["dtype"] = str(getattr(objective, "dtype", ""))
            model = getattr(objective, "model", None) or getattr(objective, "clip", None)
            if isinstance(model, torch.nn.Module):
                row["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
            if kind == "imagereward":
                ctx["objective"] = objective  # scores the trial below
        except Exception as err:
            row["error"] = f"{type(err).__name__}: {err}"
            row["traceback"] = traceback.format_exc(limit=4)
        out[kind] = row
        free_memory()
    return out


def _reference_thresholds(unet, partition, ratios) -> dict:
    """Per group, torch.kthvalue over the concatenated |W| on the model's device."""
    params = dict(unet.named_parameters())
    out = {}
    for group, names in partition.groups.items():
        k = int(sum(params[n].numel() for n in names) * ratios.get(group, 0.0))
        if k:
            mags = torch.cat([params[n].detach().abs().reshape(-1) for n in names])
            out[group] = torch.kthvalue(mags.float(), k).values.to(mags.dtype)
            del mags
    return out


def _masks_match(pruner, partition, thresholds) -> bool:
    params = dict(pruner.model.named_parameters())
    for group, t in thresholds.items():
        for name in partition.groups[group]:
            dense = pruner.dense_tensor_on_device(name)
            expected = dense * (dense.abs() > t)
            if not torch.equal(params[name].detach(), expected):
                return False
    return True


def _vectors(n: int, seed: int, groups) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{g: round(float(rng.uniform(0.1, 0.8)), 4) for g in groups} for _ in range(n)]


def measure_pruner(ctx, unet, *, layouts, check_dtypes=()) -> dict:
    from crdiff_search.pruning import Pruner
    from crdiff_search.search_spaces import build_partition

    meter = ctx["meter"]
    partition = build_partition(unet, "paper")
    params = dict(unet.named_parameters())
    selected = nbytes(params[n] for n in partition.param_names)
    model_bytes = nbytes(unet.parameters())
    out: dict = {
        "dtype": str(next(unet.parameters()).dtype),
        "model_gib": model_bytes / GIB,
        "selected_gib": selected / GIB,
        "selected_share": selected / model_bytes,
        "groups_m": {
            g: sum(params[n].numel() for n in names) / 1e6 for g, names in partition.groups.items()
        },
    }
    vectors = _vectors(4, 0, partition.group_names)
    thresholds = _reference_thresholds(unet, partition, vectors[0])
    rows = {}
    for backup, cache in layouts:
        row: dict = {}
        try:
            with meter.measure(row, "setup_"):
                pruner = Pruner(unet, partition, cache=cache, backup=backup)
            row["extra"] = {k: v / GIB for k, v in pruner.extra_memory_bytes().items()}
            row["extra_device_share"] = pruner.extra_memory_bytes()["device"] / model_bytes
            switch = []
            transient = []
            for v in vectors:
                r: dict = {}
                with meter.measure(r):
                    pruner.apply_(v)
                switch.append(r["s"])
                transient.append(r.get("transient_gib", 0.0))
                if v is vectors[0]:
                    row["masks_equal_kthvalue"] = _masks_match(pruner, partition, thresholds)
            row["switch_s"] = float(np.median(switch[1:]))
            row["switch_transient_gib"] = max(transient)
            one = dict(vectors[-1])
            one["up"] = round(one["up"] + 0.05, 4)
            r = {}
            with meter.measure(r):
                pruner.apply_(one)
            row["one_ratio_s"] = r["s"]
            r = {}
            with meter.measure(r):
                pruner.restore_()
            row["restore_s"] = r["s"]
            moved = selected  # a full switch rewrites every selected tensor
            if pruner.host_backup and meter.cuda:
                row["switch_bound_s"] = moved / (ctx["h2d_gbs"] * 1e9)
                row["bound"] = "host-to-device copy of the selected weights"
            else:
                row["switch_bound_s"] = 2 * moved / (ctx["hbm_gbs"] * 1e9)
                row["bound"] = "read + write of the selected weights in device memory"
            row["switch_vs_bound"] = row["switch_s"] / row["switch_bound_s"]
            del pruner
        except Exception as err:
            row["error"] = f"{type(err).__name__}: {err}"
            row["traceback"] = traceback.format_exc(limit=4)
        free_memory()
        rows[f"{backup}/{cache}"] = row
    out["layouts"] = rows
    for dtype in check_dtypes:  # the same masks in another dtype (histogram over its bits)
        try:
            unet.to(dtype)
            t = _reference_thresholds(unet, partition, vectors[1])
            pruner = Pruner(unet, partition, cache="histogram", backup="host")
            pruner.apply_(vectors[1])
            out[f"masks_equal_kthvalue_{str(dtype).split('.')[-1]}"] = _masks_match(
                pruner, partition, t
            )
            pruner.restore_()
            del pruner
        except Exception as err:
            out[f"masks_{dtype}_error"] = f"{type(err).__name__}: {err}"
        free_memory()
    return out


def _generate(pipe, n: int, *, size: int, steps: int, batch: int, output_type="pil"):
    from crdiff_search.models import generate_images

    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(n)]
    if output_type == "pil":
        return generate_images(
            pipe, prompts, list(range(n)), width=size, height=size, steps=steps,
            guidance=5.0, batch_size=batch,
        )  # fmt: skip
    gens = [torch.Generator(pipe.device).manual_seed(i) for i in range(n)]
    with torch.inference_mode():
        return pipe(
            prompt=prompts, height=size, width=size, num_inference_steps=steps,
            guidance_scale=5.0, generator=gens, output_type=output_type,
        ).images  # fmt: skip


def measure_trials(ctx, name: str, pipe) -> dict:
    cfg, meter = ctx["cfg"], ctx["meter"]
    steps = cfg["steps"]
    out: dict = {"steps": steps, "attention": type(pipe.unet.attn_processors and
                 next(iter(pipe.unet.attn_processors.values()))).__name__}  # fmt: skip
    throughput = {}
    for size in cfg["resolutions"][name]:
        for batch in cfg["batches"]:
            if ctx["left"]() < 60:
                throughput[f"{size}/b{batch}"] = {"skipped": "time budget"}
                continue
            row: dict = {}
            try:
                _generate(pipe, batch, size=size, steps=2, batch=batch)  # warm-up
                with meter.measure(row):
                    _generate(pipe, batch, size=size, steps=steps, batch=batch)
                row["images_per_s"] = batch / row["s"]
                row["peak_gib"] = (meter.allocated() / GIB) + row.get("transient_gib", 0.0)
            except Exception as err:
                row["error"] = f"{type(err).__name__}: {err}"
            throughput[f"{size}/b{batch}"] = row
            free_memory()
    out["throughput"] = throughput
    size = cfg["resolutions"][name][0]
    batch = cfg["batches"][min(1, len(cfg["batches"]) - 1)]

    def variant(setup, teardown) -> dict:
        """Images per second with ``setup`` applied (its first, warm-up run timed as
        ``first_s``: a compile is paid there), ``teardown`` after, whatever happens."""
        row: dict = {}
        try:
            setup()
            t0 = time.perf_counter()
            _generate(pipe, batch, size=size, steps=2, batch=batch)
            row["first_s"] = time.perf_counter() - t0
            with meter.measure(row):
                _generate(pipe, batch, size=size, steps=steps, batch=batch)
            row["images_per_s"] = batch / row["s"]
        except Exception as err:
            row["error"] = f"{type(err).__name__}: {err}"
        finally:
            teardown()
        return row

    def memory_format(fmt):
        return lambda: (pipe.unet.to(memory_format=fmt), pipe.vae.to(memory_format=fmt))

    if ctx["left"]() > 60:
        out[f"channels_last_{size}/b{batch}"] = variant(
            memory_format(torch.channels_last), memory_format(torch.contiguous_format)
        )
    # one trial as the worker runs it: switch, generate, score, restore
    out["trial"] = measure_one_trial(ctx, name, pipe)
    # torch.compile last (its compile time is the price: first_s)
    if ctx["compile"] and name == "sd15" and ctx["left"]() > 150:
        original = pipe.unet.forward

        def compiled():
            pipe.unet.forward = torch.compile(original)

        def uncompiled():
            pipe.unet.forward = original

        out[f"compile_{size}/b{batch}"] = variant(compiled, uncompiled)
    return out


def measure_one_trial(ctx, name: str, pipe) -> dict:
    from crdiff_search.pruning import Pruner
    from crdiff_search.search_spaces import build_partition

    cfg, meter = ctx["cfg"], ctx["meter"]
    size = cfg["resolutions"][name][-1]
    n = len(PROMPTS)
    batch = cfg["batches"][-1]
    row: dict = {"images": n, "batch": batch, "px": size}
    try:
        pruner = Pruner(pipe.unet, build_partition(pipe.unet, "paper"))
        row["layout"] = f"{pruner.backup}/{pruner.cache}"
        objective = ctx.get("objective")
        t0 = time.perf_counter()
        with meter.measure(row, "switch_"):
            pruner.apply_(RATIOS)
        with meter.measure(row, "generate_"):
            images = _generate(pipe, n, size=size, steps=cfg["steps"], batch=batch)
        if objective is not None:
            with meter.measure(row, "score_"):
                objective.score(images, [PROMPTS[i % len(PROMPTS)] for i in range(n)])
        with meter.measure(row, "restore_"):
            pruner.restore_()
        meter.sync()
        row["total_s"] = time.perf_counter() - t0
        work = row["generate_s"] + row.get("score_s", 0.0)
        row["not_generation_or_scoring_share"] = 1 - work / row["total_s"]
        row["switch_share"] = (row["switch_s"] + row["restore_s"]) / row["total_s"]
        row["scorer"] = "imagereward" if objective is not None else "none"
        del pruner
    except Exception as err:
        row["error"] = f"{type(err).__name__}: {err}"
        row["traceback"] = traceback.format_exc(limit=4)
    free_memory()
    return row


def measure_poa(ctx, pipe) -> dict:
    from crdiff_search.apply import dense_tensors_of
    from crdiff_search.poa import PrunedOutputAmplifier
    from crdiff_search.pruning import Pruner
    from crdiff_search.search_spaces import build_partition

    cfg, meter = ctx["cfg"], ctx["meter"]
    size = cfg["resolutions"]["sd15"][0]
    batch = cfg["batches"][min(1, len(cfg["batches"]) - 1)]
    steps = cfg["steps"]
    out: dict = {"px": size, "batch": batch, "steps": steps, "w": 1.5}
    pruner = Pruner(pipe.unet, build_partition(pipe.unet, "paper"), cache="none")
    try:
        rows = {}
        row: dict = {}
        _generate(pipe, batch, size=size, steps=2, batch=batch, output_type="latent")
        with meter.measure(row):
            _generate(pipe, batch, size=size, steps=steps, batch=batch, output_type="latent")
        row["step_s"] = row["s"] / steps
        rows["dense"] = row
        pruner.apply_(RATIOS)
        dense = dense_tensors_of(pruner, RATIOS)
        held = nbytes(dense.values()) if pruner.host_backup else 0
        out["dense_copy_on_device_gib"] = held / GIB
        latents = {}
        for mode, batched in (("batched", True), ("two_pass", False)):
            row = {}
            with PrunedOutputAmplifier(pipe.unet, dense, w=1.5, batched=batched):
                _generate(pipe, batch, size=size, steps=2, batch=batch, output_type="latent")
                with meter.measure(row):
                    latents[mode] = _generate(
                        pipe, batch, size=size, steps=steps, batch=batch, output_type="latent"
                    )
            row["step_s"] = row["s"] / steps
            row["vs_dense"] = row["step_s"] / rows["dense"]["step_s"]
            rows[mode] = row
        out["modes"] = rows
        diff = (latents["batched"].float() - latents["two_pass"].float()).abs().max()
        out["batched_vs_two_pass_max_abs"] = float(diff)
        out["oom_fallback"] = _forced_oom(ctx, pipe, dense, batch, size, latents["two_pass"])
    except Exception as err:
        out["error"] = f"{type(err).__name__}: {err}"
        out["traceback"] = traceback.format_exc(limit=4)
    finally:
        pruner.restore_()
        del pruner
        free_memory()
    return out


def _forced_oom(ctx, pipe, dense, batch, size, two_pass_latents) -> dict:
    """Cap the allocator just above what two passes need: the batched pass (twice the batch)
    must run out of memory and the amplifier must fall back to two passes, same result."""
    from crdiff_search.poa import PrunedOutputAmplifier

    meter = ctx["meter"]
    if not meter.cuda:
        return {"skipped": "needs CUDA (a memory cap)"}
    steps = ctx["cfg"]["steps"]
    row: dict = {}
    free_memory()
    base = meter.allocated()
    peak_two = base + ctx["poa_two_pass_transient"] * GIB if "poa_two_pass_transient" in ctx else 0
    if not peak_two:
        probe: dict = {}
        with PrunedOutputAmplifier(pipe.unet, dense, w=1.5, batched=False), meter.measure(probe):
            _generate(pipe, batch, size=size, steps=1, batch=batch, output_type="latent")
        peak_two = base + probe["transient_gib"] * GIB
    total = torch.cuda.get_device_properties(meter.device).total_memory
    # the batched pass needs about twice the two passes' activations: half of them again is
    # too little for it and leaves the allocator room for fragmentation
    cap = peak_two + 0.5 * (peak_two - base)
    row["cap_gib"] = cap / GIB
    free_memory()
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total), meter.device.index)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with PrunedOutputAmplifier(pipe.unet, dense, w=1.5, batched=True) as amp:
                latents = _generate(
                    pipe, batch, size=size, steps=steps, batch=batch, output_type="latent"
                )
        row["fell_back"] = amp.batched is False
        row["warning"] = next((str(w.message) for w in caught if "POA" in str(w.message)), "")
        row["equals_two_pass"] = bool(torch.equal(latents, two_pass_latents))
        row["max_abs_vs_two_pass"] = float((latents.float() - two_pass_latents.float()).abs().max())
    except Exception as err:
        row["error"] = f"{type(err).__name__}: {err}"
        row["traceback"] = traceback.format_exc(limit=12)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, meter.device.index)
        free_memory()
    return row


def section_model(ctx, name: str) -> dict:
    from crdiff_search.testing import build_pipeline

    cfg, meter = ctx["cfg"], ctx["meter"]
    arch = cfg["models"][name]
    out: dict = {"arch": arch}
    r: dict = {}
    with meter.measure(r):
        pipe = build_pipeline(arch, device=ctx["device"], dtype=ctx["dtype"])
    out["build_s"] = r["s"]
    out["params_m"] = {
        part: sum(p.numel() for p in getattr(pipe, part).parameters()) / 1e6
        for part in ("unet", "vae", "text_encoder", "text_encoder_2")
        if getattr(pipe, part, None) is not None
    }
    layouts = [("device", "sorted"), ("device", "none"), ("device", "histogram"),
               ("host", "histogram")]  # fmt: skip
    checks = (torch.bfloat16,) if name == "sd15" else ()
    if "pruner" in ctx["parts"]:
        out["pruner"] = measure_pruner(ctx, pipe.unet, layouts=layouts, check_dtypes=checks)
        pipe.unet.to(ctx["dtype"])
        write(ctx, name, out)
    if "trial" in ctx["parts"]:
        out["trial"] = measure_trials(ctx, name, pipe)
        write(ctx, name, out)
    if name == "sd15" and "poa" in ctx["parts"] and ctx["left"]() > 45:
        out["poa"] = measure_poa(ctx, pipe)
    del pipe
    free_memory()
    return out


def section_tune(ctx) -> dict:
    """``crdiff search`` on the testbed with 2 trials in flight at gpu = 0.5 each."""
    try:
        import ray  # noqa: F401
    except ImportError as err:
        return {"skipped": f"ray is not installed: {err}"}
    meter = ctx["meter"]
    folder = Path(ctx["tmp"]) / "tune"
    folder.mkdir(parents=True, exist_ok=True)
    gpu = 0.5 if meter.cuda else 0
    experiment = folder / "tune.toml"
    experiment.write_text(
        f'''version = 1
study = "gpu-placement"
resolution = "24x24"
[model]
source = "testbed"
steps = 4
device = "{"cuda" if meter.cuda else "cpu"}"
[prompts]
count = 8
[search]
sampler = "anneal"
trials = 4
concurrency = 2
[resources]
cpu = 1
gpu = {gpu}
[tracking]
enabled = false
[rerank]
after_search = false
'''
    )
    seen: set = set()
    most = [0]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            try:
                pids = subprocess.run(
                    ["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"],
                    capture_output=True, text=True, timeout=10,
                ).stdout.split()  # fmt: skip
            except Exception:
                return
            seen.update(pids)
            most[0] = max(most[0], len(pids))
            stop.wait(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    if meter.cuda:
        watcher.start()
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "crdiff_search.cli", "search", str(experiment),
           "--out", str(folder / "study")]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=max(60, ctx["left"]() - 20),
        cwd=ctx["tmp"],
    )  # fmt: skip
    stop.set()
    out: dict = {"gpu_per_trial": gpu, "exit": proc.returncode, "s": time.perf_counter() - t0}
    out["gpu_processes_seen"] = len(seen)
    out["gpu_processes_at_once"] = most[0]
    table = folder / "study" / "trials.parquet"
    if table.exists():
        import pandas as pd

        df = pd.read_parquet(table)
        out["trials"] = len(df)
        if "state" in df:
            out["states"] = df["state"].value_counts().to_dict()
        if "worker_pid" in df:
            out["worker_pids"] = int(df["worker_pid"].nunique())
    if proc.returncode:
        out["stderr_tail"] = proc.stderr[-3000:]
    out["stdout_tail"] = proc.stdout[-1500:]
    return out


# -- driver ---------------------------------------------------------------------------------


def write(ctx, key: str, value) -> None:
    ctx["results"][key] = value
    if ctx["out"]:
        Path(ctx["out"]).write_text(json.dumps(ctx["results"], indent=1, default=str))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="real")
    parser.add_argument(
        "--dtype",
        choices=["float16", "bfloat16", "float32"],
        default=None,
        help="model dtype (default: float16 on CUDA, float32 on CPU)",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=480.0,
        help="sections start only while this much wall time is left",
    )
    parser.add_argument("--sections", default="env,scorers,sd15,sdxl,tune")
    parser.add_argument(
        "--model-parts", default="pruner,trial,poa", help="what the sd15/sdxl sections measure"
    )
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    parser.add_argument("--out", default="", help="also write the JSON here, after each section")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    parts = {p.strip() for p in args.model_parts.split(",") if p.strip()}
    if parts - {"pruner", "trial", "poa"}:
        print(f"--model-parts: unknown {sorted(parts - {'pruner', 'trial', 'poa'})}",
              file=sys.stderr)  # fmt: skip
        return 2
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"--device {args.device}: CUDA is not available here; use --device cpu",
              file=sys.stderr)  # fmt: skip
        return 2
    if device.type not in ("cuda", "cpu"):
        print(f"--device {args.device}: valid are cuda, cuda:N and cpu", file=sys.stderr)
        return 2
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    dtype = getattr(torch, args.dtype or ("float16" if device.type == "cuda" else "float32"))
    start = time.perf_counter()
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - {"env", "scorers", "sd15", "sdxl", "tune"}
    if unknown:
        print(f"--sections: unknown {sorted(unknown)}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="crdiff-gpu-") as tmp:
        ctx = {
            "device": device,
            "dtype": dtype,
            "cfg": CONFIGS[args.config],
            "meter": Meter(device),
            "tmp": tmp,
            "out": args.out,
            "compile": not args.no_compile and device.type == "cuda",
            "parts": parts,
            "results": {"config": args.config, "dtype": str(dtype), "budget_s": args.budget_s},
            "left": lambda: args.budget_s - (time.perf_counter() - start),
        }
        if "env" not in sections:
            ctx["hbm_gbs"] = ctx["h2d_gbs"] = 1.0
        for name in sections:
            if ctx["left"]() < 20:
                write(ctx, name, {"skipped": "time budget"})
                continue
            t0 = time.perf_counter()
            print(f"[gpu] {name} ...", file=sys.stderr, flush=True)
            try:
                if name == "env":
                    value = section_env(ctx)
                elif name == "scorers":
                    value = section_scorers(ctx)
                elif name == "tune":
                    value = section_tune(ctx)
                else:
                    value = section_model(ctx, name)
            except Exception as err:
                value = {"error": f"{type(err).__name__}: {err}",
                         "traceback": traceback.format_exc(limit=6)}  # fmt: skip
            if isinstance(value, dict):
                value["section_s"] = time.perf_counter() - t0
            write(ctx, name, value)
            free_memory()
        ctx["results"]["total_s"] = time.perf_counter() - start
        write(ctx, "total_s", ctx["results"]["total_s"])
        print(json.dumps(ctx["results"], indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
