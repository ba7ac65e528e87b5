"""Running one study on Ray Tune: the tuner, its searcher, resume, and the final summary."""

from __future__ import annotations

import json
import math
import os
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crdiff_search import records
from crdiff_search.config import ExperimentConfig
from crdiff_search.errors import UsageError
from crdiff_search.model_info import check_model, group_names
from crdiff_search.runner.spec import TrackingTarget, WorkerSpec
from crdiff_search.study_folder import CONFIG_FILE, RESULTS_FOLDER, STUDY_FILE, TABLE_FILE


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
    import pandas as pd

    return records.completed_trials(pd.read_parquet(table_path), groups)


def _study_id(out: Path, config: ExperimentConfig, resume: bool) -> str:
    path = out / STUDY_FILE
    if resume and path.is_file():
        return json.loads(path.read_text())["study_id"]
    study_id = f"{config.study}-{uuid.uuid4().hex[:8]}"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"study_id": study_id, "study": config.study}) + "\n")
    (out / CONFIG_FILE).write_text(config.to_toml())
    return study_id


def _search_alg(config: ExperimentConfig, groups):
    import optuna
    from optuna.distributions import FloatDistribution
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # The dense point (all ratios 0) may lie below the search range on purpose.
    warnings.filterwarnings("ignore", message="Fixed parameter .* is out of range")
    space = {g: FloatDistribution(*config.ratios.bounds(g)) for g in groups}
    return OptunaSearch(
        space,
        metric="score",
        mode=config.objective.mode,
        sampler=build_sampler(config),
        points_to_evaluate=[dict.fromkeys(groups, 0.0)],  # trial 0: the dense model
    )


def build_sampler(config: ExperimentConfig):
    """The study's Optuna sampler; a bad option value is a usage error naming the option."""
    from crdiff_search.samplers import create_sampler

    try:
        return create_sampler(
            config.search.sampler, seed=config.search.seed, **dict(config.search.sampler_options)
        )
    except UsageError as exc:
        raise UsageError(f"search.sampler_options: {exc}") from None
    except TypeError as exc:
        raise UsageError(f"search.sampler_options for {config.search.sampler!r}: {exc}") from None


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


def prepare(config: ExperimentConfig) -> tuple[tuple[str, ...], dict[str, Any]]:
    """Every check that can fail on user input, before Ray starts: returns the groups and a
    summary of the study (what ``--dry-run`` prints)."""
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
    build_sampler(config)  # its option values, checked before Ray starts
    if config.tracking.enabled:
        from crdiff_search.tracking import check_tracking_uri

        check_tracking_uri(config.tracking.uri)  # seconds, not minutes, for a dead server
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
) -> StudyResult:
    """Run (or resume) a study and return its summary.

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
        stored = out / CONFIG_FILE
        if not stored.is_file() or not exp_path.is_dir():
            raise UsageError(
                f"--resume: no study to resume in {str(out)!r} (start it without --resume)"
            )
        before = ExperimentConfig.from_toml(stored.read_text())
        if before.to_dict() != config.to_dict():
            changed = [k for k, v in config.to_dict().items() if before.to_dict().get(k) != v]
            raise UsageError(
                f"--resume: the experiment differs from the one the study started with in "
                f"{', '.join(changed)}; resume with the same settings ({stored})"
            )
    elif exp_path.exists():
        raise UsageError(
            f"{str(out)!r} already holds study {config.study!r}: pass --resume to continue it or "
            "--out for a new folder"
        )
    groups, _ = prepare(config)
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
    started_ray = start_ray(address, num_cpus=max(os.cpu_count() or 1, need))

    spec = WorkerSpec.from_config(
        config,
        groups=tuple(groups),
        tracking=tracking,
        completed=_completed_rows(table_path, groups) if resume else {},
    )
    resources = {"cpu": config.resources.cpu, "gpu": config.resources.gpu}
    trainable = tune.with_resources(tune.with_parameters(PruningTrainable, spec=spec), resources)
    status = "FAILED"
    try:
        if resume:
            tuner = tune.Tuner.restore(
                str(exp_path),
                trainable,
                resume_unfinished=True,
                resume_errored=False,
                restart_errored=False,
            )
        else:
            table = TrialTable(
                table_path,
                groups=groups,
                sampler=config.search.sampler,
                seed=config.search.seed,
                n_chunks=len(config.chunks()),
                budget=config.search.trials,
                mode=config.objective.mode,
                progress=progress,
                tracking=tracking,
            )
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=_search_alg(config, groups),
                    scheduler=_scheduler(config),
                    num_samples=config.search.trials,
                    max_concurrent_trials=config.search.concurrency,
                    reuse_actors=True,
                ),
                run_config=tune.RunConfig(
                    name=config.study,
                    storage_path=str(out / RESULTS_FOLDER),
                    failure_config=tune.FailureConfig(max_failures=config.search.retries),
                    callbacks=[table],
                    verbose=0,
                ),
            )
        tuner.fit()
        status = "FINISHED"
    finally:
        if started_ray:
            ray.shutdown()
        result = summarize(table_path, out, config, groups, tracking)
        finished = sum(result.states.get(k, 0) for k in ("COMPLETE", "FAILED", "PRUNED"))
        if status == "FINISHED" and finished < config.search.trials:
            status = "KILLED"  # interrupted: --resume continues it
        if tracker is not None:
            _reconcile_tracking(tracker, tracking.parent_run_id, table_path, groups)
            _finish_tracking(tracker, tracking.parent_run_id, result, status)
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
            )
            written += 1
        return written
    except Exception as exc:
        import sys

        print(f"warning: MLflow: could not check the trials' runs: {exc}", file=sys.stderr)
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
    )


def _finish_tracking(tracker, parent: str, result: StudyResult, status: str) -> None:
    try:
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

        print(f"warning: MLflow: could not close the study run: {exc}", file=sys.stderr)


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
