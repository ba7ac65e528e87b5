"""The study's finished trials in an Optuna storage in the study folder (``DIR/optuna.db``).

The sampler's own Optuna study lives inside Ray Tune's searcher state (pickled with the
experiment, which is what makes resume exact); this is its readable twin for Optuna's tools,
kept by the driver as trials finish and brought up to date from ``trials.parquet`` when a study
ends or resumes:

    import optuna
    study = optuna.load_study(study_name="testbed", storage="sqlite:///runs/testbed/optuna.db")
    optuna.visualization.plot_optimization_history(study)
    # or: optuna-dashboard sqlite:///runs/testbed/optuna.db

Each trial holds the group ratios as parameters (one float per group over [min(0, low), high],
so that the dense trial 0 fits), the score as its value, the state (COMPLETE, FAIL, PRUNED), and
``trial_index``, ``trial_id``, ``score_delta``, ``sparsity``, ``n_images`` as user attributes. A
trial is written once (keyed by Tune's trial id). Writing never fails a study: an error is
reported once and the table stays the record of truth.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from crdiff_search import records

_STATES = {"COMPLETE": "COMPLETE", "FAILED": "FAIL", "PRUNED": "PRUNED"}
_ATTRS = ("score_delta", "sparsity", "n_images")


class OptunaMirror:
    """Writes finished trial rows into ``path`` (SQLite) as study ``study_name``."""

    def __init__(
        self,
        path: str | Path,
        study_name: str,
        *,
        groups: Sequence[str],
        bounds: Mapping[str, tuple[float, float]],
        mode: str = "max",
    ) -> None:
        self.path = Path(path)
        self.study_name = study_name
        self.groups = list(groups)
        self.bounds = {g: (float(min(0.0, bounds[g][0])), float(bounds[g][1])) for g in groups}
        self.mode = mode
        self._study = None
        self._written: set[str] | None = None
        self._warned = False

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_study"] = None  # a connection does not travel; it reopens on the next write
        state["_written"] = None
        return state

    def _open(self):
        if self._study is None:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._study = optuna.create_study(
                storage=f"sqlite:///{self.path.resolve()}",
                study_name=self.study_name,
                direction="maximize" if self.mode == "max" else "minimize",
                load_if_exists=True,
            )
            self._written = {
                str(t.user_attrs.get("trial_id")) for t in self._study.get_trials(deepcopy=False)
            }
        return self._study

    def record(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Add the finished rows not written yet (in trial-index order); returns how many."""
        try:
            return self._record(rows)
        except Exception as exc:
            if not self._warned:
                self._warned = True
                print(
                    f"warning: could not write {self.path} for Optuna's tools ({exc}); the "
                    "study goes on, trials.parquet keeps every result",
                    file=sys.stderr,
                )
            return 0

    def _record(self, rows: Iterable[Mapping[str, Any]]) -> int:
        pending = [
            r
            for r in rows
            if r.get("state") in _STATES and str(r.get("trial_id")) not in (self._written or ())
        ]
        if not pending:
            return 0
        import optuna
        from optuna.distributions import FloatDistribution

        study = self._open()
        pending = [r for r in pending if str(r.get("trial_id")) not in self._written]
        distributions = {g: FloatDistribution(*self.bounds[g]) for g in self.groups}
        n = 0
        for row in sorted(pending, key=lambda r: int(r.get("trial_index") or 0)):
            state = _STATES[row["state"]]
            score = row.get("score")
            if state == "COMPLETE" and not records.is_number(score):
                state = "FAIL"
            params = {}
            for g in self.groups:
                low, high = self.bounds[g]
                params[g] = min(max(float(row.get(records.ratio_column(g)) or 0.0), low), high)
            attrs = {"trial_id": str(row["trial_id"]), "trial_index": int(row["trial_index"])}
            for key in _ATTRS:
                value = row.get(key)
                if records.is_number(value) and math.isfinite(float(value)):
                    attrs[key] = float(value)
            if row.get("error"):
                attrs["error"] = str(row["error"])[:500]
            trial = optuna.trial.create_trial(
                state=getattr(optuna.trial.TrialState, state),
                value=float(score) if state == "COMPLETE" else None,
                params=params,
                distributions=distributions,
                user_attrs=attrs,
            )
            study.add_trial(trial)
            self._written.add(attrs["trial_id"])
            n += 1
        return n
