"""The driver's record of a study: ``DIR/trials.parquet`` (one row per trial, rewritten as
trials start and finish) and the study's progress display (:mod:`crdiff_search.progress`)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune

from crdiff_search import records
from crdiff_search.progress import StudyProgress
from crdiff_search.records import ratio_column, table_columns
from crdiff_search.runner.spec import TrackingTarget


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    return pd.read_parquet(path)


def trial_index(trial) -> int:
    """0-based creation order (Tune's experiment tag starts with the 1-based counter)."""
    return records.index_from_tag(getattr(trial, "experiment_tag", ""))


def error_line(trial) -> str:
    """The exception line of a failed trial (``ValueError: ...``), from Tune's error file."""
    text = ""
    # The local file gets every failure appended at once; the storage copy may lag behind.
    local = getattr(trial, "error_file", None)
    if local and os.path.exists(local):
        text = Path(local).read_text(errors="replace")
    if not text:
        try:
            err = trial.get_error()
            text = str(err) if err is not None else ""
        except Exception:
            pass
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for line in reversed(lines):
        if ":" in line and not line.startswith(("File ", "^")):
            return line[:2000]
    return (lines[-1] if lines else "unknown error")[:2000]


class TrialTable(tune.Callback):
    """Keeps ``trials.parquet`` current; optionally prints progress and marks failed trials in
    MLflow (completed trials are logged by the workers themselves)."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        groups: Sequence[str],
        sampler: str,
        seed: int,
        n_chunks: int,
        budget: int,
        mode: str = "max",
        progress: bool = True,
        tracking: TrackingTarget | None = None,
        mirror=None,
        title: str = "",
    ):
        self.path = Path(path)
        self.groups = list(groups)
        self.sampler = sampler
        self.seed = seed
        self.n_chunks = n_chunks
        self.budget = budget
        self.mode = mode
        self.progress = progress
        self.title = title or sampler
        self.display: StudyProgress | None = None  # made in setup: the terminal of this run
        self.tracking = tracking
        self.mirror = mirror  # an OptunaMirror: finished trials for Optuna's tools
        self.rows: dict[str, dict[str, Any]] = {}
        self._finished: dict[str, dict[str, Any]] = {}  # replayed trials' recorded rows
        self._tracking_warned = False
        self._tracker = None

    # ---- state
    def setup(self, **info) -> None:
        self.rows = {}
        self._finished = {}
        self._tracking_warned = False
        if self.path.is_file():
            for row in read_table(self.path).to_dict("records"):
                self.rows[str(row["trial_id"])] = row
        done = [r for r in self.rows.values() if r.get("state") in records.DONE_STATES]
        self.display = StudyProgress(
            self.title,
            budget=self.budget,
            groups=self.groups,
            mode=self.progress,
            maximize=self.mode != "min",
        )
        for row in sorted(done, key=lambda r: int(r.get("trial_index") or 0)):
            self.display.finished(row, replayed=True)
        if done:
            self.display.phase(f"resuming: {len(done)} trials already finished")
        else:
            self.display.phase("starting trials (each worker loads the model; trial 0 is dense)")

    def _row(self, trial) -> dict[str, Any]:
        row = self.rows.get(trial.trial_id)
        if row is None:
            index = trial_index(trial)
            # A trial a killed driver had started but not saved in Tune's state comes back
            # under a new id with the same index: its unfinished row is that trial's.
            for old_id, old in list(self.rows.items()):
                if old.get("trial_index") == index and old.get("state") == "RUNNING":
                    del self.rows[old_id]
            row = dict.fromkeys(table_columns(self.groups))
            row.update(
                trial_id=trial.trial_id,
                trial_index=index,
                state="RUNNING",
                sampler=self.sampler,
                seed=self.seed,
                attempts=0,
                error="",
            )
            for g in self.groups:
                row[ratio_column(g)] = float(trial.config.get(g, 0.0))
            self.rows[trial.trial_id] = row
        return row

    def _fill(self, row: dict, result: Mapping[str, Any] | None) -> None:
        if not result:
            return
        for key in records.result_columns():
            if key in result:
                row[key] = result[key]
        for key in ("started_at", "finished_at"):
            if isinstance(result.get(key), int | float):
                row[key] = pd.Timestamp(result[key], unit="s", tz="UTC")

    def write(self) -> None:
        frame = records.to_frame(self.rows.values(), self.groups)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, self.path)

    # ---- Tune hooks
    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        row = self._row(trial)
        if row.get("state") == "COMPLETE":
            # Finished before the driver stopped, not in Tune's saved state: the worker replays
            # the recorded result, and the row is kept exactly as it was.
            self._finished.setdefault(trial.trial_id, dict(row))
        row["state"] = "RUNNING"
        row["attempts"] = int(row.get("attempts") or 0) + 1
        if row.get("started_at") is None or pd.isna(row.get("started_at")):
            row["started_at"] = pd.Timestamp(time.time(), unit="s", tz="UTC")
        self.write()
        if self.display is not None:
            self.display.started(row)

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        row = self._row(trial)
        row["error"] = error_line(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self._fill(self._row(trial), result)
        self._check_tracking(result)

    def _check_tracking(self, result: Mapping[str, Any]) -> None:
        """Say once, while the study runs, that MLflow writes fail (the table keeps every
        result, and a resume writes the missing runs)."""
        if not result.get("tracking_failures") or self._tracking_warned:
            return
        self._tracking_warned = True
        print(
            f"warning: MLflow writes are failing ({result.get('tracking_error', '?')}); the "
            f"study goes on and {self.path.name} keeps every result. When the tracking "
            f"server is back, `crdiff search --out {self.path.parent} --resume` writes the "
            "missing runs",
            file=sys.stderr,
            flush=True,
        )

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        row = self._row(trial)
        result = trial.last_result or {}
        if result.get("replayed") and trial.trial_id in self._finished:
            row.clear()
            row.update(self._finished.pop(trial.trial_id))
            self.write()
            return
        self._fill(row, result)
        row["state"] = "COMPLETE" if result.get("chunk") == self.n_chunks else "PRUNED"
        row["error"] = ""
        self.write()
        self._mirror(row)
        self._report(row)
        if row["state"] == "COMPLETE":
            self._track_progress(row)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        row = self._row(trial)
        self._fill(row, trial.last_result)
        row["state"] = "FAILED"
        row["error"] = error_line(trial)
        if row.get("finished_at") is None or pd.isna(row.get("finished_at")):
            row["finished_at"] = pd.Timestamp(time.time(), unit="s", tz="UTC")
        self.write()
        self._mirror(row)
        self._track_failure(trial, row)
        self._report(row)

    def _mirror(self, row: Mapping[str, Any]) -> None:
        if self.mirror is not None:
            self.mirror.record([row])

    # ---- summaries
    def best(self) -> dict[str, Any] | None:
        if not self.rows:
            return None
        return records.best_completed(pd.DataFrame(list(self.rows.values())), self.mode)

    def _report(self, row: Mapping[str, Any]) -> None:
        if self.display is not None:
            self.display.finished(row)

    def on_experiment_end(self, trials, **info) -> None:
        self.close()

    def close(self) -> None:
        if self.display is not None:
            self.display.close()
        if self._tracker is not None:
            self._tracker.flush(timeout=30)

    def _tracker_(self):
        if self._tracker is None:
            from crdiff_search.tracking import StudyTracker

            self._tracker = StudyTracker(self.tracking.uri, self.tracking.experiment)
        return self._tracker

    def _track_progress(self, row: Mapping[str, Any]) -> None:
        """The study run's charts: ``trial_score`` at step = the trial's index, and
        ``best_so_far`` at step = the number of trials completed (trials finish out of index
        order when several run at once: by completions the curve only rises). Written on the
        tracker's background thread; a failure is a warning, never a lost trial: the table is
        the record."""
        if not self.tracking or not records.is_number(row.get("score")):
            return
        index = int(row.get("trial_index") or 0)
        best = self.best()
        completed = sum(1 for r in self.rows.values() if r.get("state") == "COMPLETE")
        try:
            tracker = self._tracker_()
            parent = self.tracking.parent_run_id
            tracker.submit(
                tracker.log_study_metrics,
                parent,
                {"trial_score": float(row["score"])},
                step=max(index, 0),
            )
            if best is not None and records.is_number(best.get("score")):
                tracker.submit(
                    tracker.log_study_metrics,
                    parent,
                    {"best_so_far": float(best["score"])},
                    step=completed,
                )
        except Exception as exc:
            print(f"warning: MLflow step metrics of trial {index}: {exc}", file=sys.stderr)

    def _track_failure(self, trial, row: Mapping[str, Any]) -> None:
        if not self.tracking:
            return
        try:
            self._tracker_().log_trial(
                self.tracking.parent_run_id,
                trial.trial_id,
                params={ratio_column(g): row[ratio_column(g)] for g in self.groups},
                state="FAILED",
                error=row["error"],
                index=int(row["trial_index"]),
            )
        except Exception as exc:  # the table row is the record that matters
            print(
                f"warning: MLflow logging of failed trial {trial.trial_id}: {exc}", file=sys.stderr
            )

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_tracker"] = None
        state["display"] = None
        return state
