"""Ray Tune's Optuna searcher, ending the search when the sampler says it has finished.

A sampler cannot end a study through Optuna; ours say so through ``sampler.finished(study)``
(the reference annealing stops after its last restart, or after its iteration budget). The
searcher then returns :data:`Searcher.FINISHED`: Tune starts no further trial, lets the running
ones end, and the study is complete. The stop is written to the study folder
(``sampler_stopped.json``) so that the summary, a resume and a reader know why the study has
fewer trials than its budget.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch


class StoppingOptunaSearch(OptunaSearch):
    """:class:`OptunaSearch` that honours ``sampler.finished(study)`` (see the module)."""

    def __init__(self, *args, stop_file: str | os.PathLike | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._stop_file = str(stop_file) if stop_file is not None else None

    def suggest(self, trial_id: str):
        if self._sampler_finished():
            self._record_stop()
            return Searcher.FINISHED
        return super().suggest(trial_id)

    def _sampler_finished(self) -> bool:
        finished = getattr(self._sampler, "finished", None)
        study = getattr(self, "_ot_study", None)
        return callable(finished) and study is not None and bool(finished(study))

    def _record_stop(self) -> None:
        if self._stop_file is None or Path(self._stop_file).exists():
            return
        chain = getattr(self._sampler, "chain", None)
        state = chain(self._ot_study) if callable(chain) else None
        trials = self._ot_study.get_trials(deepcopy=False)
        record = {
            "reason": "the sampler's chain stopped (its stall rule or its iteration budget)",
            "trials": len(trials),
            "at": time.time(),
        }
        if state is not None:
            record.update(
                iterations=state.iterations,
                restarts=state.restarts,
                reheats=state.reheats,
                best_score=state.best_score,
            )
        tmp = Path(self._stop_file + ".tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(tmp, self._stop_file)
