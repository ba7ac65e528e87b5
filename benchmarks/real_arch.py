"""The whole workflow on a real architecture, on CPU: search, rerank, export, generate.

Builds a complete pipeline at its published size with random weights (SD1.5: UNet 860M, VAE,
CLIP-L text encoder, a complete CLIP tokenizer built offline; SDXL: two text encoders and
``add_time_ids``; DiT-XL/2-256: class labels, no text), saves it with ``save_pretrained`` and runs
the CLI on that folder as a user would, each command in its own process:

1. ``crdiff search``: 2 trials, 1 prompt, 2 steps, the smallest resolution the pipeline accepts,
   the ``paper`` partition, scored by CLIP score with an open_clip ViT-L-14 at its real size
   (random weights, loaded through the code path that loads real checkpoints);
2. ``crdiff rerank`` with 1 candidate (and POA at w = 1.5) on 1 held-out prompt;
3. ``crdiff export`` of the winner (``--allow-null``: random weights repair nothing);
4. ``crdiff generate`` from the registry's recipe.

Prints the time and the peak resident memory (the command's whole process tree, Ray workers
included, sampled every 0.2 s) of each step, as a table or ``--json``.

Usage:
    nice -n 10 .venv/bin/python benchmarks/real_arch.py --arch sd15     # ~5 min, ~10 GB RAM
    nice -n 10 .venv/bin/python benchmarks/real_arch.py --arch sdxl     # ~25 GB: see --dtype
    .venv/bin/python benchmarks/real_arch.py --arch tiny-sd             # the same in seconds
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
try:
    import crdiff_search.objectives  # noqa: F401
except ImportError:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import torch  # noqa: E402

from crdiff_search.names import DTYPES, PRUNER_CACHE_MODES  # noqa: E402

ARCHES = ("sd15", "sdxl", "dit", "tiny-sd", "tiny-sdxl", "tiny-dit")
GIB = 1 << 30
DIT_LABELS = {0: "tench, Tinca tinca", 1: "goldfish, Carassius auratus", 2: "great white shark"}


def tree_rss(pid: int) -> int:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


def run(cmd: list[str], cwd: Path, env: dict) -> dict:
    """Run one CLI command; its wall time, exit code and the peak RSS of its process tree."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    peak = [0]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss(proc.pid))
            done.wait(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    output, _ = proc.communicate()
    done.set()
    watcher.join()
    return {
        "cmd": " ".join(cmd[3:]),
        "exit": proc.returncode,
        "s": round(time.perf_counter() - t0, 1),
        "peak_rss_gib": round(peak[0] / GIB, 2),
        "output_tail": output[-1500:],
    }


def build(arch: str, dtype: torch.dtype):
    from crdiff_search.testing import build_pipeline

    if arch.endswith("dit"):
        from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline, DiTTransformer2DModel

        from crdiff_search.testing import _TINY_VAE, _VAE_CONFIG, tiny_dit

        if arch == "dit":  # DiT-XL/2 at 256x256 (675M): its published transformer config
            transformer = DiTTransformer2DModel(
                num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8,
                num_layers=28, sample_size=32, patch_size=2, num_embeds_ada_norm=1000,
                norm_type="ada_norm_zero",
            )  # fmt: skip
            vae = AutoencoderKL(**_VAE_CONFIG)
        else:
            transformer, vae = tiny_dit(seed=0), AutoencoderKL(**_TINY_VAE)
        pipe = DiTPipeline(transformer.eval(), vae.eval(), DDIMScheduler(), id2label=DIT_LABELS)
        return pipe.to(dtype=dtype)
    return build_pipeline(arch, dtype=dtype)


def build_to(arch: str, dtype: torch.dtype, folder: Path) -> int:
    """Build ``arch`` and save it to ``folder``; print its parameter counts as JSON."""
    pipe = build(arch, dtype)
    denoiser = getattr(pipe, "unet", None) or pipe.transformer
    modules = [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
    counts = {
        "denoiser_params_m": round(sum(p.numel() for p in denoiser.parameters()) / 1e6, 1),
        "pipeline_params_m": round(
            sum(p.numel() for m in modules for p in m.parameters()) / 1e6, 1
        ),
    }
    pipe.save_pretrained(folder, safe_serialization=True)
    if arch.endswith("dit"):  # save_pretrained drops id2label; published DiT folders have it
        index = json.loads((folder / "model_index.json").read_text())
        index["id2label"] = {str(k): v for k, v in DIT_LABELS.items()}
        (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    print(json.dumps(counts))
    return 0


def experiment(
    folder: Path, clip: Path, *, arch: str, resolution: str, dtype: str, pruner_cache: str
) -> str:
    prompt = "goldfish" if arch.endswith("dit") else "a red cube on a wooden table"
    return f"""version = 1
study = "real-{arch}"
resolution = "{resolution}"

[model]
source = "{folder}"
dtype = "{dtype}"
steps = 2
guidance = 5.0
device = "cpu"

[prompts]
items = ["{prompt}"]

[objective]
name = "clip"
options = {{ model = "ViT-L-14", pretrained = "{clip}" }}

[partition]
granularity = "paper"

[search]
sampler = "random"
trials = 2
concurrency = 1

[resources]
cpu = 2
pruner_cache = "{pruner_cache}"

[rerank]
after_search = false
top_k = 1
weights = [1.0, 1.5]
prompts = 1
file = "{folder / "heldout.txt"}"
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=ARCHES, default="sd15")
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    parser.add_argument("--resolution", default="", help="default: the smallest accepted")
    parser.add_argument(
        "--pruner-cache",
        choices=PRUNER_CACHE_MODES,
        default="auto",
        help="the search's resources.pruner_cache (histogram: no sorted copy, for SDXL in 24 GB)",
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", default="", help="keep the work folder here")
    parser.add_argument("--build-to", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.build_to:
        return build_to(args.arch, getattr(torch, args.dtype), Path(args.build_to))
    from crdiff_search.model_info import model_info
    from crdiff_search.objectives import _tiny

    work = Path(args.keep or tempfile.mkdtemp(prefix="crdiff-real-"))
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {
        "arch": args.arch,
        "dtype": args.dtype,
        "pruner_cache": args.pruner_cache,
        "threads": torch.get_num_threads(),
    }
    t0 = time.perf_counter()
    folder = work / "model"
    # built and saved in a child process, so that its memory is back before the CLI runs
    built = subprocess.run(
        [sys.executable, __file__, "--arch", args.arch, "--dtype", args.dtype, "--build-to",
         str(folder)],
        capture_output=True, text=True,
    )  # fmt: skip
    if built.returncode:
        print(built.stderr[-3000:], file=sys.stderr)
        return 1
    result.update(json.loads(built.stdout.strip().splitlines()[-1]))
    result["build_and_save_s"] = round(time.perf_counter() - t0, 1)
    result["folder_gib"] = round(
        sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / GIB, 2
    )
    held_out = "great white shark" if args.arch.endswith("dit") else "two blue spheres in the snow"
    (folder / "heldout.txt").write_text(held_out + "\n")
    clip = work / "ViT-L-14-random.safetensors"
    if not clip.exists():
        clip = _tiny.write_open_clip(work)
    factor = model_info(str(folder)).spatial_factor
    resolution = args.resolution or f"{factor}x{factor}"
    result["resolution"] = resolution
    path = work / "experiment.toml"
    path.write_text(
        experiment(
            folder,
            clip,
            arch=args.arch,
            resolution=resolution,
            dtype=args.dtype,
            pruner_cache=args.pruner_cache,
        )
    )
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1")
    cli = [sys.executable, "-m", "crdiff_search.cli"]
    study = work / "study"
    prompt = held_out
    steps = [
        [*cli, "search", str(path), "--out", str(study)],
        [*cli, "rerank", str(study), "--top-k", "1", "--w", "1.0,1.5", "--n-prompts", "1"],
        [*cli, "export", str(study), "--allow-null"],
        [*cli, "generate", "--model", str(folder), "--resolution", resolution, "--prompt",
         prompt, "--steps", "2", "--dtype", args.dtype, "--device", "cpu", "--out",
         str(work / "images")],
    ]  # fmt: skip
    result["steps"] = []
    for cmd in steps:
        row = run(cmd, work, env)
        result["steps"].append(row)
        print(f"[real-arch] {row['cmd'][:60]}: exit {row['exit']}, {row['s']} s, "
              f"{row['peak_rss_gib']} GiB", file=sys.stderr, flush=True)  # fmt: skip
        if row["exit"]:
            break
    result["images"] = sorted(p.name for p in (work / "images").glob("*.png"))
    result["ok"] = all(r["exit"] == 0 for r in result["steps"]) and len(result["steps"]) == 4
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{args.arch} ({result['pipeline_params_m']}M parameters, {args.dtype}, "
              f"{resolution}): build + save {result['build_and_save_s']} s, "
              f"{result['folder_gib']} GiB on disk")  # fmt: skip
        for row in result["steps"]:
            print(f"  {row['cmd'].split()[0]:9s} exit {row['exit']}  {row['s']:7.1f} s  "
                  f"peak {row['peak_rss_gib']:5.2f} GiB")  # fmt: skip
            if row["exit"]:
                print(row["output_tail"])
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
