"""Samplers side by side on one experiment (``crdiff compare``): one study per (sampler, seed),
one table, one report (written by :mod:`analysis.compare`).

Every study runs through :func:`crdiff_search.runner.run_study` (the path ``crdiff search``
takes) with the experiment's prompts and generation seeds pinned, so the only thing that varies
between studies is the sampler and its seed. Studies live in ``DIR/studies/<name>/``; a study
whose table already holds its budget is skipped, an interrupted one is resumed, so running the
same comparison again picks up where it stopped.

Example::

    from crdiff_search.compare import plan_comparison, run_comparison
    plan = plan_comparison(None, samplers=["anneal", "tpe"], seeds=[0, 1, 2], trials=16)
    result = run_comparison(plan, "runs/compare")   # writes comparison.parquet and report.md
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crdiff_search.analysis.compare import (
    DEFAULT_SHARE,
    MANIFEST,
    PICKS_TABLE,
    TABLE,
    build_report,
)
from crdiff_search.analysis.table import method_label
from crdiff_search.config import early_stopping_chunk_size
from crdiff_search.errors import UsageError
from crdiff_search.study_folder import StudyFolder

STUDIES_DIR = "studies"
MANIFEST_VERSION = 1
DEFAULT_SAMPLERS = ("anneal", "anneal-paper", "tpe", "gp", "random", "uniform")


@dataclass(frozen=True)
class PlannedStudy:
    """One (sampler, seed, early stopping) arm of the comparison and its full study config."""

    name: str
    sampler: str
    seed: int
    early_stopping: bool
    config: Any  # ExperimentConfig

    @property
    def method(self) -> str:
        return method_label(self.sampler, self.early_stopping)


@dataclass(frozen=True)
class ComparePlan:
    """Everything a comparison will run, validated; nothing has started yet."""

    experiment: str | None
    base: Any  # ExperimentConfig
    samplers: tuple[str, ...]
    seeds: tuple[int, ...]
    trials: int
    early_stopping: bool
    studies: tuple[PlannedStudy, ...]
    context: dict[str, str] = field(default_factory=dict)
    out_dir: Path = Path(".")  # where the table, the report and studies/ go

    @property
    def maximize(self) -> bool:
        return self.base.objective.mode == "max"

    @property
    def score_label(self) -> str:
        return "+".join(self.base.objective.names)


@dataclass(frozen=True)
class CompareResult:
    table_path: Path
    report_path: Path
    ran: tuple[str, ...]
    skipped: tuple[str, ...]
    failed: dict[str, str]
    collected: tuple[str, ...]


def parse_samplers(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"anneal,tpe"`` -> ``("anneal", "tpe")``; unknown or repeated names are a UsageError."""
    from crdiff_search.samplers import SAMPLER_NAMES

    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    if not names:
        raise UsageError(f"--samplers is empty; valid: {', '.join(SAMPLER_NAMES)}")
    bad = [n for n in names if n not in SAMPLER_NAMES]
    if bad:
        raise UsageError(
            f"unknown sampler(s) {', '.join(map(repr, bad))}; valid: {', '.join(SAMPLER_NAMES)}"
        )
    if len(set(names)) != len(names):
        raise UsageError(f"--samplers names a sampler twice: {','.join(names)}")
    return tuple(names)


def parse_seeds(text: str | int | Sequence[int]) -> tuple[int, ...]:
    """A count (``5`` -> seeds 0..4) or a comma list (``"3,7"``) of distinct seeds."""
    if isinstance(text, int):
        text = str(text)
    if not isinstance(text, str):
        seeds = [int(s) for s in text]
    elif "," in text:
        try:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        except ValueError:
            raise UsageError(f"--seeds {text!r}: give a count (5) or integers (0,1,2)") from None
    else:
        try:
            count = int(text)
        except ValueError:
            raise UsageError(f"--seeds {text!r}: give a count (5) or integers (0,1,2)") from None
        if count < 1:
            raise UsageError(f"--seeds must be >= 1, got {count}")
        seeds = list(range(count))
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UsageError(f"--seeds {text!r}: need distinct non-negative integers")
    return tuple(seeds)


def _study_name(method: str, seed: int) -> str:
    return f"{method.replace('+', '-')}-s{seed}"


def plan_comparison(
    experiment: str | None,
    *,
    samplers: Sequence[str],
    seeds: Sequence[int],
    trials: int | None = None,
    early_stopping: bool = False,
    plain: bool = True,
    overrides: Mapping[str, Any] | None = None,
    out_dir: str | Path | None = None,
) -> ComparePlan:
    """Validate everything and build one study config per arm (no Ray, no weights).
    ``trials`` defaults to the experiment's budget, ``out_dir`` to ``runs/compare-<study>``.
    With ``early_stopping`` every sampler also runs with ASHA (``+asha`` arms); ``plain=False``
    leaves out the arms without it (to add ASHA arms to a comparison that has its plain ones).

    The prompts are fixed to the experiment's own list (the testbed samples its captions from
    the search seed, which would otherwise differ between seeds) and the generation seeds are
    the experiment's, so every study scores candidates on the same images' noise.
    """
    from crdiff_search.config import load_experiment
    from crdiff_search.runner import prepare

    samplers = parse_samplers(samplers)
    seeds = parse_seeds(list(seeds))
    base = load_experiment(experiment, **dict(overrides or {}))
    trials = base.search.trials if trials is None else trials
    if trials < 2:
        raise UsageError(f"--trials must be >= 2 (trial 0 is the dense model), got {trials}")
    if not plain and not early_stopping:
        raise UsageError("leaving out the plain arms needs early stopping (--early-stopping-only)")
    _, summary = prepare(base)  # model, resolution, groups: fail before anything runs
    prompts = base.prompt_list()
    chunk = base.prompts.chunk_size
    if early_stopping and len(base.chunks()) < 2:
        # ASHA needs intermediate reports; the plain arms get the same chunks.
        chunk = early_stopping_chunk_size(base.prompts.count)
        if base.prompts.count < 2:
            raise UsageError("--early-stopping needs at least 2 prompts (prompts.count)")
    out = Path(out_dir) if out_dir is not None else Path("runs") / f"compare-{base.study}"
    common = {
        "prompts.items": list(prompts),
        "prompts.file": "",
        "prompts.count": len(prompts),
        "prompts.chunk_size": chunk,
        "search.trials": trials,
        "tracking.experiment": base.tracking.experiment or f"{base.study}-compare",
    }
    arms = [es for es in (False, True) if (es and early_stopping) or (not es and plain)]
    studies = []
    # Seed-major order: a comparison cut short still has every sampler on its first seeds.
    for es in arms:
        for seed in seeds:
            for sampler in samplers:
                name = _study_name(method_label(sampler, es), seed)
                config = base.replace(
                    **common,
                    **{
                        "study": f"{base.study}-{name}",
                        "output": str(out / STUDIES_DIR / name),
                        "search.sampler": sampler,
                        "search.seed": seed,
                        "search.early_stopping": es,
                    },
                )
                studies.append(PlannedStudy(name, sampler, seed, es, config))
    study0 = studies[0].config
    context = {
        "experiment": str(experiment) if experiment else "the embedded testbed study",
        "model": base.model.source,
        "resolution": base.resolution,
        "groups": ", ".join(summary["groups"]),
        "ratio bounds": ", ".join(
            f"{g} {lo:g}-{hi:g}" for g, (lo, hi) in summary["groups"].items()
        ),
        "objective": f"{'+'.join(base.objective.names)} ({base.objective.mode})",
        "prompts": f"{len(prompts)} prompts, generation seeds {study0.seed_list()[:3]}... "
        "(the same for every study)",
        "sampling": f"{base.model.steps} steps, guidance {base.model.guidance:g}",
        "budget": f"{trials} trials per study, trial 0 being the dense model",
    }
    if early_stopping:
        context["early stopping"] = (
            f"ASHA over {len(study0.chunks())} prompt chunks of {chunk}, reduction factor 2"
        )
    return ComparePlan(
        experiment=str(experiment) if experiment else None,
        base=base,
        samplers=samplers,
        seeds=seeds,
        trials=trials,
        early_stopping=early_stopping,
        studies=tuple(studies),
        context=context,
        out_dir=out,
    )


PICK_FILE = "heldout_pick.json"  # in a study folder: its pick scored on held-out prompts


def _score_pick(study: PlannedStudy, n: int, address: str | None, log) -> None:
    """The study's pick and the dense model on ``n`` held-out prompts, once (``PICK_FILE``)."""
    from crdiff_search.rerank import rerank
    from crdiff_search.runner.study import study_complete

    folder = study.config.output_dir
    target = Path(folder) / PICK_FILE
    if target.is_file() or not study_complete(folder, study.config):
        return
    try:
        result = rerank(
            folder,
            top_k=1,
            weights=[1.0],
            n_prompts=n,
            address=address,
            log_mlflow=False,
            progress=False,
        )
    except UsageError as exc:  # e.g. no completed pruned trial: nothing to score
        log(f"  {study.name}: held-out pick not scored ({exc})")
        return
    w = result.winner
    record = {
        "study": study.name,
        "sampler": study.sampler,
        "seed": study.seed,
        "early_stopping": study.early_stopping,
        "pick_trial": w["trial_id"],
        "search_score": w["search_score"],
        "heldout_prompts": n,
        "heldout_score": w["pruned_score"],
        "heldout_dense": result.dense_score,
        "heldout_delta": w["pruned_score"] - result.dense_score,
        "delta_low": w.get("delta_low"),
        "delta_high": w.get("delta_high"),
        **{f"ratio.{g}": r for g, r in w["ratios"].items()},
    }
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(target)
    log(
        f"  {study.name}: pick {w['trial_id']} held out {record['heldout_delta']:+.4f} vs dense "
        f"on {n} prompts"
    )


def pick_table(studies: Sequence[PlannedStudy]):
    """One row per study whose pick was scored held out (None when none was)."""
    import pandas as pd

    rows = []
    for study in studies:
        path = Path(study.config.output_dir) / PICK_FILE
        if path.is_file():
            rows.append(json.loads(path.read_text(encoding="utf-8")))
    return pd.DataFrame(rows) if rows else None


def _save_picks(out: Path, picks) -> None:
    (out / PICKS_TABLE).parent.mkdir(parents=True, exist_ok=True)
    picks.to_csv(out / PICKS_TABLE, index=False)


def study_status(study: PlannedStudy) -> str:
    """``complete``, ``resume`` (an interrupted study), or ``new``; a folder holding a study
    with other settings is a UsageError (a new ``--out`` is needed)."""
    from crdiff_search.config import ExperimentConfig
    from crdiff_search.runner.study import study_complete
    from crdiff_search.study_folder import CONFIG_FILE, RESULTS_FOLDER

    out = study.config.output_dir
    stored = out / CONFIG_FILE
    if not stored.is_file():
        return "new"
    before = ExperimentConfig.from_toml(stored.read_text(encoding="utf-8")).to_dict()
    now = study.config.to_dict()
    # Where the folder is, not a setting: the same folder named relative or absolute (or
    # from another working folder) holds the same study.
    before.pop("output", None)
    now.pop("output", None)
    if before != now:
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        raise UsageError(
            f"{out} holds study {study.name} run with other settings ({', '.join(changed)}); "
            "use another --out for a comparison with new settings"
        )
    if study_complete(out, study.config):
        return "complete"
    return "resume" if (out / RESULTS_FOLDER / study.config.study).is_dir() else "new"


def _first_error(table: Path) -> str:
    import pandas as pd

    if not table.is_file():
        return "no trial table"
    errors = pd.read_parquet(table, columns=["error"])["error"].dropna().astype(str)
    errors = errors[errors != ""]
    return errors.iloc[0] if len(errors) else "unknown error"


def write_manifest(plan: ComparePlan, out_dir: Path, collected: Sequence[str] = ()) -> Path:
    data = {
        "version": MANIFEST_VERSION,
        "experiment": plan.experiment,
        "study": plan.base.study,
        "samplers": list(plan.samplers),
        "seeds": list(plan.seeds),
        "trials": plan.trials,
        "early_stopping": plan.early_stopping,
        "maximize": plan.maximize,
        "score_label": plan.score_label,
        "title": f"Sampler comparison: {plan.base.study} at {plan.base.resolution}",
        "context": plan.context,
        "studies": {
            s.name: {"sampler": s.sampler, "seed": s.seed, "early_stopping": s.early_stopping}
            for s in plan.studies
        },
        "collected": list(collected),
    }
    path = out_dir / MANIFEST
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def mlflow_sources(experiments: Sequence[str], tracking_uri: str | None) -> list[tuple[str, str]]:
    """``(tracking URI, experiment name)`` pairs for ``run_comparison(collect_mlflow=...)``:
    the named MLflow experiments at ``tracking_uri`` (resolved as ``crdiff search`` does)."""
    if not experiments:
        return []
    from crdiff_search.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    return [(uri, name) for name in experiments]


def run_comparison(
    plan: ComparePlan | None,
    out_dir: str | Path,
    *,
    collect: Sequence[str | Path] = (),
    collect_mlflow: Sequence[tuple[str, str]] = (),
    address: str | None = None,
    progress: bool = False,
    share: float = DEFAULT_SHARE,
    run: bool = True,
    heldout: int = 0,
    log: Callable[[str], None] = _log,
) -> CompareResult:
    """Run the planned studies not yet complete (one at a time, sharing one Ray session), add
    the collected study tables, and write ``comparison.parquet`` and the report.

    ``run=False`` runs nothing and reports only the planned studies already complete.
    ``heldout=N`` also scores each complete study's pick (its best search trial, the one a user
    would take) and the dense model on N held-out prompts (``crdiff rerank`` with one
    candidate and no POA), once per study, into ``tables/picks.csv`` and the report."""
    from crdiff_search.analysis.table import combine_studies, find_study_tables, save_table

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    collected = [str(p) for p in find_study_tables(collect)] if collect else []
    from_mlflow: dict[str, Any] = {}
    for uri, experiment in collect_mlflow:  # read before Ray starts: a bad name fails early
        from crdiff_search.analysis.mlflow_source import mlflow_study_tables

        for study_id, frame in mlflow_study_tables(uri, experiment).items():
            from_mlflow[f"mlflow:{experiment}:{study_id}"] = frame
            collected.append(f"mlflow:{experiment}:{study_id}")
    studies = plan.studies if plan is not None else ()
    statuses = {s.name: study_status(s) for s in studies}  # settings clash: fail before Ray
    if plan is not None:
        write_manifest(plan, out, collected)
    elif not collected:
        raise UsageError("nothing to compare: give samplers to run or --collect folders")

    ran, skipped, failed = [], [], {}
    todo = [s for s in studies if statuses[s.name] != "complete"] if run else []
    skipped = [s.name for s in studies if statuses[s.name] == "complete"]
    started_ray = False
    if heldout < 0:
        raise UsageError(f"--heldout must be >= 0 prompts, got {heldout}")
    if todo or (heldout and run):
        import ray

        from crdiff_search.runner import run_study
        from crdiff_search.runner.session import start_ray
        from crdiff_search.runner.study import study_complete

        # One Ray session for every study: run_study reuses it instead of starting its own.
        started_ray = start_ray(address)
    try:
        for i, study in enumerate(todo, start=1):
            status = statuses[study.name]
            log(
                f"[{i}/{len(todo)}] {study.name}: {'resuming' if status == 'resume' else 'running'}"
                f" ({study.config.search.trials} trials)"
            )
            table = StudyFolder(study.config.output_dir).table
            if status == "new" and table.is_file():
                table.unlink()  # a start that never reached Ray; its rows cannot be resumed
            try:
                result = run_study(
                    study.config,
                    out_dir=study.config.output_dir,
                    resume=status == "resume",
                    address=address,
                    progress=progress,
                )
            except UsageError:
                raise
            except Exception as exc:  # one broken study must not lose the others
                failed[study.name] = f"{type(exc).__name__}: {exc}"
                log(f"  {study.name} failed: {failed[study.name]}")
                log(traceback.format_exc(limit=3))
                continue
            ran.append(study.name)
            log(f"  best {result.best_score:.4f} (dense {result.dense_score:.4f}), {result.states}")
            if result.interrupted and not study_complete(result.table_path.parent, study.config):
                # Ctrl-C, even before the study's first trial finished: stop here rather than
                # starting the next study; running the command again resumes this one.
                failed[study.name] = "stopped before its budget; run again to resume"
                log(f"  {study.name}: {failed[study.name]}")
                break
            if not result.states.get("COMPLETE"):
                failed[study.name] = f"no trial completed: {_first_error(result.table_path)}"
                log(f"  {study.name}: {failed[study.name]}")
            elif not study_complete(result.table_path.parent, study.config):
                # Tune swallows Ctrl-C and returns early: stop here instead of starting the
                # next study; running the command again resumes this one.
                failed[study.name] = "stopped before its budget; run again to resume"
                log(f"  {study.name}: {failed[study.name]}")
                break
            elif heldout:  # its pick now, so that a comparison cut short keeps it
                _score_pick(study, heldout, address, log)
        if heldout and run:  # studies complete before this call
            for study in studies:
                if study.name not in failed:
                    _score_pick(study, heldout, address, log)
    finally:
        if started_ray:
            import ray

            ray.shutdown()

    sources: dict[str, Path] = {}
    labels: dict[str, dict[str, Any]] = {}
    for study in studies:
        path = StudyFolder(study.config.output_dir).table
        # run=False reports what is finished: a study cut short would bias its method.
        if path.is_file() and (run or statuses[study.name] == "complete"):
            sources[study.name] = path
            labels[study.name] = {
                "sampler": study.sampler,
                "seed": study.seed,
                "early_stopping": study.early_stopping,
            }
    for name, frame in from_mlflow.items():
        sources[name] = frame
        labels[name] = {"early_stopping": frame.attrs.get("early_stopping", None)}
    for path in (c for c in collected if c not in from_mlflow):
        name = f"collected:{path}"
        sources[name] = Path(path)
    if not sources:
        raise RuntimeError(f"no study produced a trial table ({failed})")
    maximize = plan.maximize if plan is not None else True
    table = combine_studies(sources, maximize=maximize, labels=labels)
    if not (table["state"] == "COMPLETE").any():
        raise RuntimeError(f"no study completed a trial; errors: {failed}")
    table_path = save_table(table, out / TABLE)
    picks = pick_table(studies)
    if picks is not None:
        _save_picks(out, picks)
    report = build_report(out, share=share)
    return CompareResult(table_path, report, tuple(ran), tuple(skipped), failed, tuple(collected))


# Context lines that may differ between merged comparisons (the rest must match).
_MERGE_FREE = ("early stopping",)


def merge_comparisons(
    sources: Sequence[str | Path], out_dir: str | Path, *, share: float = DEFAULT_SHARE
) -> Path:
    """One comparison from several ``crdiff compare`` folders of the same experiment (seeds run
    at different times, ASHA arms added later): their tables, held-out picks and manifests
    joined into ``out_dir`` (which may be one of them), and the report rebuilt.

    The folders must agree on the model, resolution, prompts, sampling, budget and objective
    (their manifest's context); a study present in two folders must have the same trials
    there. Everything is read and checked before anything is written."""
    import pandas as pd

    from crdiff_search.analysis.table import load_table, save_table

    folders = [Path(s) for s in sources]
    if len(folders) < 2:
        raise UsageError("--merge needs at least two comparison folders")
    manifests, tables, picks = [], [], []
    for folder in folders:
        if not (folder / MANIFEST).is_file() or not (folder / TABLE).is_file():
            raise UsageError(f"{folder} is not a comparison folder (no {MANIFEST} or {TABLE})")
        manifests.append(json.loads((folder / MANIFEST).read_text(encoding="utf-8")))
        tables.append(load_table(folder / TABLE))
        if (folder / PICKS_TABLE).is_file():
            picks.append(pd.read_csv(folder / PICKS_TABLE))

    def identity(manifest: dict) -> dict:  # what two merged comparisons must share
        context = manifest.get("context", {})
        return {
            **{k: manifest.get(k) for k in ("maximize", "score_label", "trials")},
            **{k: v for k, v in context.items() if k not in _MERGE_FREE},
        }

    first, reference = manifests[0], identity(manifests[0])
    for folder, manifest in zip(folders[1:], manifests[1:], strict=True):
        other = identity(manifest)
        for key in sorted(set(reference) | set(other)):
            if other.get(key) != reference.get(key):
                raise UsageError(
                    f"{folder} differs from {folders[0]} in {key}: {other.get(key)!r} vs "
                    f"{reference.get(key)!r}; only comparisons of the same experiment can be "
                    "merged"
                )
    kept: dict[str, pd.DataFrame] = {}
    origin: dict[str, Path] = {}
    key_columns = ["trial_id", "state", "score"]
    for folder, table in zip(folders, tables, strict=True):
        for study, rows in table.groupby("study", sort=False):
            rows = rows.sort_values("trial_index").reset_index(drop=True)
            if study in kept:
                same = kept[study][key_columns].equals(rows[key_columns])
                if not same:
                    raise UsageError(
                        f"study {study} is in {origin[study]} and in {folder} with different "
                        "trials; merge comparisons whose studies differ (other seeds or arms)"
                    )
                continue
            kept[study], origin[study] = rows, folder
    table = pd.concat(kept.values(), ignore_index=True)
    studies: dict[str, Any] = {}
    samplers: list[str] = []
    for manifest in manifests:  # a manifest lists planned studies: keep those with trials
        found = manifest.get("studies", {}).items()
        studies.update({k: v for k, v in found if k in kept and k not in studies})
    for info in studies.values():
        samplers += [info["sampler"]] if info["sampler"] not in samplers else []
    context = dict(first.get("context", {}))
    for manifest in manifests:
        for key in _MERGE_FREE:
            if key in manifest.get("context", {}):
                context.setdefault(key, manifest["context"][key])
    merged = {
        **first,
        "samplers": samplers,
        "seeds": sorted({int(info["seed"]) for info in studies.values()}),
        "early_stopping": any(info["early_stopping"] for info in studies.values()),
        "context": context,
        "studies": studies,
        "collected": [c for m in manifests for c in m.get("collected", [])],
        "merged": [str(f) for f in folders],
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_table(table, out / TABLE)
    if picks:
        joined = pd.concat(picks, ignore_index=True).drop_duplicates("study", keep="first")
        _save_picks(out, joined[joined["study"].isin(kept)])
    (out / MANIFEST).write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")
    return build_report(out, share=share)
