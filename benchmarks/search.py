"""Search throughput: framework overhead per trial, and the speed-up over a reload loop.

Two ways to evaluate the same kind of candidates (ratios per group) on the same prompts and
seeds, side by side:

* **framework**: ``crdiff_search.runner.run_study``: Ray Tune trials on a reused actor that
  keeps the pipeline and the scorer loaded; a trial applies masks, generates, scores, restores;
  every trial is logged to MLflow (SQLite) and to ``trials.parquet``.
* **reload loop**: what one-off scripts do: for every candidate, load the pipeline and the
  scorer again, build the pruning masks, generate, score. ``--reload process`` runs each
  candidate in a new Python process, as the method's reference scripts do (interpreter start,
  imports and exit count); ``--reload in-process`` reloads inside one warm process, a lower
  bound on any reload loop's cost; ``--reload both`` (the default) runs the two.

Figures:

* ``overhead_share``: the framework's time per trial that is neither generation nor scoring,
  as a share of the trial's wall time, measured in the steady state (from the first trial's end
  to the last trial's end, so Ray start-up and the one model load are left out; they are
  reported separately). Target: <= 0.10.
* ``speedup_vs_reload_loop``: reload-loop seconds per candidate / framework seconds per trial
  (steady state), i.e. how many more trials per hour a long study gets, against the
  per-process loop when it runs. Target: >= 3. ``speedup_vs_in_process_reload`` is the same
  against in-process reloads.
  ``speedup_end_to_end`` also counts start-up for the ``--trials`` run.

Model: the shipped testbed when its weights are present, else a tiny random-init Stable
Diffusion pipeline (``crdiff_search.testing.tiny_sd_pipeline``) saved to a temporary folder.
The tiny pipeline loads in a fraction of a second, unlike real checkpoints (seconds to minutes,
plus the scorer's own weights), so its speed-up understates the one on real models.

Usage::

    python benchmarks/search.py                       # all three, a table (testbed study settings)
    python benchmarks/search.py --images 2 --steps 2 --resolution 64x64   # short trials
    python benchmarks/search.py --json                # machine-readable
    python benchmarks/search.py --only reload --trials 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def prepare_model(kind: str, workdir: Path) -> tuple[str, str]:
    """``(model source, note)`` for ``kind`` in {auto, testbed, tiny} or a pipeline folder."""
    if kind in ("auto", "testbed"):
        from crdiff_search import testbed

        if (Path(testbed.WEIGHTS_DIR) / "model_index.json").is_file():
            return "testbed", "the shipped testbed model"
        if kind == "testbed":
            raise SystemExit(f"no testbed weights in {testbed.WEIGHTS_DIR}")
        kind = "tiny"
    if kind == "tiny":
        from crdiff_search.testing import tiny_sd_pipeline

        folder = workdir / "tiny-sd"
        tiny_sd_pipeline(seed=0).save_pretrained(str(folder))
        return str(folder), (
            "a tiny random-init Stable Diffusion pipeline (testbed weights not present); it "
            "loads far faster than real checkpoints, so the speed-up is a lower bound"
        )
    return kind, f"pipeline folder {kind}"


def make_config(source: str, args, workdir: Path, trials: int):
    from crdiff_search.config import load_experiment
    from crdiff_search.testbed.scenes import sample_captions

    overrides = {
        "model": source,
        "steps": args.steps,
        "trials": trials,
        "sampler": "random",
        "seed": 0,
        "concurrency": 1,
        "out": str(workdir / "study"),
        "tracking_uri": f"sqlite:///{workdir / 'mlflow.db'}",
        "resolution": args.resolution,
        "study": "bench",
        "model.device": "cpu",
        "prompts.items": sample_captions(args.images, 0),
        "prompts.count": args.images,
        "objective.name": args.objective,
        "tracking.enabled": not args.no_tracking,
    }
    return load_experiment(None, **overrides)


def candidates(groups: list[str], n: int, seed: int = 0) -> list[dict[str, float]]:
    """The dense model first, then random ratios in [0, 0.6] per group."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = [dict.fromkeys(groups, 0.0)]
    while len(out) < n:
        out.append({g: round(float(rng.uniform(0.0, 0.6)), 3) for g in groups})
    return out[:n]


def evaluate_candidate(cfg, ratios: dict[str, float] | None, plan_size: int = 0) -> dict:
    """One candidate the one-off way: load the pipeline and the scorer, build the pruning
    masks, generate, score. ``ratios=None`` draws candidate ``plan_size - 1`` of the plan."""
    import torch

    from crdiff_search import objectives
    from crdiff_search.models import denoiser_of, generate_images, load_pipeline
    from crdiff_search.pruning import Pruner
    from crdiff_search.search_spaces import build_partition

    torch.set_grad_enabled(False)
    prompts, seeds = cfg.prompt_list(), cfg.seed_list()
    obj_name = cfg.objective.names[0]
    t0 = time.perf_counter()
    pipe = load_pipeline(cfg.model.source, dtype=cfg.model.dtype, device="cpu")
    objectives.clear_objective_cache()
    scorer = objectives.create_objective(obj_name, **cfg.objective.options_for(obj_name))
    denoiser = denoiser_of(pipe)
    partition = build_partition(denoiser, cfg.partition.granularity)
    pruner = Pruner(denoiser, partition, criterion=cfg.partition.criterion)
    t1 = time.perf_counter()
    if ratios is None:
        ratios = candidates(list(partition.group_names), plan_size)[-1]
    pruner.apply_(ratios)
    t2 = time.perf_counter()
    images = generate_images(
        pipe,
        prompts,
        seeds,
        width=cfg.width,
        height=cfg.height,
        steps=cfg.model.steps,
        guidance=cfg.model.guidance,
    )
    t3 = time.perf_counter()
    scores = scorer.score(images, prompts)
    t4 = time.perf_counter()
    return {
        "load": t1 - t0,
        "prune": t2 - t1,
        "generate": t3 - t2,
        "score": t4 - t3,
        "total": t4 - t0,
        "value": float(scorer.aggregate(scores)),
    }


def _child(spec_path: str) -> int:
    """``--candidate-process SPEC``: evaluate one candidate in this fresh process."""
    import torch

    from crdiff_search.config import ExperimentConfig

    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(int(spec["threads"]))
    cfg = ExperimentConfig.from_toml(spec["experiment"])
    row = evaluate_candidate(cfg, None, int(spec["index"]) + 1)
    print("CANDIDATE " + json.dumps(row), flush=True)
    return 0


def reload_loop(cfg, n: int, mode: str, workdir: Path) -> dict:
    """Evaluate ``n`` candidates, loading the pipeline and the scorer for each.

    ``mode="process"`` is the reference scripts' way: every candidate is a new Python process
    that imports the stack, loads, evaluates and exits; its wall time (process start
    included) is the candidate's cost. ``mode="in-process"`` reloads inside one warm process,
    a lower bound on what any reload loop costs.
    """
    import torch

    # Trial workers run with as many threads as CPUs they hold (Ray sets OMP_NUM_THREADS);
    # the loop gets the same, so both halves compute alike.
    threads = max(1, int(cfg.resources.cpu))
    rows = []
    if mode == "process":
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        for i in range(n):
            spec = workdir / f"candidate-{i}.json"
            spec.write_text(
                json.dumps({"experiment": cfg.to_toml(), "index": i, "threads": threads})
            )
            t0 = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, __file__, "--candidate-process", str(spec)],
                capture_output=True,
                text=True,
                env=env,
                cwd=str(ROOT),
            )
            wall = time.perf_counter() - t0
            lines = [x for x in proc.stdout.splitlines() if x.startswith("CANDIDATE ")]
            if proc.returncode != 0 or not lines:
                raise SystemExit(
                    f"reload loop: candidate {i} failed (exit {proc.returncode}):\n"
                    f"{proc.stderr[-3000:]}"
                )
            row = json.loads(lines[-1][len("CANDIDATE ") :])
            row["startup"] = wall - row["total"]  # interpreter, imports, exit
            row["total"] = wall
            rows.append(row)
    else:
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            rows = [evaluate_candidate(cfg, None, i + 1) for i in range(n)]
        finally:
            torch.set_num_threads(previous_threads)
        # The first candidate also pays the one-time imports; a long loop pays only reloads.
        if len(rows) > 1:
            rows = rows[1:]
    per = statistics.mean(r["total"] for r in rows)
    fixed = [r["load"] + r.get("startup", 0.0) for r in rows]
    return {
        "mode": mode,
        "candidates": n,
        "candidates_timed": len(rows),
        "torch_threads": threads,
        "seconds_per_candidate": per,
        "startup_seconds_mean": statistics.mean(r.get("startup", 0.0) for r in rows),
        "load_seconds_mean": statistics.mean(r["load"] for r in rows),
        "generate_seconds_mean": statistics.mean(r["generate"] for r in rows),
        "score_seconds_mean": statistics.mean(r["score"] for r in rows),
        "load_share": sum(fixed) / sum(r["total"] for r in rows),
        "wall_seconds": sum(r["total"] for r in rows),
        "candidates_per_hour": 3600.0 / per,
    }


def framework(cfg, workdir: Path) -> dict:
    """Run the study through the runner and measure overhead from its trial table.

    Steady state: from the start of the second trial (the first one carries the model load
    and the dense baseline) to the end of the last; everything before it is start-up.
    """
    import pandas as pd

    from crdiff_search.runner import run_study

    t_start = pd.Timestamp.now(tz="UTC")
    t0 = time.perf_counter()
    result = run_study(cfg, out_dir=workdir / "study", progress=False)
    wall = time.perf_counter() - t0
    df = pd.read_parquet(result.table_path)
    df = df[df["state"] == "COMPLETE"].copy()
    for col in ("started_at", "finished_at"):
        df[col] = pd.to_datetime(df[col], utc=True)
    df = df.sort_values("started_at")
    if len(df) < 3:
        raise SystemExit(f"framework: only {len(df)} complete trials; need >= 3")
    steady = df.iloc[1:]
    window = (steady["finished_at"].max() - steady["started_at"].iloc[0]).total_seconds()
    work = float((steady["t_generate"] + steady["t_score"]).sum())
    per_trial = window / len(steady)
    gaps = (
        steady["started_at"].iloc[1:].reset_index(drop=True)
        - steady["finished_at"].iloc[:-1].reset_index(drop=True)
    ).dt.total_seconds()
    in_trial = float(
        ((steady["t_total"] - steady["t_generate"] - steady["t_score"]).sum())
        / steady["t_total"].sum()
    )
    return {
        "trials": int(len(df)),
        "seconds_per_trial": per_trial,
        "overhead_share": max(0.0, 1.0 - work / window),
        "in_trial_overhead_share": in_trial,
        "generate_seconds_mean": float(steady["t_generate"].mean()),
        "score_seconds_mean": float(steady["t_score"].mean()),
        "prune_restore_seconds_mean": float(
            (steady["t_prune"] + steady.get("t_restore", 0)).mean()
        ),
        "between_trials_seconds_mean": float(gaps.mean()) if len(gaps) else 0.0,
        "tracking": bool(cfg.tracking.enabled),
        "startup_seconds": (steady["started_at"].iloc[0] - t_start).total_seconds(),
        "wall_seconds": wall,
        "trials_per_hour": 3600.0 / per_trial,
        "best_score": float(result.best_score),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="auto", help="auto | testbed | tiny | FOLDER")
    parser.add_argument("--trials", type=int, default=12, help="framework trials (12)")
    parser.add_argument(
        "--reload-candidates",
        type=int,
        default=4,
        help="reload-loop candidates (4; the first also pays imports and is not timed)",
    )
    parser.add_argument(
        "--reload",
        choices=("process", "in-process", "both"),
        default="both",
        help="reload loop: a new process per candidate as the reference scripts (process), "
        "reloads inside one warm process (in-process), or both (default); the headline "
        "speed-up is against 'process' when it runs",
    )
    parser.add_argument("--images", type=int, default=8, help="prompts per candidate (8)")
    parser.add_argument("--steps", type=int, default=8, help="sampling steps (8)")
    parser.add_argument("--resolution", default="24x24", help="WxH (24x24, the testbed study's)")
    parser.add_argument("--objective", default="scene")
    parser.add_argument("--only", choices=("reload", "framework"), default=None)
    parser.add_argument(
        "--no-tracking", action="store_true", help="framework without MLflow (to size its share)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--candidate-process"]:
        return _child(argv[1])
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="crdiff-bench-") as tmp:
        workdir = Path(tmp)
        source, note = prepare_model(args.model, workdir)
        cfg = make_config(source, args, workdir, args.trials)
        report: dict = {
            "model": "testbed" if source == "testbed" else args.model,
            "model_note": note,
            "resolution": args.resolution,
            "images_per_candidate": args.images,
            "steps": args.steps,
            "objective": args.objective,
            "cpu_count": os.cpu_count(),
        }
        if args.only != "framework":
            modes = ("process", "in-process") if args.reload == "both" else (args.reload,)
            for mode in modes:
                key = "reload_loop" if mode == modes[0] else "reload_loop_in_process"
                report[key] = reload_loop(cfg, args.reload_candidates, mode, workdir)
        if args.only != "reload":
            report["framework"] = framework(cfg, workdir)
        if "reload_loop" in report and "framework" in report:
            fw, rl = report["framework"], report["reload_loop"]
            report["overhead_share"] = fw["overhead_share"]
            report["speedup_vs_reload_loop"] = rl["seconds_per_candidate"] / fw["seconds_per_trial"]
            report["speedup_end_to_end"] = (rl["seconds_per_candidate"] * fw["trials"]) / fw[
                "wall_seconds"
            ]
            if "reload_loop_in_process" in report:
                report["speedup_vs_in_process_reload"] = (
                    report["reload_loop_in_process"]["seconds_per_candidate"]
                    / fw["seconds_per_trial"]
                )
            report["targets"] = {
                "overhead_share<=0.10": report["overhead_share"] <= 0.10,
                "speedup>=3": report["speedup_vs_reload_loop"] >= 3.0,
            }
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0
    print(f"model: {report['model_note']}")
    print(
        f"{args.images} images x {args.steps} steps at {args.resolution}, objective {args.objective}"
    )
    fw = report.get("framework")
    loops = [k for k in ("reload_loop", "reload_loop_in_process") if k in report]
    columns = [(f"reload ({report[k]['mode']})", report[k]) for k in loops]
    columns.append(("framework", fw))

    def cell(d, key, fmt="{:.3f}"):
        return "-" if not d or key not in d else fmt.format(d[key])

    lines = [
        ("s per candidate", "seconds_per_candidate", "seconds_per_trial", "{:.3f}"),
        ("generate s", "generate_seconds_mean", "generate_seconds_mean", "{:.3f}"),
        ("score s", "score_seconds_mean", "score_seconds_mean", "{:.3f}"),
        ("process start s", "startup_seconds_mean", None, "{:.3f}"),
        ("load s", "load_seconds_mean", "startup_seconds", "{:.3f}"),
        ("overhead share", "load_share", "overhead_share", "{:.3f}"),
        ("per hour", "candidates_per_hour", "trials_per_hour", "{:.0f}"),
    ]
    print(f"{'':<18}" + "".join(f"{name:>22}" for name, _ in columns))
    for label, loop_key, fw_key, fmt in lines:
        cells = [
            cell(d, fw_key if name == "framework" else loop_key, fmt)
            if (name != "framework" or fw_key)
            else "-"
            for name, d in columns
        ]
        print(f"{label:<18}" + "".join(f"{c:>22}" for c in cells))
    if "speedup_vs_reload_loop" in report:
        print(
            f"overhead_share {report['overhead_share']:.3f} (target <= 0.10), "
            f"speedup_vs_reload_loop {report['speedup_vs_reload_loop']:.2f}x (target >= 3), "
            f"end to end {report['speedup_end_to_end']:.2f}x"
        )
    if "speedup_vs_in_process_reload" in report:
        print(f"against in-process reloads: {report['speedup_vs_in_process_reload']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
