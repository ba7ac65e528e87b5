"""The trial record: one schema for a study's ``trials.parquet``, the workers' results, the
MLflow child runs and resume.

A row has the trial's identity (``trial_id``, ``trial_index``, ``state``), its ratios
(``ratio.<group>``), its metrics, its timings and where it ran. Every stage that reads or writes
trials goes through the names and helpers here, so a column is defined once:

>>> from crdiff_search.records import best_completed
>>> best = best_completed(pd.read_parquet("runs/testbed/trials.parquet"), mode="max")
>>> best["trial_index"], ratios_of(best, groups_of(frame))
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

RATIO_PREFIX = "ratio."
# Per-trial values logged as MLflow metrics (plus the ``score.<objective>`` and
# ``sparsity.<group>`` breakdowns, which the workers report but the table does not keep).
METRICS = ("score", "score_delta", "sparsity", "n_images", "n_failed_images")
METRIC_PREFIXES = ("score.", "sparsity.")
# Seconds spent per phase; ``t_load`` is the worker's one-time load, ``t_total`` the trial's
# wall time without it.
PHASE_TIMINGS = ("t_prune", "t_generate", "t_score", "t_restore")
TIMINGS = (*PHASE_TIMINGS, "t_load", "t_total")
WORKER = ("chunk", "worker_pid", "worker_loads")
STATES = ("COMPLETE", "FAILED", "PRUNED", "RUNNING")
# States that used up one trial of the budget (RUNNING rows are trials a driver did not finish).
DONE_STATES = ("COMPLETE", "FAILED", "PRUNED")

_FLOATS = ("score", "score_delta", "sparsity", *TIMINGS)
_INTS = ("trial_index", "seed", "attempts")
_NULLABLE_INTS = ("n_images", "n_failed_images", *WORKER)
_TEXT = ("trial_id", "state", "error", "sampler")
_TIMES = ("started_at", "finished_at")
# What a completed trial reports that is not a number of the record (identity, bookkeeping).
_NOT_METRICS = ("trial_id", "trial_index", "state", "error", "sampler", "seed", "attempts")


def ratio_column(group: str) -> str:
    return f"{RATIO_PREFIX}{group}"


def table_columns(groups: Sequence[str]) -> list[str]:
    """The columns of ``trials.parquet`` for a study over ``groups``, in order."""
    return [
        "trial_id",
        "trial_index",
        "state",
        *[ratio_column(g) for g in groups],
        "score",
        "score_delta",
        "sparsity",
        "n_images",
        "t_prune",
        "t_generate",
        "t_score",
        "t_total",
        "error",
        "sampler",
        "seed",
        "started_at",
        "finished_at",
        "t_restore",
        "t_load",
        *WORKER,
        "attempts",
        "n_failed_images",
    ]


def result_columns() -> tuple[str, ...]:
    """The columns a worker's result fills in (everything but identity and bookkeeping)."""
    return (*METRICS, *TIMINGS, *WORKER)


def trial_run_name(index: int) -> str:
    """The name a trial has in the terminal, Tune and MLflow: ``trial-0003`` (0-based index)."""
    return f"trial-{int(index):04d}"


def index_from_name(name: Any) -> int:
    """The index in a :func:`trial_run_name` (-1 for any other name)."""
    head, _, digits = str(name or "").partition("-")
    return int(digits) if head == "trial" and digits.isdigit() else -1


def tune_trial_name(trial) -> str:
    """Tune's ``trial_name_creator``: trials are named by their index, as everywhere else."""
    index = index_from_tag(getattr(trial, "experiment_tag", ""))
    return trial_run_name(index) if index >= 0 else f"trial-{trial.trial_id}"


def tune_trial_dirname(trial) -> str:
    """Tune's ``trial_dirname_creator``: ``trial-0003_<Ray trial id>``, findable by either."""
    return f"{tune_trial_name(trial)}_{trial.trial_id}"


def index_from_tag(tag: Any) -> int:
    """0-based creation order from Tune's experiment tag (``"3_down=0.1,..."``: the 1-based
    counter comes first); -1 when there is none."""
    head = str(tag or "").split("_", 1)[0]
    return int(head) - 1 if head.isdigit() else -1


def groups_of(frame) -> tuple[str, ...]:
    """The ratio groups of a trial table, in column order."""
    return tuple(c[len(RATIO_PREFIX) :] for c in frame.columns if c.startswith(RATIO_PREFIX))


def ratios_of(row: Mapping[str, Any], groups: Iterable[str]) -> dict[str, float]:
    """``{group: ratio}`` of a record (a missing or empty ratio is 0, the dense value)."""
    out = {}
    for g in groups:
        value = row.get(ratio_column(g))
        out[g] = 0.0 if value is None or _is_nan(value) else float(value)
    return out


def is_dense(ratios: Mapping[str, float]) -> bool:
    return all(float(r) == 0.0 for r in ratios.values())


def to_frame(rows: Iterable[Mapping[str, Any]], groups: Sequence[str]):
    """A typed ``trials.parquet`` frame from records, sorted by trial index."""
    import pandas as pd

    cols = table_columns(groups)
    frame = pd.DataFrame([{c: r.get(c) for c in cols} for r in rows], columns=cols)
    frame = frame.sort_values("trial_index", kind="stable").reset_index(drop=True)
    for c in _TIMES:
        frame[c] = pd.to_datetime(frame[c], utc=True)
    for c in (*_FLOATS, *[ratio_column(g) for g in groups]):
        frame[c] = pd.to_numeric(frame[c], errors="coerce").astype("float64")
    for c in _INTS:
        frame[c] = frame[c].astype("int64")
    for c in _NULLABLE_INTS:
        frame[c] = pd.to_numeric(frame[c], errors="coerce").astype("Int64")
    for c in _TEXT:
        frame[c] = frame[c].fillna("").astype(str)
    return frame


def mlflow_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """The metrics of a trial's MLflow child run (finite numbers only)."""
    return {
        k: float(v)
        for k, v in record.items()
        if (k in METRICS or k.startswith(METRIC_PREFIXES)) and is_number(v)
    }


def mlflow_timings(record: Mapping[str, Any]) -> dict[str, float]:
    """The trial's timings, keyed without the ``t_`` prefix (``generate``, ``total``, ...)."""
    return {k[2:]: float(record[k]) for k in TIMINGS if is_number(record.get(k))}


def completed_trials(frame, groups: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The trials a study already finished, keyed by trial id: ``{"ratios", "metrics"}``,
    with the metrics as the worker reported them (what a resumed study replays)."""
    import pandas as pd

    out = {}
    for row in frame[frame["state"] == "COMPLETE"].to_dict("records"):
        metrics = {k: v for k, v in row.items() if k not in _NOT_METRICS and is_number(v)}
        for key in _TIMES:
            if row.get(key) is not None and not pd.isna(row[key]):
                metrics[key] = pd.Timestamp(row[key]).timestamp()
        for key in _NULLABLE_INTS:
            if key in metrics:
                metrics[key] = int(metrics[key])
        out[str(row["trial_id"])] = {"ratios": ratios_of(row, groups), "metrics": metrics}
    return out


def ranked_completed(frame, mode: str, *, order: str = "trial_index", pruned_only: bool = False):
    """Completed trials with a score, best first (ties: the earlier trial by ``order``);
    ``pruned_only`` drops the dense trial (every ratio 0)."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    done = frame[(frame["state"].astype(str).str.upper() == "COMPLETE") & frame["score"].notna()]
    if pruned_only:
        cols = [c for c in frame.columns if c.startswith(RATIO_PREFIX)]
        done = done[(done[cols].fillna(0.0) > 0).any(axis=1)]
    keys = ["score", order] if order in done.columns else ["score"]
    return done.sort_values(keys, ascending=[mode == "min", True][: len(keys)], kind="stable")


def best_completed(
    frame, mode: str, *, order: str = "trial_index", pruned_only: bool = False
) -> dict[str, Any] | None:
    """The best completed trial of a table, as a record, or ``None`` when none completed."""
    ranked = ranked_completed(frame, mode, order=order, pruned_only=pruned_only)
    return None if ranked.empty else ranked.iloc[0].to_dict()


def is_number(v: Any) -> bool:
    """A finite int or float (not a bool, not NaN)."""
    return not isinstance(v, bool) and isinstance(v, numbers.Real) and math.isfinite(v)


def _is_nan(v: Any) -> bool:
    try:
        return math.isnan(float(v))
    except (TypeError, ValueError):
        return False
