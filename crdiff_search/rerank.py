"""Re-rank a finished study's best candidates with POA on held-out prompts, and pick a winner.

The search scored candidates on a small prompt set; its top ``k`` trials are scored again on a
larger, different set (other prompts, other seeds), each at several POA weights ``w``, next to
two references: the dense model and each candidate without POA (``w = 1``). Every row sees the
same prompts and seeds. Each (candidate, weight) is a Ray task, POA ones first; a worker
process loads the pipeline once and reuses it for every task it runs. The table is saved in the
study folder and logged under the study's MLflow run.

Example::

    result = rerank("runs/testbed", top_k=3, weights=(1.0, 1.5, 2.0), n_prompts=64)
    print(result.table)            # ranked, best first
    print(result.winner)           # {"trial_id": ..., "w": 1.5, "score": ..., ...}
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crdiff_search.errors import UsageError
from crdiff_search.study_folder import (
    RERANK_CSV,
    RERANK_FILE,
    RERANK_GRID,
    RERANK_IMAGES,
    RERANK_TABLE,
)

CONFIDENCE = 0.95
N_SHOW = 8  # images per row kept for the comparison grid
# per-prompt comparison columns of the table (empty without per-image values)
STAT_COLUMNS = (
    "delta_low",
    "delta_high",
    "p_vs_dense",
    "wins",
    "ties",
    "losses",
    "poa_gain",
    "poa_gain_low",
    "poa_gain_high",
)


@dataclass
class RerankResult:
    table: Any  # pandas.DataFrame, ranked best first
    winner: dict[str, Any]
    dense_score: float
    out_dir: Path
    run_id: str | None = None
    files: list[str] = field(default_factory=list)
    verdict: dict[str, Any] = field(default_factory=dict)


def parse_weights(text: str | Sequence[float]) -> tuple[float, ...]:
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        weights = tuple(float(x) for x in items if str(x).strip())
    except ValueError:
        raise UsageError(
            f"--w {text!r} must be comma-separated numbers, e.g. 1.0,1.25,1.5,2.0"
        ) from None
    if not weights or not all(math.isfinite(w) for w in weights):
        raise UsageError(f"--w {text!r} must hold at least one finite number")
    return tuple(dict.fromkeys(weights))


def load_study(study_dir: str | Path):
    """``(config, study_id, trials DataFrame)`` of a study output folder."""
    from crdiff_search.study_folder import CONFIG_FILE, STUDY_FILE, TABLE_FILE, StudyFolder

    folder = Path(study_dir)
    missing = [n for n in (TABLE_FILE, CONFIG_FILE, STUDY_FILE) if not (folder / n).is_file()]
    if missing:
        raise UsageError(
            f"{str(folder)!r} is not a finished study folder: missing {', '.join(missing)} "
            "(run `crdiff search --out DIR` first)"
        )
    study = StudyFolder(folder)
    config = study.read_config()
    return config, study.read_study()["study_id"], study.read_table()


def top_trials(
    trials, groups: Sequence[str], k: int, mode: str, *, attention_scaling: str | None = None
) -> list[dict[str, Any]]:
    """The ``k`` best completed, non-dense trials (ties: earlier trial first). In a study run
    with an ``attention_scaling`` every trial is a candidate, the unpruned trial 0 included
    (it is the scaling alone, not the dense model)."""
    if k < 1:
        raise UsageError(f"--top-k {k} must be at least 1")
    from crdiff_search import records

    done = records.ranked_completed(trials, mode, pruned_only=attention_scaling is None)
    if done.empty:
        raise UsageError("the study has no completed pruned trial to re-rank")
    return [
        {
            "trial_id": str(row["trial_id"]),
            "trial_index": int(row["trial_index"]),
            "search_score": float(row["score"]),
            "ratios": records.ratios_of(row, groups),
            "attention_scaling": attention_scaling,
        }
        for row in done.head(k).to_dict("records")
    ]


def heldout_prompts(
    config, *, n: int | None = None, prompts_file: str | None = None, seed: int | None = None
) -> tuple[list[str], list[int]]:
    """Held-out prompts and generation seeds (``seed + i``), by default those of the
    experiment's ``[rerank]`` section: the lines of a file; for the testbed, captions from its
    grammar drawn with ``seed``, none of them in the search set; or the lines of the study's
    own prompt file after those the search used."""
    from crdiff_search.config import read_prompt_file

    spec = config.rerank
    count = n or spec.prompts
    base = spec.seed if seed is None else seed
    prompts_file = prompts_file or spec.file
    if prompts_file:
        prompts = read_prompt_file(prompts_file, "held-out prompts file")[:count]
    elif config.model.source == "testbed":
        from crdiff_search.testbed.scenes import sample_captions

        prompts = sample_captions(count, base, exclude=config.prompt_list())
    elif config.prompts.file:
        pool = read_prompt_file(config.prompts.file)[config.prompts.count :]
        if not pool:
            raise UsageError(
                f"the study used every prompt of {config.prompts.file!r}: pass --prompts FILE "
                "(or set rerank.file) with held-out prompts"
            )
        prompts = pool[:count]
    else:
        raise UsageError("this study has no held-out prompts: pass --prompts FILE")
    if not prompts:
        raise UsageError("the held-out prompt set is empty")
    return prompts, [base + i for i in range(len(prompts))]


def heldout_source(config, prompts_file: str | None = None) -> str:
    """Where the held-out prompts come from, in words (for ``rerank.json`` and recipes)."""
    if prompts_file or config.rerank.file:
        return f"file {prompts_file or config.rerank.file}"
    if config.model.source == "testbed":
        return "testbed scene grammar, search captions excluded"
    return f"file {config.prompts.file}, lines after the first {config.prompts.count}"


def task_spec(config, prompts, seeds):
    """The :class:`~crdiff_search.runner.spec.WorkerSpec` of a re-rank task: the study's model
    and objective on the held-out prompts. Its worker holds the plain dense model (the
    reference row); a candidate brings its own attention scaling, as its recipe will."""
    from crdiff_search.runner.spec import WorkerSpec

    return WorkerSpec.from_config(config, prompts=prompts, seeds=seeds, attention_scaling=None)


def evaluate_candidate(spec, candidate: dict[str, Any] | None, weights: Sequence[float]):
    """Score the dense model (``candidate=None``) or one candidate at each POA weight, in the
    calling process (a Ray task's body), on ``spec``'s prompts. Rows carry per-objective values
    and a few images."""
    from crdiff_search.apply import apply_recipe
    from crdiff_search.recipe import Recipe
    from crdiff_search.runner.worker import worker_state

    state, _ = worker_state(spec)
    # Relative objective terms compare each image with the dense model's (same prompt, seed).
    dense = state.ensure_dense(spec) if spec.relative and candidate is not None else None

    def measure() -> dict[str, Any]:
        import numpy as np

        t_generate, t_score = 0.0, 0.0
        images, parts = [], {}
        for start, stop in spec.chunks:
            t0 = time.perf_counter()
            chunk = state.generate(spec, start, stop)
            t1 = time.perf_counter()
            for name, scores in state.score(chunk, spec.prompts[start:stop]).items():
                parts.setdefault(name, []).extend(scores.tolist())
            t_generate += t1 - t0
            t_score += time.perf_counter() - t1
            images.extend(chunk[: max(0, N_SHOW - len(images))])

        per = {k: np.asarray(v) for k, v in parts.items()}
        reference = per if candidate is None else dense
        values = state.image_values(per, reference)
        return {
            "score": state.combine(per, reference),
            "image_scores": None if values is None else [float(v) for v in values],
            **{f"obj.{k}": v for k, v in state.term_values(per, reference).items()},
            "t_generate": t_generate,
            "t_score": t_score,
            "images": images,
        }

    if candidate is None:
        from crdiff_search.models import denoiser_of
        from crdiff_search.recipe import model_revision

        row = {"kind": "dense", "trial_id": "dense", "w": None, **measure()}
        row["model_revision"] = model_revision(denoiser_of(state.pipe))
        return [row]
    rows = []
    for w in weights:
        recipe = Recipe(
            model=spec.source,
            width=spec.width,
            height=spec.height,
            ratios=candidate["ratios"],
            partition=spec.partition,
            criterion=spec.criterion,
            poa_w=w,
            attention_scaling=candidate.get("attention_scaling"),
        )
        # the recipe is made from this very model: no revision to compare
        with apply_recipe(state.pipe, recipe, pruner=state.pruner, check_revision=False):
            result = measure()
        rows.append(
            {
                "kind": "pruned" if w == 1.0 else "poa",
                "trial_id": candidate["trial_id"],
                "w": float(w),
                **result,
            }
        )
    return rows


def rerank(
    study_dir: str | Path,
    *,
    top_k: int | None = None,
    weights: Sequence[float] | None = None,
    prompts_file: str | None = None,
    n_prompts: int | None = None,
    seed: int | None = None,
    address: str | None = None,
    log_mlflow: bool = True,
    progress: bool = True,
) -> RerankResult:
    """Re-rank the study in ``study_dir``; writes ``rerank.parquet``/``.csv``/``.json`` and a
    comparison grid there and returns the ranked table, the winner and the verdict. Settings
    left ``None`` come from the study's ``[rerank]`` section. ``progress`` prints a line to
    stderr as each candidate (and the dense reference) finishes."""
    import pandas as pd

    folder = Path(study_dir).resolve()
    config, study_id, trials = load_study(folder)
    top_k = config.rerank.top_k if top_k is None else top_k
    weights = parse_weights(config.rerank.weights if weights is None else weights)
    if 1.0 not in weights:
        weights = (1.0, *weights)  # the candidate without POA is a reference row
    groups = tuple(c[len("ratio.") :] for c in trials.columns if c.startswith("ratio."))
    mode = config.objective.mode
    candidates = top_trials(
        trials, groups, top_k, mode, attention_scaling=config.search.attention_scaling
    )
    prompts, seeds = heldout_prompts(config, n=n_prompts, prompts_file=prompts_file, seed=seed)
    spec = task_spec(config, prompts, seeds)

    import ray

    from crdiff_search.runner.session import start_ray

    started = start_ray(address)
    try:
        task = ray.remote(evaluate_candidate).options(
            num_cpus=config.resources.cpu, num_gpus=config.resources.gpu
        )
        # One task per (candidate, weight), the costlier POA ones (dense and pruned every step)
        # first, so that the last tasks to finish are short ones; the worker's pipeline is
        # loaded once per process and reused by every task that lands there.
        jobs = [(c, w) for w in weights if w != 1.0 for c in candidates]
        jobs += [(None, None)] + [(c, 1.0) for c in candidates]
        refs = [task.remote(spec, c, weights if c is None else (w,)) for c, w in jobs]
        labels = ["dense" if c is None else f"trial {c['trial_id']} w={w:g}" for c, w in jobs]
        results = _gather(
            ray, refs, labels, len(candidates), len(prompts), config, weights, progress
        )
    finally:
        if started:
            ray.shutdown()

    dense_row = next(row for rows in results for row in rows if row["kind"] == "dense")
    dense_score = float(dense_row["score"])
    model_revision = dense_row.get("model_revision")
    by_trial = {c["trial_id"]: c for c in candidates}
    per_image = {
        (row["trial_id"], row["w"]): row["image_scores"] for rows in results for row in rows
    }
    paired = _paired_stats(per_image, mode)
    images = {}
    records = []
    for rows in results:
        for row in rows:
            cand = by_trial.get(row["trial_id"])
            images[(row["trial_id"], row["w"])] = row.pop("images")
            row.pop("model_revision", None)
            row.pop("image_scores", None)
            record = {
                "rank": 0,
                "kind": row["kind"],
                "trial_id": row["trial_id"],
                "w": row["w"],
                "score": row["score"],
                "score_delta": row["score"] - dense_score,
                "search_score": cand["search_score"] if cand else None,
                **{f"ratio.{g}": (cand["ratios"].get(g, 0.0) if cand else 0.0) for g in groups},
                **{k: v for k, v in row.items() if k.startswith("obj.")},
                **paired.get((row["trial_id"], row["w"]), {}),
                "n_images": len(prompts),
                "t_generate": row["t_generate"],
                "t_score": row["t_score"],
            }
            records.append(record)
    table = rank_rows(pd.DataFrame.from_records(records), mode)
    for col in STAT_COLUMNS:  # absent when the objective has no per-image values
        if col not in table.columns:
            table[col] = math.nan
    ranked = table[table["kind"] != "dense"]
    best = ranked.iloc[0].to_dict()
    winner = {
        "trial_id": best["trial_id"],
        "w": float(best["w"]),
        "ratios": by_trial[best["trial_id"]]["ratios"],
        "score": float(best["score"]),
        "score_delta": float(best["score_delta"]),
        "pruned_score": float(
            table[(table["trial_id"] == best["trial_id"]) & (table["w"] == 1.0)]["score"].iloc[0]
        ),
        "search_score": float(best["search_score"]),
        **{k: _plain(best[k]) for k in ("delta_low", "delta_high", "p_vs_dense")},
        **{k: _plain(best[k], int) for k in ("wins", "ties", "losses")},
        "secondary": {k: float(v) for k, v in best.items() if str(k).startswith("obj.")},
    }
    verdict = verdict_of(winner, mode, top_is_dense=table.iloc[0]["kind"] == "dense")
    files = [str(folder / RERANK_TABLE), str(folder / RERANK_CSV), str(folder / RERANK_FILE)]
    table.to_parquet(folder / RERANK_TABLE, index=False)
    table.to_csv(folder / RERANK_CSV, index=False)
    image_table = _image_table(per_image, prompts, seeds)
    if image_table is not None:
        image_table.to_parquet(folder / RERANK_IMAGES, index=False)
        files.append(str(folder / RERANK_IMAGES))
    from crdiff_search.images import compare_grid, ratio_note

    poa_w = best["w"] if best["w"] != 1.0 else max(weights)
    keys = {
        "dense": ("dense", None),
        "pruned": (best["trial_id"], 1.0),
        f"POA w={poa_w:g}": (best["trial_id"], poa_w),
    }
    columns = {label: images[key] for label, key in keys.items()}
    ratio_text = ratio_note(by_trial[best["trial_id"]]["ratios"]) + (
        " + entropy scaling" if config.search.attention_scaling else ""
    )
    grid = compare_grid(
        columns,
        prompts[: len(columns["dense"])],
        title=(
            f"{config.study}: {config.model.source} at {config.resolution}, held-out prompts "
            f"(trial {best['trial_id']})"
        ),
        notes={"dense": ["no pruning"], "pruned": [ratio_text], f"POA w={poa_w:g}": [ratio_text]},
        scores={label: per_image.get(key) for label, key in keys.items()},
        score_name=_objective_name(config),
    )
    grid.save(folder / RERANK_GRID)
    files.append(str(folder / RERANK_GRID))
    info = {
        "study_id": study_id,
        "study": config.study,
        "model": config.model.source,
        "model_revision": model_revision,
        "resolution": config.resolution,
        "objective": _objective_name(config),
        "mode": mode,
        "weights": list(weights),
        "top_k": top_k,
        "n_prompts": len(prompts),
        "confidence": CONFIDENCE,
        "heldout": {
            "prompts": len(prompts),
            "seed": seeds[0],
            "source": heldout_source(config, prompts_file),
        },
        "dense_score": dense_score,
        "winner": winner,
        "verdict": verdict,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    run_id = None
    # The result is on disk before MLflow is touched: a tracking outage costs no re-rank.
    (folder / RERANK_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    if log_mlflow and config.tracking.enabled:
        try:
            run_id = _log_mlflow(config, study_id, table, info, grid)
        except Exception as exc:
            print(
                f"warning: MLflow: the re-rank is saved in {folder / RERANK_FILE} but was not "
                f"logged ({type(exc).__name__}: {exc}); run `crdiff rerank {folder}` again "
                "when the tracking server is back",
                file=sys.stderr,
            )
        else:
            info["rerank_run_id"] = run_id
            (folder / RERANK_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return RerankResult(table, winner, dense_score, folder, run_id, files, verdict)


# Rows of equal score rank in this order: the dense model, then the cheaper candidate (no POA
# before POA, a lower w before a higher one). Scores equal to 12 decimals are equal.
_KIND_ORDER = {"dense": 0, "pruned": 1, "poa": 2}


def rank_rows(table, mode: str):
    """``table`` sorted best first by ``score`` (``mode`` max or min), ties broken in favour of
    the dense model and then of the cheaper row; ``rank`` numbered from 1."""
    key = table["score"].round(12)
    order = table.assign(
        _key=-key if mode != "min" else key,
        _kind=table["kind"].map(_KIND_ORDER),
        _w=table["w"].fillna(0.0),
    )
    order = order.sort_values(["_key", "_kind", "_w"], kind="stable")
    out = order.drop(columns=["_key", "_kind", "_w"]).reset_index(drop=True)
    out["rank"] = range(1, len(out) + 1)
    return out


def verdict_of(winner: dict[str, Any], mode: str, *, top_is_dense: bool) -> dict[str, Any]:
    """``{"status", "message"}``: ``repaired`` when the winner beats the dense model on the
    held-out prompts with an interval that excludes zero; ``null`` when it does not (the dense
    model stays the recipe); ``untested`` when the objective gives no per-prompt values."""
    low, high = winner.get("delta_low"), winner.get("delta_high")
    label = f"trial {winner['trial_id']} at w={winner['w']:g}"
    if low is None or high is None:
        return {
            "status": "untested",
            "message": f"{label} scored {winner['score_delta']:+.4f} vs dense, but the "
            "objective has no per-prompt values: no interval, no repair shown",
        }
    better = low > 0 if mode != "min" else high < 0
    interval = f"{CONFIDENCE:.0%} CI [{low:+.4f}, {high:+.4f}]"
    if top_is_dense or not better:
        return {
            "status": "null",
            "message": f"no candidate beats the dense model on the held-out prompts (best: "
            f"{label}, {winner['score_delta']:+.4f}, {interval}); the dense model stays",
        }
    return {
        "status": "repaired",
        "message": f"{label} beats the dense model by {winner['score_delta']:+.4f} "
        f"({interval}, p = {winner['p_vs_dense']:.2g})",
    }


def _paired_stats(
    per_image: dict[tuple[str, float | None], list[float] | None], mode: str
) -> dict[tuple[str, float | None], dict[str, float]]:
    """For every non-dense row: its difference from dense over the same prompts and seeds, as a
    bootstrap interval, a Wilcoxon signed-rank p-value and per-prompt wins/ties/losses; for POA
    rows also the gain over the same candidate without POA (``poa_gain``, with its interval).
    Empty when the objective has no per-image values (a set metric such as FID)."""
    import numpy as np

    from crdiff_search.analysis.stats import paired_difference

    dense = per_image.get(("dense", None))
    if dense is None or any(v is None for v in per_image.values()):
        return {}
    maximize = mode != "min"
    out = {}
    for (trial_id, w), values in per_image.items():
        if trial_id == "dense":
            continue
        vs_dense = paired_difference(
            np.asarray(values), np.asarray(dense), maximize=maximize, confidence=CONFIDENCE
        )
        stats = {
            "delta_low": vs_dense["ci_low"],
            "delta_high": vs_dense["ci_high"],
            "p_vs_dense": vs_dense["p"],
            "wins": vs_dense["wins"],
            "ties": vs_dense["ties"],
            "losses": vs_dense["losses"],
        }
        pruned = per_image.get((trial_id, 1.0))
        if w != 1.0 and pruned is not None:
            gain = paired_difference(
                np.asarray(values), np.asarray(pruned), maximize=maximize, confidence=CONFIDENCE
            )
            stats.update(
                poa_gain=gain["delta"], poa_gain_low=gain["ci_low"], poa_gain_high=gain["ci_high"]
            )
        out[(trial_id, w)] = stats
    return out


def _image_table(per_image, prompts: Sequence[str], seeds: Sequence[int]):
    """Long table of the paired per-prompt scores (None without per-image values)."""
    import pandas as pd

    if any(v is None for v in per_image.values()):
        return None
    rows = [
        {
            "kind": "dense" if trial_id == "dense" else ("pruned" if w == 1.0 else "poa"),
            "trial_id": trial_id,
            "w": w,
            "prompt_index": i,
            "prompt": prompts[i],
            "seed": int(seeds[i]),
            "score": float(v),
        }
        for (trial_id, w), values in per_image.items()
        for i, v in enumerate(values)
    ]
    return pd.DataFrame.from_records(rows)


def _plain(value, kind=float):
    """A JSON-ready number: NaN (no per-image values) becomes None."""
    value = float(value)
    return None if math.isnan(value) else kind(value)


def _gather(
    ray, refs, labels, n_candidates: int, n_prompts: int, config, weights, progress: bool
) -> list:
    """``ray.get(refs)``, printing a line per finished task when ``progress``."""
    if not progress:
        return ray.get(refs)
    import sys

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    label_of = dict(zip(refs, labels, strict=True))
    say(
        f"rerank {config.study}: dense + {n_candidates} candidates x w="
        f"{','.join(f'{w:g}' for w in weights)} ({len(refs)} tasks) on {n_prompts} held-out "
        f"prompts at {config.resolution}"
    )
    started = time.perf_counter()
    pending, done = list(refs), 0
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        rows = ray.get(ready[0])  # raises the task's error at once
        done += 1
        say(
            f"[{done}/{len(refs)}] {label_of[ready[0]]}: score {rows[0]['score']:.4f} "
            f"({time.perf_counter() - started:.0f} s)"
        )
    return ray.get(refs)


def _objective_name(config) -> str:
    names = config.objective.names
    if len(names) == 1:
        return names[0]
    return "+".join(f"{w:g}*{n}" for n, w in zip(names, config.objective.weights, strict=True))


def _log_mlflow(config, study_id: str, table, info: dict, grid) -> str | None:
    import hashlib

    from crdiff_search.tracking import StudyTracker, resolve_tracking_uri

    tracker = StudyTracker(resolve_tracking_uri(config.tracking.uri), config.tracking_experiment)
    winner = info["winner"]
    metrics = {
        "dense_score": info["dense_score"],
        "winner_score": winner["score"],
        "winner_score_delta": winner["score_delta"],
        **{f"winner_{k}": winner.get(k) for k in ("delta_low", "delta_high", "p_vs_dense")},
    }
    for row in table.to_dict("records"):
        if row["kind"] != "dense":
            metrics[f"score.{row['trial_id']}.w{row['w']:g}"] = float(row["score"])
    params = {
        "winner_trial_id": winner["trial_id"],
        "winner_w": winner["w"],
        "n_prompts": info["n_prompts"],
        "weights": ",".join(f"{w:g}" for w in info["weights"]),
        "top_k": info["top_k"],
        "heldout_seed": info["heldout"]["seed"],
    }
    # One run per re-rank setting: the same re-rank logged again updates its run.
    setting = [params["weights"], params["top_k"], params["n_prompts"], params["heldout_seed"]]
    setting.append(info["heldout"].get("source"))
    key = hashlib.sha256(json.dumps(setting, default=str).encode()).hexdigest()[:16]
    return tracker.log_rerank(
        study_id,
        key,
        name=f"rerank {config.study}",
        params=params,
        metrics=metrics,
        tags={"crdiff.verdict": info["verdict"]["status"]},
        texts={"rerank.csv": table.to_csv(index=False)},
        dicts={RERANK_FILE: info},
        images={} if grid is None else {"images/rerank_compare.png": grid},
    )


def format_table(table, groups: Sequence[str] | None = None) -> str:
    cols = ["rank", "kind", "trial_id", "w", "score", "score_delta"]
    if "delta_low" in table.columns and table["delta_low"].notna().any():
        cols += ["delta_low", "delta_high", "p_vs_dense", "poa_gain"]
    cols += ["search_score"]
    cols += [c for c in table.columns if c.startswith("ratio.") or c.startswith("obj.")]
    view = table[cols].copy()
    return view.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-")


class NullResultError(UsageError):
    """The study's winner is not shown to beat the dense model on held-out prompts."""


def recipe_from_study(study_dir: str | Path, *, use_rerank: bool = True, allow_null: bool = False):
    """The study's winner as a :class:`~crdiff_search.recipe.Recipe`: from ``rerank.json``
    (re-ranked, with POA), or with ``use_rerank=False`` the best search trial at ``w = 1``.

    A winner whose held-out verdict is not ``repaired`` (no interval excluding zero, or no
    held-out check at all with ``use_rerank=False``) raises :class:`NullResultError` unless
    ``allow_null``: a null result is not a recipe."""
    from crdiff_search.recipe import Recipe, utc_now
    from crdiff_search.version import code_version

    folder = Path(study_dir).resolve()
    config, study_id, trials = load_study(folder)
    groups = tuple(c[len("ratio.") :] for c in trials.columns if c.startswith("ratio."))
    source = _absolute_model(config.model.source)
    if use_rerank:
        path = folder / RERANK_FILE
        if not path.is_file():
            raise UsageError(
                f"{str(folder)!r} has no {RERANK_FILE}: run `crdiff rerank {study_dir}` first, "
                "or export the best search trial with --no-rerank"
            )
        from crdiff_search.study_folder import read_json

        info = read_json(path, "re-rank result")
        if not isinstance(info, dict) or not isinstance(info.get("winner"), dict):
            raise UsageError(
                f"re-rank result {str(path)!r} has no winner: run `crdiff rerank` again"
            )
        win = info["winner"]
        verdict = info.get("verdict") or verdict_of(
            win, config.objective.mode, top_is_dense=win["score_delta"] <= 0
        )
        if verdict["status"] != "repaired" and not allow_null:
            raise NullResultError(
                f"{str(folder)!r}: not exporting a {verdict['status']} result: "
                f"{verdict['message']}. Pass --allow-null to register it anyway"
            )
        ratios, w, trial_id = win["ratios"], win["w"], win["trial_id"]
        scores = {
            "dense": info["dense_score"],
            "pruned": win["pruned_score"],
            "recipe": win["score"],
            "search": win["search_score"],
        }
        scores.update({f"secondary.{k}": v for k, v in win.get("secondary", {}).items()})
        if win.get("delta_low") is not None:  # the interval of recipe - dense, held out
            scores["delta_ci_low"], scores["delta_ci_high"] = win["delta_low"], win["delta_high"]
            scores["p_vs_dense"] = win["p_vs_dense"]
        heldout = info.get("heldout", {})
        scores["heldout_prompts"] = heldout.get("prompts", info.get("n_prompts"))
        scores["heldout_seed"] = heldout.get("seed")
        scores["repaired"] = 1.0 if verdict["status"] == "repaired" else 0.0
        revision = info.get("model_revision")
        run_id = info.get("rerank_run_id")
    else:
        if not allow_null:
            raise NullResultError(
                f"{str(folder)!r}: the best search trial was never checked on held-out prompts; "
                f"run `crdiff rerank {study_dir}` first, or pass --allow-null to register it "
                "untested"
            )
        best = top_trials(
            trials,
            groups,
            1,
            config.objective.mode,
            attention_scaling=config.search.attention_scaling,
        )[0]
        ratios, w, trial_id = best["ratios"], 1.0, best["trial_id"]
        dense = trials[(trials["state"] == "COMPLETE") & (trials["trial_index"] == 0)]
        scores = {"recipe": best["search_score"], "search": best["search_score"]}
        if not dense.empty:
            scores["dense"] = float(dense["score"].iloc[0])
        revision, run_id = None, None  # no model was loaded: its revision is unknown
    if run_id is None:
        run_id = _parent_run_id(config, study_id)
    p = config.partition
    return Recipe(
        model=source,
        model_revision=revision,
        width=config.width,
        height=config.height,
        partition=p.spec,
        criterion=_study_criterion(config),
        ratios={g: float(r) for g, r in ratios.items() if g in groups or not groups},
        poa_w=float(w),
        attention_scaling=config.search.attention_scaling,
        objective=_objective_name(config),
        higher_is_better=config.objective.mode == "max",
        scores={k: float(v) for k, v in scores.items() if v is not None},
        steps=config.model.steps,
        guidance=config.model.guidance,
        study_id=study_id,
        run_id=run_id,
        trial_id=str(trial_id),
        code_version=code_version(),
        created_at=utc_now(),
    )


def _absolute_model(source: str) -> str:
    local = Path(source).expanduser()
    return str(local.resolve()) if source != "testbed" and local.exists() else source


def _parent_run_id(config, study_id: str) -> str | None:
    if not config.tracking.enabled:
        return None
    try:
        from crdiff_search.tracking import StudyTracker, resolve_tracking_uri

        tracker = StudyTracker(
            resolve_tracking_uri(config.tracking.uri), config.tracking_experiment
        )
        return tracker.find_study(study_id)
    except Exception:
        return None


def _study_criterion(config) -> str:
    from crdiff_search.model_info import study_criterion

    return study_criterion(config)
