"""Prompt-specific refinement: a short search on the user's own prompts, from the shared recipe.

The registry holds one recipe per (model, resolution), searched on a general prompt set. For a
prompt it does not fix, :func:`refine` runs a short study on that prompt (or a few), with more
seeds per prompt instead of more prompts, whose first trial after the dense one is the
registry's recipe (its ratios; an annealing chain starts there). Then the verdict on *new*
seeds of the same prompts: dense, the registry recipe and the refined recipe, each image paired
with the others (same prompt, same seed), with 95 % intervals. The refined recipe is saved in
the run folder (and ``save``), and goes to the shared registry only with ``export``.

Example::

    result = refine("testbed", (24, 24), ["three green triangles"], trials=12)
    print(result.summary)        # dense / registry / refined on new seeds, with intervals
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crdiff_search.errors import UsageError
from crdiff_search.study_folder import StudyFolder

REFINE_FILE = "refine.json"
REFINE_GRID = "refine_compare.png"
REFINED_RECIPE = "recipe.json"
CHECK_SEED_BASE = 50_000  # the verdict's seeds: none of the search's (which start at 0)


@dataclass
class RefineResult:
    folder: Path
    base: Any  # the registry recipe (Recipe)
    refined: Any  # the refined recipe (Recipe)
    source: str  # where the base recipe came from, in words
    rows: list[dict[str, Any]] = field(default_factory=list)  # dense / registry / refined
    verdict: str = ""
    files: list[str] = field(default_factory=list)
    exported: Any = None  # the registry entry, with export=True

    @property
    def summary(self) -> str:
        lines = [f"{'':>9} {'score':>7}  vs dense [95 % CI]        vs registry [95 % CI]"]
        for row in self.rows:
            vs_d = _interval(row, "dense")
            vs_r = _interval(row, "registry")
            lines.append(f"{row['name']:>9} {row['score']:7.4f}  {vs_d:<26} {vs_r}")
        return "\n".join(lines + [self.verdict])


def _interval(row: dict, ref: str) -> str:
    if f"vs_{ref}" not in row:
        return ""
    return f"{row[f'vs_{ref}']:+.4f} [{row[f'vs_{ref}_low']:+.4f}, {row[f'vs_{ref}_high']:+.4f}]"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:40] or "prompt"


def refine_config(
    model: str,
    resolution: tuple[int, int],
    prompts: Sequence[str],
    base,
    *,
    trials: int,
    seeds_per_prompt: int,
    sampler: str,
    concurrency: int,
    out: Path,
    tracking: bool,
    tracking_uri: str | None,
):
    """The study a refinement runs: the user's prompts, each ``seeds_per_prompt`` times with its
    own seed, the base recipe's partition, criterion, objective and sampling."""
    from crdiff_search.config import ExperimentConfig, sampling_defaults
    from crdiff_search.model_info import check_model

    steps, guidance = sampling_defaults(model)
    items = [p for p in prompts for _ in range(seeds_per_prompt)]
    objective = base.objective or ("scene" if model == "testbed" else "imagereward")
    spec = base.partition
    data = {
        "study": f"refine-{_slug(prompts[0])}",
        "resolution": f"{resolution[0]}x{resolution[1]}",
        "output": str(out),
        "model": {
            "source": model,
            "steps": base.steps or steps,
            "guidance": base.guidance if base.guidance is not None else guidance,
        },
        "prompts": {"items": items, "seeds": list(range(len(items)))},
        "objective": {"name": objective},
        "partition": {
            "granularity": spec.granularity,
            "include": list(spec.include or ()),
            "n_groups": spec.n_groups or 0,
            "criterion": base.criterion,
        },
        "search": {
            "sampler": sampler,
            "trials": trials,
            "concurrency": concurrency,
            "repair": "prune+entropy" if base.attention_scaling else "prune",
        },
        "tracking": {"enabled": tracking, "uri": tracking_uri or ""},
        "rerank": {"after_search": False},
    }
    config = ExperimentConfig.from_dict(data)
    check_model(config)
    return config


def refine(
    model: str,
    resolution: tuple[int, int],
    prompts: Sequence[str],
    *,
    trials: int = 16,
    seeds_per_prompt: int = 8,
    check_seeds: int = 8,
    recipe="registry",
    registry: str | None = None,
    fallback: str = "interpolate",
    sampler: str = "anneal",
    concurrency: int = 2,
    out: str | Path | None = None,
    save: str | Path | None = None,
    export: bool = False,
    tracking: bool = False,
    tracking_uri: str | None = None,
    progress: bool = True,
    warn: Callable[[str], None] = lambda _: None,
) -> RefineResult:
    """Refine the registry's recipe for ``model`` at ``resolution`` on ``prompts`` (see the
    module docstring). ``recipe`` may also be a recipe file or a Recipe to start from."""
    import numpy as np

    from crdiff_search import progress as progress_mod
    from crdiff_search.analysis.stats import paired_difference
    from crdiff_search.generate import resolve_recipe
    from crdiff_search.recipe import utc_now

    prompts = [p.strip() for p in prompts if p and p.strip()]
    if not prompts:
        raise UsageError("give at least one --prompt TEXT to refine on")
    for name, value, least in (
        ("--trials", trials, 2),
        ("--seeds", seeds_per_prompt, 1),
        ("--check-seeds", check_seeds, 1),
        ("--concurrency", concurrency, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise UsageError(f"{name} {value!r} must be an integer >= {least}")
    base, source = resolve_recipe(
        model, tuple(resolution), recipe, registry=registry, fallback=fallback, warn=warn
    )
    if base is None:
        raise UsageError("refinement starts from a recipe: --recipe registry or FILE, not 'none'")
    key = hashlib.sha1(json.dumps([model, list(resolution), prompts]).encode()).hexdigest()[:8]
    folder = Path(out) if out else Path("runs") / "refine" / f"{_slug(prompts[0])}-{key}"
    if (folder / "study").exists():
        raise UsageError(f"{str(folder)!r} already holds a refinement: pass another --out")
    config = refine_config(
        model,
        tuple(resolution),
        prompts,
        base,
        trials=trials,
        seeds_per_prompt=seeds_per_prompt,
        sampler=sampler,
        concurrency=concurrency,
        out=folder / "study",
        tracking=tracking,
        tracking_uri=tracking_uri,
    )
    groups = sorted(base.ratios)

    from crdiff_search.runner import run_study

    say = progress_mod.Reporter(f"refine {model} {config.resolution}", mode=progress)
    say.phase(
        f"searching {trials} trials on {len(prompts)} prompt(s) x {seeds_per_prompt} seeds, "
        f"from the recipe of {source}"
    )
    start = {g: base.ratios[g] for g in groups}
    result = run_study(config, out_dir=folder / "study", progress=progress, start_points=[start])
    refined_ratios = {g: float(result.best_ratios.get(g, 0.0)) for g in groups}
    refined_trial = result.best_trial_id
    # The registry recipe was trial 1: a search best that does not beat it keeps it (ties too).
    table = StudyFolder(folder / "study").read_table()
    first = table[(table["trial_index"] == 1) & (table["state"] == "COMPLETE")]
    if not first.empty:
        start_score = float(first["score"].iloc[0])
        better = (
            result.best_score > start_score
            if config.objective.mode != "min"
            else result.best_score < start_score
        )
        if not better:
            refined_ratios, refined_trial = dict(start), str(first["trial_id"].iloc[0])

    # ---- the verdict, on new seeds of the same prompts
    from crdiff_search.rerank import evaluate_candidate
    from crdiff_search.runner.spec import WorkerSpec

    check_prompts = [p for p in prompts for _ in range(check_seeds)]
    seeds = [CHECK_SEED_BASE + i for i in range(len(check_prompts))]
    spec = WorkerSpec.from_config(
        config, prompts=check_prompts, seeds=seeds, attention_scaling=None
    )
    say.phase(f"scoring dense, registry and refined on {len(check_prompts)} new seeds")
    variants = {
        "dense": None,
        "registry": {"trial_id": "registry", "ratios": start},
        "refined": {"trial_id": "refined", "ratios": refined_ratios},
    }
    rows, per_image, images = [], {}, {}
    for name, cand in variants.items():
        if cand is not None:
            cand["attention_scaling"] = base.attention_scaling
        row = evaluate_candidate(spec, cand, (base.poa_w,))[0]
        per_image[name] = np.asarray(row["image_scores"], dtype=np.float64)
        images[name] = row["images"]
        rows.append({"name": name, "score": float(row["score"]), **(cand or {})})
    maximize = config.objective.mode != "min"
    for row in rows:
        for ref in ("dense", "registry"):
            if row["name"] == ref or (ref == "registry" and row["name"] == "dense"):
                continue
            d = paired_difference(per_image[row["name"]], per_image[ref], maximize=maximize)
            row.update(
                {
                    f"vs_{ref}": d["delta"],
                    f"vs_{ref}_low": d["ci_low"],
                    f"vs_{ref}_high": d["ci_high"],
                }
            )
    refined_row = rows[2]
    if refined_ratios == start:
        verdict = "the search found nothing better than the registry recipe on these prompts"
    elif refined_row["vs_registry_low"] > 0:
        verdict = "the refined recipe beats the registry recipe on new seeds of these prompts"
    elif refined_row["vs_registry_high"] < 0:
        verdict = "the refined recipe is worse than the registry recipe on new seeds: keep it"
    else:
        verdict = (
            "no difference between the refined and the registry recipe on new seeds "
            f"({len(check_prompts)} images): the registry recipe is as good"
        )

    refined = base.replace(
        width=int(resolution[0]),
        height=int(resolution[1]),
        ratios=refined_ratios,
        scores={
            "dense": rows[0]["score"],
            "registry": rows[1]["score"],
            "recipe": refined_row["score"],
            "delta_ci_low": refined_row["vs_dense_low"],
            "delta_ci_high": refined_row["vs_dense_high"],
            "heldout_prompts": float(len(check_prompts)),
            "heldout_seed": float(CHECK_SEED_BASE),
        },
        study_id=StudyFolder(folder / "study").read_study()["study_id"],
        run_id=None,
        trial_id=f"refined:{refined_trial}",
        created_at=utc_now(),
    )
    files = [str(refined.save(folder / REFINED_RECIPE))]
    if save:
        files.append(str(refined.save(save)))
    from crdiff_search.images import compare_grid, ratio_note

    n_show = min(len(images["dense"]), 8)
    poa = [f"POA w={base.poa_w:g}"] if base.poa_w != 1.0 else []
    grid = compare_grid(
        {k: v[:n_show] for k, v in images.items()},
        check_prompts[:n_show],
        title=f"{model} at {config.resolution}: dense | registry | refined, new seeds",
        notes={
            "dense": ["no pruning"],
            "registry": [ratio_note(start), *poa, source],
            "refined": [ratio_note(refined_ratios), *poa, f"{trials} trials on these prompts"],
        },
        scores={k: per_image[k][:n_show].tolist() for k in images},
    )
    grid.save(folder / REFINE_GRID)
    files.append(str(folder / REFINE_GRID))
    exported = None
    if export:
        from crdiff_search.registry import Registry

        exported = Registry(registry).export(refined)
    info = {
        "model": model,
        "resolution": config.resolution,
        "prompts": prompts,
        "search": {"trials": trials, "seeds_per_prompt": seeds_per_prompt, "sampler": sampler},
        "base": {"source": source, "ratios": start, "poa_w": base.poa_w},
        "refined": {"ratios": refined_ratios, "trial_id": refined_trial},
        "check": {"seeds_per_prompt": check_seeds, "seed": CHECK_SEED_BASE, "rows": rows},
        "verdict": verdict,
        "exported": None if exported is None else exported.version,
    }
    (folder / REFINE_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    files.append(str(folder / REFINE_FILE))
    return RefineResult(folder, base, refined, source, rows, verdict, files, exported)
