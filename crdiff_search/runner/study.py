"""Running one study on Ray Tune: the tuner, its searcher, resume, and the final summary."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crdiff_search import records
from crdiff_search.config import ExperimentConfig
from crdiff_search.errors import UsageError
from crdiff_search.model_info import check_class_labels, check_model, group_names
from crdiff_search.runner.spec import TrackingTarget, WorkerSpec
from crdiff_search.study_folder import CONFIG_FILE, RESULTS_FOLDER, TABLE_FILE, StudyFolder


@dataclass(frozen=True)
class StudyResult:
    """What a finished (or resumed-and-finished) study produced."""

    table_path: Path
    results_dir: Path
    best_ratios: dict[str, float]
    best_score: float
    dense_score: float
    best_trial_id: str
    parent_run_id: str | None
    n_trials: int
    states: dict[str, int] = field(default_factory=dict)
    budget: int = 0
    interrupted: bool = False  # stopped by SIGINT (Ctrl-C)
    sampler_stopped: bool = False  # the sampler ended the search before the budget

    @property
    def finished(self) -> int:
        """Trials that used up their share of the budget (completed, failed or pruned)."""
        return sum(self.states.get(k, 0) for k in records.DONE_STATES)

    @property
    def complete(self) -> bool:
        return self.sampler_stopped or self.finished >= self.budget


class _TuneStopWatch(logging.Filter):
    """Notes Ray Tune's "stop signal received" (a SIGINT it caught) and hides its advice to
    resume with ``Tuner.restore(...)``: ours (``crdiff search ... --resume``) is printed."""

    def __init__(self) -> None:
        super().__init__()
        self.interrupted = False

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "Stop signal received" in message:
            self.interrupted = True
            return False
        return "Tuner.restore(" not in message and "Resume experiment with" not in message


class _UnreportedTrials(logging.Filter):
    """Hides Ray's warning, on resume, that trials which never reported have no metrics
    (``FileNotFoundError`` per trial): those trials simply run again, as the resume says."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Failed to fetch metrics for" not in record.getMessage()


def _ray_env(concurrency: int) -> None:
    # Without this the controller keeps one pending trial for a custom searcher, so trials
    # would run one at a time whatever the concurrency.
    os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(max(1, concurrency))
    # Save the experiment state after every controller step: a driver killed mid-search then
    # resumes from the trials it had actually finished, not from a snapshot minutes old.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # The progress lines are ours; Ray's status tables would interleave with them.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def _completed_rows(table_path: Path, groups) -> dict[str, dict]:
    """Trials already finished in an earlier run of the driver, keyed by trial id."""
    if not table_path.is_file():
        return {}

    return records.completed_trials(StudyFolder(table_path.parent).read_table(), groups)


def _study_id(out: Path, config: ExperimentConfig, resume: bool) -> str:
    folder = StudyFolder(out)
    if resume:
        return folder.read_study()["study_id"]  # checked by check_resumable
    study_id = f"{config.study}-{uuid.uuid4().hex[:8]}"
    out.mkdir(parents=True, exist_ok=True)
    record = {"study_id": study_id, "study": config.study, "folder": str(out)}
    folder.study_file.write_text(json.dumps(record) + "\n")
    folder.config.write_text(config.to_toml())
    return study_id


def _completed(table_path: Path, groups, config, tracker, tracking) -> dict[str, dict]:
    """What a resumed study replays: the trials its table records as complete, and those
    whose result reached MLflow (a FINISHED child run) but not the table before the driver
    stopped."""
    done = _completed_rows(table_path, groups)
    if tracker is None:
        return done
    try:
        stored = tracker.finished_trial_results(tracking.parent_run_id)
    except Exception:  # MLflow down: the table alone
        return done
    n_chunks = len(config.chunks())
    for trial_id, data in stored.items():
        if trial_id in done:
            continue
        try:
            ratios = {g: float(data["params"][records.ratio_column(g)]) for g in groups}
        except (KeyError, ValueError):
            continue
        metrics = {k: float(v) for k, v in data["metrics"].items() if records.is_number(v)}
        if "score" not in metrics:
            continue
        metrics.update({records.ratio_column(g): r for g, r in ratios.items()})
        metrics["chunk"] = n_chunks
        if "n_images" in metrics:
            metrics["n_images"] = int(metrics["n_images"])
        done[trial_id] = {"ratios": ratios, "metrics": metrics}
    return done


def rebuild_table(folder: StudyFolder, config: ExperimentConfig) -> int:
    """Write ``trials.parquet`` again from Ray Tune's own results (each trial folder's
    ``result.json``: the last result a trial reported); returns the completed trials found."""
    import pandas as pd

    n_chunks = len(config.chunks())
    rows, groups = [], None
    for trial_dir in sorted(p for p in folder.results(config.study).iterdir() if p.is_dir()):
        path = trial_dir / "result.json"
        lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
        try:
            last = json.loads(next(ln for ln in reversed(lines) if ln.strip()))
        except (StopIteration, json.JSONDecodeError):
            continue
        if last.get("chunk") != n_chunks or not records.is_number(last.get("score")):
            continue  # not finished: Tune runs it again
        found = [k[len(records.RATIO_PREFIX) :] for k in last if k.startswith(records.RATIO_PREFIX)]
        groups = groups or found
        # The trial counter: in the experiment tag when the result has it, else in Tune's
        # folder name: trial-<index>_<id> (named by index), or, from older studies,
        # <trainable>_<id>_<tag>_<date> where the tag follows the trial id.
        trial_id = str(last.get("trial_id", trial_dir.name))
        index = records.index_from_name(trial_dir.name.split("_", 1)[0])
        if last.get("experiment_tag") or index < 0:
            tag = last.get("experiment_tag") or trial_dir.name.partition(f"_{trial_id}_")[2]
            index = records.index_from_tag(tag)
        row = {k: last.get(k) for k in records.result_columns()}
        row.update({records.ratio_column(g): last.get(records.ratio_column(g)) for g in groups})
        row.update(
            trial_id=trial_id,
            trial_index=index,
            state="COMPLETE",
            error="",
            sampler=config.search.sampler,
            seed=config.search.seed,
            attempts=1,
        )
        for key in ("started_at", "finished_at"):
            if records.is_number(last.get(key)):
                row[key] = pd.Timestamp(last[key], unit="s", tz="UTC")
        rows.append(row)
    frame = records.to_frame(rows, groups or [])
    folder.table.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(folder.table, index=False)
    return len(rows)


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: data}


# Fields a resumed study may change: where its outputs go (a relative --out) and where it is
# tracked (--no-tracking, a moved server), not what it searches.
_RESUME_FREE = ("output", "tracking.enabled", "tracking.uri")


def check_resumable(out: Path, config: ExperimentConfig | None = None) -> ExperimentConfig:
    """Everything ``--resume`` needs from the study folder, checked before Ray starts; returns
    the experiment the study started with. ``config`` (what the user asked for) must match it
    field by field. A folder moved or copied since it was made is refused: Ray's saved state
    points at the original folder and would write there."""
    folder = StudyFolder(out)
    if not folder.config.is_file():
        raise UsageError(
            f"--resume: no study to resume in {str(out)!r} (no {CONFIG_FILE}; start it without "
            "--resume)"
        )
    before = folder.read_config()
    if not folder.results(before.study).is_dir():
        raise UsageError(
            f"--resume: {str(out)!r} holds no Ray state ({RESULTS_FOLDER}/{before.study}): the "
            "study never started its trials; start it again without --resume"
        )
    if not folder.study_file.is_file():
        raise UsageError(
            f"--resume: {folder.study_file} is missing: it holds the study id that ties the "
            "study to its MLflow runs; restore it from a backup, or start a new study (--out "
            "elsewhere)"
        )
    made_in = folder.read_study().get("folder")
    if made_in and Path(made_in) != out:
        raise UsageError(
            f"--resume: {str(out)!r} is a moved or copied study (it was made in {made_in!r}); "
            "Ray's saved state points at the original, so resuming here would write there. "
            f"Resume it in {made_in!r}, or start a new study here"
        )
    if folder.table.is_file():
        folder.read_table(columns=["trial_id", "state"])  # damaged: one clear error now
    elif any(p.is_dir() for p in folder.results(before.study).iterdir()):
        n = rebuild_table(folder, before)
        print(
            f"note: {folder.table} was missing; rebuilt it from Ray's results in "
            f"{folder.results(before.study)} ({n} completed trials; unfinished ones run again)",
            file=sys.stderr,
        )
    if config is not None:
        old, new = _flat(before.to_dict()), _flat(config.to_dict())
        changed = [
            f"{k} ({old.get(k)!r} -> {new.get(k)!r})"
            for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k) and k not in _RESUME_FREE
        ]
        if changed:
            raise UsageError(
                f"--resume: the experiment differs from the one the study started with in "
                f"{'; '.join(changed)}. Resume with the same settings (or just `crdiff search "
                f"--out {out} --resume`, which reads them from {folder.config})"
            )
    return before


def _search_alg(config: ExperimentConfig, groups, out: Path, warm: dict | None = None):
    import optuna
    from optuna.distributions import FloatDistribution

    from crdiff_search.runner.searcher import StoppingOptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # The dense point (all ratios 0) may lie below the search range on purpose.
    warnings.filterwarnings("ignore", message="Fixed parameter .* is out of range")
    space = {g: FloatDistribution(*config.ratios.bounds(g)) for g in groups}
    warm_points = list(warm["points"]) if warm else []
    return StoppingOptunaSearch(
        space,
        metric="score",
        mode=config.objective.mode,
        sampler=build_sampler(config, start=warm_points[0] if warm_points else None),
        # trial 0: the dense model; then the warm start's points, if any
        points_to_evaluate=[dict.fromkeys(groups, 0.0), *warm_points],
        stop_file=StudyFolder(out).stop_file,
    )


def _optuna_mirror(out: Path, config: ExperimentConfig, groups):
    from crdiff_search.runner.optuna_mirror import OptunaMirror

    return OptunaMirror(
        StudyFolder(out).optuna_db,
        config.study,
        groups=groups,
        bounds={g: config.ratios.bounds(g) for g in groups},
        mode=config.objective.mode,
    )


def _counts_iterations(config: ExperimentConfig) -> bool:
    """Whether the study's sampler reads ``search.trials`` as its iteration budget (the
    reference annealing: ``anneal-paper``)."""
    from crdiff_search.samplers import SAMPLERS

    return SAMPLERS.metadata(config.search.sampler).get("budget") == "iterations"


def build_sampler(config: ExperimentConfig, *, start: dict | None = None):
    """The study's Optuna sampler; a bad option value is a usage error naming the option.
    ``start`` (a warm start's first point) becomes an annealing chain's start point unless
    the experiment sets one."""
    from crdiff_search.samplers import create_sampler, sampler_options

    options = dict(config.search.sampler_options)
    if start is not None and "start" in sampler_options(config.search.sampler):
        from crdiff_search.samplers import StartAt

        options.setdefault("start", StartAt(dict(start)))
    if _counts_iterations(config):
        options.setdefault("max_iterations", config.search.trials)
    try:
        return create_sampler(config.search.sampler, seed=config.search.seed, **options)
    except UsageError as exc:
        raise UsageError(f"search.sampler_options: {exc}") from None
    except TypeError as exc:
        raise UsageError(f"search.sampler_options for {config.search.sampler!r}: {exc}") from None


def study_budget(config: ExperimentConfig) -> int:
    """The most trials the study runs: ``search.trials``; for a sampler that counts iterations
    (``anneal-paper``), the dense trial 0 plus the most evaluations its chain can ask for (the
    start, ``search.trials`` iterations and one per restart)."""
    if _counts_iterations(config):
        most = getattr(build_sampler(config), "max_evaluations", None)
        if most is not None:
            return 1 + int(most)
    return config.search.trials


def study_complete(out: str | Path, config: ExperimentConfig) -> bool:
    """Whether the study in ``out`` has nothing left to run: its budget is used up, or its
    sampler ended the search (``sampler_stopped.json``)."""
    folder = StudyFolder(out)
    if folder.stop_file.is_file():
        return True
    if not folder.table.is_file():
        return False
    states = folder.read_table(columns=["state"])["state"]
    return int(states.isin(list(records.DONE_STATES)).sum()) >= study_budget(config)


def _scheduler(config: ExperimentConfig):
    n_chunks = len(config.chunks())
    if not config.search.early_stopping or n_chunks < 2:
        return None
    from crdiff_search.runner.trainable import BaselineASHA

    return BaselineASHA(
        time_attr="training_iteration",
        metric="score",
        mode=config.objective.mode,
        max_t=n_chunks,
        grace_period=1,
        reduction_factor=2,
    )


def _warn_early_stopping_with_annealing(config: ExperimentConfig, sampler) -> None:
    """Early stopping feeds a chain the scores of stopped trials (their first prompt chunks)."""
    from crdiff_search.samplers import SimulatedAnnealingSampler

    if config.search.early_stopping and isinstance(sampler, SimulatedAnnealingSampler):
        print(
            f"warning: search.early_stopping with sampler {config.search.sampler!r}: a stopped "
            "trial's score comes from its first prompt chunks only, and the annealing chain "
            "accepts or rejects moves on it. Measured on the testbed at 24x24 (8 seeds, 40 "
            "trials): the picks gained +0.007 held out, against +0.052 without early stopping. "
            "Early stopping pays with sampler 'tpe' (38 % of the images saved at no held-out "
            "loss); otherwise set search.early_stopping = false.",
            file=sys.stderr,
        )


def prepare(config: ExperimentConfig) -> tuple[tuple[str, ...], dict[str, Any]]:
    """Every check that can fail on user input, before Ray starts: returns the groups and a
    summary of the study (what ``--dry-run`` prints)."""
    if config.tracking.enabled:
        from crdiff_search.tracking import check_tracking_uri

        check_tracking_uri(config.tracking.uri)  # seconds, not minutes, for a dead server
    info = check_model(config)
    if info is None:
        raise UsageError(
            f"model.source {config.model.source!r}: its config files are not on this machine "
            "(not a local folder, not in the Hugging Face cache); the search space needs its "
            "partition. Download the model (or just its */config.json files) first."
        )
    groups = group_names(config, info)
    if not groups:
        raise UsageError(
            f"the {config.partition.granularity!r} partition of the model has no groups"
        )
    check_class_labels(config, info)  # a DiT's prompts are its class names
    sampler = build_sampler(config)  # its option values, checked before Ray starts
    from crdiff_search.objectives import check_options
    from crdiff_search.runner.spec import objective_terms

    for term in objective_terms(config.objective):  # each scorer's options, by its signature
        check_options(term.name, term.options)
    _warn_early_stopping_with_annealing(config, sampler)
    prompts = config.prompt_list()
    summary = {
        "study": config.study,
        "model": config.model.source,
        "resolution": config.resolution,
        "spatial_factor": info.spatial_factor,
        "groups": {g: list(config.ratios.bounds(g)) for g in groups},
        "prompts": len(prompts),
        "chunks": len(config.chunks()),
        "objective": dict(zip(config.objective.names, config.objective.weights, strict=True)),
        "sampler": config.search.sampler,
        "trials": config.search.trials,
        "max_trials": study_budget(config),
        "concurrency": config.search.concurrency,
        "early_stopping": config.search.early_stopping,
        "output": str(config.output_dir),
    }
    if config.rerank.after_search:
        r = config.rerank
        summary["rerank"] = {
            "top_k": r.top_k,
            "weights": list(r.weights),
            "prompts": r.prompts,
            "seed": r.seed,
            "file": r.file or None,
        }
    return groups, summary


def run_study(
    config: ExperimentConfig,
    *,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    address: str | None = None,
    progress: bool = True,
    start_points: list[dict] | None = None,
) -> StudyResult:
    """Run (or resume) a study and return its summary.

    ``start_points`` (``[{group: ratio}, ...]``, e.g. a registry recipe to refine) are run
    right after the dense trial, as a registry warm start's points are (and saved with them).

    Trials run on Ray Tune with Optuna's ask/tell driving the configured sampler; trial 0 is
    the dense model. ``DIR/trials.parquet`` is kept current while trials finish; Ray's own
    results are under ``DIR/ray/<study>``. ``resume=True`` continues a study whose driver
    stopped (even killed): exactly ``search.trials`` trials in the end, none run twice.

    >>> result = run_study(load_experiment(None, trials=8), out_dir="runs/testbed")
    >>> result.best_ratios, result.best_score - result.dense_score
    """
    out = Path(out_dir or config.output_dir).resolve()
    exp_path = out / RESULTS_FOLDER / config.study
    table_path = out / TABLE_FILE
    if resume:
        check_resumable(out, config)
    elif exp_path.exists():
        raise UsageError(
            f"{str(out)!r} already holds study {config.study!r}: pass --resume to continue it or "
            "--out for a new folder"
        )
    from crdiff_search.progress import Reporter

    say = Reporter(f"{config.study} {config.resolution}", mode=progress)
    say.phase("checking the model, the partition and the prompts")
    groups, _ = prepare(config)
    warm = None
    if not resume and (start_points or config.search.warm_start != "none"):
        from crdiff_search.warm_start import given_points, plan_warm_start, save_warm_start

        if start_points:
            warm = given_points(config, groups, start_points)
        else:
            say.phase("reading the warm start's recipes from the registry")
            warm = plan_warm_start(config, groups)
        save_warm_start(out, warm)
    study_id = _study_id(out, config, resume)

    import ray
    from ray import tune

    from crdiff_search.runner.session import start_ray
    from crdiff_search.runner.table import TrialTable
    from crdiff_search.runner.trainable import PruningTrainable

    tracking = None
    tracker = None
    if config.tracking.enabled:
        from crdiff_search.tracking import StudyTracker, resolve_tracking_uri

        uri = resolve_tracking_uri(config.tracking.uri)
        say.phase(f"opening the MLflow study run at {uri}")
        tracker = StudyTracker(uri, config.tracking_experiment)
        parent = tracker.start_study(
            study_id,
            params=_flat_params(config),
            tags={
                "crdiff.study": config.study,
                "crdiff.resolution": config.resolution,
                "crdiff.model": config.model.source,
                "crdiff.sampler": config.search.sampler,
            },
            config_text=config.to_toml(),
        )
        tracking = TrackingTarget(uri, config.tracking_experiment, parent)

    _ray_env(config.search.concurrency)
    need = math.ceil(config.search.concurrency * config.resources.cpu)
    if not ray.is_initialized():
        say.phase(f"starting Ray ({address or 'local'})")
    started_ray = start_ray(address, num_cpus=max(os.cpu_count() or 1, need))

    spec = WorkerSpec.from_config(
        config,
        groups=tuple(groups),
        tracking=tracking,
        completed=_completed(table_path, groups, config, tracker, tracking) if resume else {},
    )
    resources = {"cpu": config.resources.cpu, "gpu": config.resources.gpu}
    trainable = tune.with_resources(tune.with_parameters(PruningTrainable, spec=spec), resources)
    status = "FAILED"
    interrupted = False
    table = None
    try:
        if resume:
            analysis_log = logging.getLogger("ray.tune.analysis.experiment_analysis")
            quiet = _UnreportedTrials()
            analysis_log.addFilter(quiet)
            try:
                tuner = tune.Tuner.restore(
                    str(exp_path),
                    trainable,
                    resume_unfinished=True,
                    resume_errored=False,
                    restart_errored=False,
                )
            finally:
                analysis_log.removeFilter(quiet)
        else:
            table = TrialTable(
                table_path,
                groups=groups,
                sampler=config.search.sampler,
                seed=config.search.seed,
                n_chunks=len(config.chunks()),
                budget=study_budget(config),
                mode=config.objective.mode,
                progress=progress,
                tracking=tracking,
                mirror=_optuna_mirror(out, config, groups),
                title=f"{config.study} {config.resolution} {config.search.sampler}",
            )
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=_search_alg(config, groups, out, warm),
                    scheduler=_scheduler(config),
                    num_samples=study_budget(config),
                    max_concurrent_trials=config.search.concurrency,
                    reuse_actors=True,
                    trial_name_creator=records.tune_trial_name,
                    trial_dirname_creator=records.tune_trial_dirname,
                ),
                run_config=tune.RunConfig(
                    name=config.study,
                    storage_path=str(out / RESULTS_FOLDER),
                    failure_config=tune.FailureConfig(max_failures=config.search.retries),
                    callbacks=[table],
                    verbose=0,
                ),
            )
        watch = _TuneStopWatch()
        tune_log = logging.getLogger("ray.tune.tune")
        tune_log.addFilter(watch)
        try:
            tuner.fit()
        finally:
            tune_log.removeFilter(watch)
            interrupted = watch.interrupted
        status = "FINISHED"
    except KeyboardInterrupt:
        interrupted = True  # a second Ctrl-C: Tune's handler was gone
        raise
    finally:
        if table is not None:
            table.close()  # the live display, when Tune stopped before its end hook
        if started_ray:
            ray.shutdown()
        if table_path.is_file():  # trials the live mirror missed (a killed driver, a resume)
            try:
                rows = StudyFolder(out).read_table().to_dict("records")
            except UsageError:
                rows = []
            _optuna_mirror(out, config, groups).record(rows)
        result = summarize(table_path, out, config, groups, tracking)
        result = dataclasses.replace(result, interrupted=interrupted)
        if status == "FINISHED" and not result.complete:
            status = "KILLED"  # interrupted: --resume continues it
        if tracker is not None:
            _reconcile_tracking(tracker, tracking.parent_run_id, table_path, groups)
            _finish_tracking(tracker, tracking.parent_run_id, result, status, table_path)
    return result


def _reconcile_tracking(tracker, parent: str, table_path: Path, groups) -> int:
    """Write the child run of every completed trial whose worker-side MLflow write did not
    land (the worker was killed with writes still queued); returns how many were written.

    Runs from the trial table, after the workers are gone, so nothing races it; ``log_trial``
    updates a half-written run in place rather than adding a second one.
    """
    if not table_path.is_file():
        return 0
    import pandas as pd

    try:
        statuses = tracker.trial_statuses(parent)
        frame = pd.read_parquet(table_path)
        written = 0
        for row in frame[frame["state"] == "COMPLETE"].to_dict("records"):
            trial_id = str(row["trial_id"])
            if statuses.get(trial_id) == "FINISHED":
                continue
            index = row.get("trial_index")
            tracker.log_trial(
                parent,
                trial_id,
                params={
                    records.ratio_column(g): r for g, r in records.ratios_of(row, groups).items()
                },
                metrics=records.mlflow_metrics(row),
                timings=records.mlflow_timings(row),
                state="COMPLETE",
                tags={"crdiff.logged_by": "driver"},
                index=int(index) if records.is_number(index) else None,
            )
            written += 1
        return written
    except Exception as exc:
        import sys

        print(
            f"warning: MLflow: could not check the trials' runs ({exc}); the trial table "
            f"keeps every result: when the tracking server is back, `crdiff search --out "
            f"{table_path.parent} --resume` writes the missing runs",
            file=sys.stderr,
        )
        return 0


def summarize(
    table_path: Path, out: Path, config: ExperimentConfig, groups, tracking
) -> StudyResult:
    import pandas as pd

    frame = (
        pd.read_parquet(table_path)
        if table_path.is_file()
        else pd.DataFrame(columns=["trial_id", "trial_index", "state", "score"])
    )
    states = {str(k): int(v) for k, v in frame["state"].value_counts().items()}
    done = frame[(frame["state"] == "COMPLETE") & frame["score"].notna()]
    dense = done[done["trial_index"] == 0]
    dense_score = float(dense["score"].iloc[0]) if len(dense) else float("nan")
    best = records.best_completed(frame, config.objective.mode) if len(frame) else None
    if best is not None:
        best_ratios = records.ratios_of(best, groups)
        best_score, best_id = float(best["score"]), str(best["trial_id"])
    else:
        best_ratios, best_score, best_id = {}, float("nan"), ""
    return StudyResult(
        table_path=table_path,
        results_dir=out / RESULTS_FOLDER / config.study,
        best_ratios=best_ratios,
        best_score=best_score,
        dense_score=dense_score,
        best_trial_id=best_id,
        parent_run_id=tracking.parent_run_id if tracking else None,
        n_trials=len(frame),
        states=states,
        budget=study_budget(config),
        sampler_stopped=StudyFolder(out).stop_file.is_file(),
    )


def _finish_tracking(
    tracker, parent: str, result: StudyResult, status: str, table_path: Path | None = None
) -> None:
    try:
        if table_path is not None and table_path.is_file():
            tracker.log_file(parent, table_path)
        if result.best_trial_id:
            tracker.log_best(parent, result.best_trial_id, result.best_score, result.best_ratios)
        metrics = {
            "n_trials": result.n_trials,
            **{f"n_{k.lower()}": v for k, v in result.states.items()},
        }
        if math.isfinite(result.best_score):
            metrics["best_score"] = result.best_score
        if math.isfinite(result.dense_score):
            metrics["dense_score"] = result.dense_score
        tracker.log_study_metrics(parent, metrics)
        tracker.finish_study(parent, status)
    except Exception as exc:
        import sys

        print(
            f"warning: MLflow: could not close the study run ({exc}); `crdiff search --out "
            f"{result.table_path.parent} --resume` closes it when the server is back",
            file=sys.stderr,
        )


def _flat_params(config: ExperimentConfig) -> dict[str, Any]:
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif not isinstance(value, dict):
            flat[prefix] = json.dumps(value) if isinstance(value, list) else value

    walk("", config.to_dict())
    return flat
