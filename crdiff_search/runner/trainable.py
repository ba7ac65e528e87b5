"""The Ray Tune trainable: one candidate ratio set per trial, on a worker that stays loaded.

A trial applies its ratios to the cached pipeline's denoiser in place, generates the study's
prompts (fixed seeds, one chunk per ``step``), scores them and restores the dense weights. The
actor is reused for the next trial through :meth:`PruningTrainable.reset_config`, so nothing is
loaded twice.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import traceback
from collections.abc import Mapping
from typing import Any

import numpy as np
from ray import tune
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from crdiff_search import records
from crdiff_search.runner import worker
from crdiff_search.runner.spec import WorkerSpec, slice_scores

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "trial_state.json"
TRACKING_FLUSH_S = 120.0


def ratios_of(config: Mapping[str, Any], groups) -> dict[str, float]:
    return {g: float(config.get(g, 0.0)) for g in groups}


def same_ratios(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    return set(a) == set(b) and all(math.isclose(a[g], b[g], abs_tol=1e-12) for g in a)


class PruningTrainable(tune.Trainable):
    """Scores one ``{group: ratio}`` candidate per trial; see the module docstring."""

    def setup(self, config: dict, spec: WorkerSpec | None = None) -> None:
        # Loading happens in the first step, not here: Tune hands a trial whose actor is still
        # starting to any actor that frees up and discards the starting one, so a slow setup
        # would keep the study at one live worker whenever loading outlasts a trial.
        if spec is None:
            raise TypeError("PruningTrainable needs its WorkerSpec: tune.with_parameters(spec=...)")
        self._spec = spec
        self._state = None
        self._t_load = 0.0
        self._tracker = None
        self._begin(config)

    def _ensure_loaded(self) -> None:
        if self._state is not None:
            return
        t0 = time.perf_counter()
        self._state, loaded = worker.worker_state(self._spec)
        if loaded and not self._is_dense():
            # This worker's dense baseline, measured with its load rather than inside the
            # trial's time (the dense trial itself fills it in where it runs).
            self._state.ensure_dense(self._spec)
        self._t_load = time.perf_counter() - t0 if loaded else 0.0
        self._started_at = time.time()

    def _is_dense(self) -> bool:
        return records.is_dense(self._ratios)

    # ---- trial life cycle
    def _begin(self, config: Mapping[str, Any]) -> None:
        self._ratios = ratios_of(config, self._spec.groups)
        self._chunk = 0
        self._failed_images = 0
        self._scores: dict[str, list[float]] = {}
        self._timings = dict.fromkeys(records.PHASE_TIMINGS, 0.0)
        self._applied = False
        self._images: list = []
        self._started_at = time.time()
        self._replay = None
        done = self._spec.completed.get(self.trial_id)
        if done is not None and same_ratios(done["ratios"], self._ratios):
            self._replay = done["metrics"]

    def _restore_weights(self) -> None:
        if self._applied:
            t0 = time.perf_counter()
            self._state.pruner.restore_()
            self._timings["t_restore"] += time.perf_counter() - t0
            self._applied = False

    def reset_config(self, new_config: dict) -> bool:
        self._restore_weights()
        self._t_load = 0.0
        self._begin(new_config)
        return True

    def cleanup(self) -> None:
        try:
            self._restore_weights()
        except Exception:  # the process may be going away anyway
            log.exception("restoring dense weights failed")
        if self._tracker is not None:
            # Trials' MLflow writes run in the background; let them land before the worker
            # goes. Any that do not are written by the driver from the trial table.
            for error in self._tracker.flush(timeout=TRACKING_FLUSH_S):
                log.warning("MLflow logging of a trial failed: %s", error)

    # ---- retries resume a trial from its last reported chunk
    def save_checkpoint(self, checkpoint_dir: str) -> None:
        state = {
            "chunk": self._chunk,
            "scores": self._scores,
            "ratios": self._ratios,
            "started_at": self._started_at,
            "timings": self._timings,
            "failed_images": self._failed_images,
        }
        with open(os.path.join(checkpoint_dir, CHECKPOINT_FILE), "w") as f:
            json.dump(state, f)

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        with open(os.path.join(checkpoint_dir, CHECKPOINT_FILE)) as f:
            state = json.load(f)
        if same_ratios(state["ratios"], self._ratios):
            self._chunk = int(state["chunk"])
            self._scores = {k: list(v) for k, v in state["scores"].items()}
            self._started_at = float(state["started_at"])
            self._timings.update(state["timings"])
            self._failed_images = int(state.get("failed_images", 0))

    # ---- one prompt chunk per step
    def step(self) -> dict:
        if self._replay is not None:
            # Completed before the driver stopped: report the recorded result, never re-run.
            return {**self._replay, "replayed": True, "done": True}
        try:
            self._ensure_loaded()
            return self._step()
        except Exception:
            self._restore_weights()
            _free_accelerator_memory()
            raise

    def _step(self) -> dict:
        spec, state = self._spec, self._state
        is_dense = self._is_dense()
        if self._chunk == 0 and not is_dense and state.dense_scores(spec) is None:
            state.ensure_dense(spec)  # baseline of this worker, before any masks go in
        if not self._applied and not is_dense:
            t0 = time.perf_counter()
            state.pruner.apply_(self._ratios)
            self._timings["t_prune"] += time.perf_counter() - t0
            self._applied = True
        start, stop = spec.chunks[self._chunk]
        images, parts = self._generate_and_score(start, stop)
        for name, values in parts.items():
            self._scores.setdefault(name, []).extend(float(v) for v in values)
        if len(self._images) < 8:
            self._images.extend(images[: 8 - len(self._images)])
        self._chunk += 1
        done = self._chunk == len(spec.chunks)
        n = stop
        cumulative = {k: np.asarray(v) for k, v in self._scores.items()}
        sparsity, per_group = state.sparsity() if self._applied else (0.0, {})
        if done:
            self._restore_weights()
        if is_dense and done and state.dense_scores(spec) is None:
            state.set_dense(spec, cumulative)
        dense = state.dense_scores(spec)
        # The dense trial is its own reference (its relative terms are 0 on every chunk).
        reference = cumulative if is_dense else (slice_scores(dense, n) if dense else None)
        if reference is None and spec.relative:
            raise RuntimeError("relative objective terms need the dense scores of this worker")
        score = state.combine(cumulative, reference)
        if is_dense:
            delta = 0.0
        elif reference is not None:
            delta = score - state.combine(reference, reference)
        else:
            delta = float("nan")
        metrics: dict[str, Any] = {
            "score": float(score),
            "score_delta": float(delta),
            "sparsity": float(sparsity),
            "n_images": int(n),
            "n_failed_images": int(self._failed_images),
            "chunk": self._chunk,
            "n_chunks": len(spec.chunks),
            **{records.ratio_column(g): r for g, r in self._ratios.items()},
            **{f"sparsity.{g}": v for g, v in per_group.items()},
            **self._timings,
            "t_load": self._t_load,
            "started_at": self._started_at,
            "finished_at": time.time(),
            **worker.process_info(),
            "done": done,
        }
        if len(spec.terms) > 1 or spec.relative:
            for label, value in state.term_values(cumulative, reference).items():
                metrics[f"score.{label}"] = value
        # Wall time of the trial so far (without the worker's one-time load).
        metrics["t_total"] = metrics["finished_at"] - self._started_at
        if self._tracker is not None and self._tracker.failures:
            # MLflow writes of earlier trials failed on this worker: the driver says so now.
            metrics["tracking_failures"] = self._tracker.failures
            metrics["tracking_error"] = self._tracker.last_failure[:300]
        if done:
            self._track(metrics, is_dense)
        return metrics

    def _generate_and_score(self, start: int, stop: int) -> tuple[list, dict[str, list[float]]]:
        """The chunk's images and each term's per-image scores. With the objective's
        ``failed_image_score``, a chunk that fails is done again one image at a time, and an
        image whose generation or scoring fails (or scores NaN) gets that score in every term,
        as the reference scores a failed prompt; without it, a failure fails the trial."""
        spec, state = self._spec, self._state
        try:
            t0 = time.perf_counter()
            images = state.generate(spec, start, stop)
            t1 = time.perf_counter()
            parts = state.score(images, spec.prompts[start:stop])
            self._timings["t_generate"] += t1 - t0
            self._timings["t_score"] += time.perf_counter() - t1
        except Exception:
            if spec.failed_image_score is None:
                raise
            log.warning(
                "trial %s: prompts %d-%d failed as a batch; scoring them one at a time "
                "(a failed image counts %s):\n%s",
                self.trial_id,
                start,
                stop - 1,
                spec.failed_image_score,
                traceback.format_exc(limit=2),
            )
            return self._one_at_a_time(start, stop)
        parts = {k: [float(v) for v in values] for k, values in parts.items()}
        if spec.failed_image_score is not None:
            for i in range(stop - start):
                if not all(math.isfinite(values[i]) for values in parts.values()):
                    self._failed_images += 1
                    for values in parts.values():
                        values[i] = float(spec.failed_image_score)
        return images, parts

    def _one_at_a_time(self, start: int, stop: int) -> tuple[list, dict[str, list[float]]]:
        spec, state = self._spec, self._state
        labels = list(state.objective.labels)
        images: list = []
        parts: dict[str, list[float]] = {label: [] for label in labels}
        for i in range(start, stop):
            scores = None
            try:
                t0 = time.perf_counter()
                image = state.generate(spec, i, i + 1)
                t1 = time.perf_counter()
                one = state.score(image, spec.prompts[i : i + 1])
                self._timings["t_generate"] += t1 - t0
                self._timings["t_score"] += time.perf_counter() - t1
                scores = {k: float(v[0]) for k, v in one.items()}
                if all(math.isfinite(v) for v in scores.values()):
                    images.extend(image)
                else:
                    scores = None
            except Exception as exc:
                log.warning("trial %s: prompt %d failed: %s", self.trial_id, i, exc)
            if scores is None:
                self._failed_images += 1
                scores = dict.fromkeys(labels, float(spec.failed_image_score))
            for label in labels:
                parts[label].append(scores[label])
        return images, parts

    # ---- MLflow child run (from the worker, so that it can carry images)
    def _track(self, metrics: dict, is_dense: bool) -> None:
        """Queue the trial's child run on the tracker's background thread: the next trial
        starts while MLflow writes (one thread, so writes keep their order)."""
        tracking = self._spec.tracking
        if tracking is None:
            return
        try:
            from crdiff_search.tracking import StudyTracker

            if self._tracker is None:
                self._tracker = StudyTracker(tracking.uri, tracking.experiment)
            state = self._state
            improved = state.best_local is None or _better(
                metrics["score"], state.best_local, self._spec.mode
            )
            if improved:
                state.best_local = metrics["score"]
            timings = records.mlflow_timings(metrics)
            run_metrics = records.mlflow_metrics(metrics)
            captions = list(self._spec.prompts[: len(self._images)])
            self._tracker.log_trial_async(
                tracking.parent_run_id,
                self.trial_id,
                index=records.index_from_name(self.trial_name),
                params={records.ratio_column(g): r for g, r in self._ratios.items()},
                metrics=run_metrics,
                timings=timings,
                images=self._images if (improved or is_dense) else None,
                captions=captions,
                state="COMPLETE",
            )
            if is_dense:
                self._tracker.submit(
                    self._tracker.log_dense_baseline,
                    tracking.parent_run_id,
                    {"score": metrics["score"]},
                    self._images,
                    captions,
                )
        except Exception:
            # Tracking must not cost a trial its result; the driver's table still records it.
            log.warning(
                "MLflow logging of trial %s failed:\n%s", self.trial_id, traceback.format_exc()
            )


class BaselineASHA(ASHAScheduler):
    """ASHA over prompt chunks that never stops the dense trial: it is the baseline every
    candidate's score is compared with, so it must see all prompts."""

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        if all(float(v) == 0.0 for v in trial.config.values()):
            return TrialScheduler.CONTINUE
        return decision


def _better(a: float, b: float, mode: str) -> bool:
    return a > b if mode == "max" else a < b


def _free_accelerator_memory() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass
