"""Study tables with a known answer, in the ``trials.parquet`` layout, for tests and demos.

Example::

    from crdiff_search.analysis.synthetic import study_table
    raw = study_table([0.1, 0.3, 0.2], sampler="tpe", seed=0)   # three completed trials
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

GROUPS = ("down", "mid", "up")
START = pd.Timestamp("2026-01-01T00:00:00Z")


def study_table(
    scores: Sequence[float | None],
    *,
    sampler: str,
    seed: int,
    states: Sequence[str] | None = None,
    n_images: int | Sequence[int] = 4,
    t_total: float | Sequence[float] = 2.0,
    dense_score: float = 0.0,
    ratios: Sequence[Sequence[float]] | None = None,
    groups: Sequence[str] = GROUPS,
    rng_seed: int = 0,
) -> pd.DataFrame:
    """A sequential study: trial i starts when trial i-1 ends. ``None`` scores are FAILED trials
    unless ``states`` says otherwise; ratios default to seeded uniform draws in [0.1, 0.8]."""
    n = len(scores)
    states = (
        list(states)
        if states is not None
        else ["FAILED" if s is None else "COMPLETE" for s in scores]
    )
    images = np.broadcast_to(np.asarray(n_images, float), (n,))
    durations = np.broadcast_to(np.asarray(t_total, float), (n,))
    if ratios is None:
        ratios = np.random.default_rng(rng_seed).uniform(0.1, 0.8, (n, len(groups)))
    ratios = np.asarray(ratios, float)
    ends = np.cumsum(durations)
    score = np.array([np.nan if s is None else float(s) for s in scores])
    frame = {
        "trial_id": [f"{sampler}-{seed}-{i:04d}" for i in range(n)],
        "trial_index": np.arange(n),
        "state": states,
        **{f"ratio.{g}": ratios[:, j] for j, g in enumerate(groups)},
        "score": score,
        "score_delta": score - dense_score,
        "sparsity": ratios.mean(axis=1) * 0.5,
        "n_images": images.astype(int),
        "t_prune": durations * 0.1,
        "t_generate": durations * 0.7,
        "t_score": durations * 0.15,
        "t_total": durations,
        "error": [("boom" if st == "FAILED" else None) for st in states],
        "sampler": sampler,
        "seed": seed,
        "started_at": [
            START + pd.Timedelta(seconds=float(e - d)) for e, d in zip(ends, durations, strict=True)
        ],
        "finished_at": [START + pd.Timedelta(seconds=float(e)) for e in ends],
    }
    return pd.DataFrame(frame)
