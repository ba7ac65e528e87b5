"""Each study's pick scored on held-out prompts: the figures a user's choice of sampler rests on.

A comparison with ``--heldout N`` writes ``tables/picks.csv``: one row per study, its pick (the
best search trial) and the dense model scored on the same N held-out prompts and seeds, with
the paired difference ``heldout_delta`` and its 95 % interval (``delta_low``, ``delta_high``).
This module summarises those rows per method and tests whether methods differ held out, the
same rank tests the search score gets (Kruskal-Wallis, Mann-Whitney per pair, Holm).

Example::

    import pandas as pd
    from crdiff_search.analysis.picks import heldout_rank_tests, pick_summary
    picks = pd.read_csv("docs/compare-24x24/tables/picks.csv")
    print(pd.DataFrame(pick_summary(picks)))
    kruskal, pairs = heldout_rank_tests(picks)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from crdiff_search.analysis.stats import rank_tests
from crdiff_search.analysis.table import method_label

PICK_COLUMNS = ("study", "sampler", "seed", "early_stopping", "heldout_delta", "delta_low")


def with_methods(picks: pd.DataFrame) -> pd.DataFrame:
    """``picks`` with a ``method`` column (sampler, ``+asha`` when early-stopped), checked."""
    missing = [c for c in PICK_COLUMNS if c not in picks.columns]
    if missing:
        raise ValueError(
            f"the picks table lacks column(s) {missing}; it needs {list(PICK_COLUMNS)}"
        )
    labels = zip(picks["sampler"], picks["early_stopping"], strict=True)
    return picks.assign(method=[method_label(s, _flag(e)) for s, e in labels])


def _flag(value) -> bool:
    """``early_stopping`` as read back from CSV: a bool, or the strings 'True'/'False'."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def pick_summary(picks: pd.DataFrame) -> list[dict]:
    """Per method: studies, median search score and held-out delta of the pick (IQR), and
    how many picks beat the dense model held out (their paired 95 % interval above 0)."""
    rows = []
    for method, group in with_methods(picks).groupby("method", sort=False):
        delta = group["heldout_delta"].to_numpy(float)
        rows.append(
            {
                "method": method,
                "studies": len(group),
                "search score (median)": float(np.median(group["search_score"])),
                "held-out delta (median)": float(np.median(delta)),
                "held-out delta (IQR)": float(np.percentile(delta, 75) - np.percentile(delta, 25)),
                "picks above dense (95 % interval)": int(
                    (group["delta_low"].astype(float) > 0).sum()
                ),
            }
        )
    return rows


def heldout_rank_tests(
    picks: pd.DataFrame, *, maximize: bool = True
) -> tuple[dict[str, float], pd.DataFrame]:
    """Kruskal-Wallis over the methods' held-out deltas and a Mann-Whitney U test per pair
    (Holm-adjusted): the rank tests of :func:`~crdiff_search.analysis.stats.rank_tests`, on the
    score a user keeps rather than the one the search saw. One value per study (its pick)."""
    return rank_tests(with_methods(picks), maximize=maximize, value="heldout_delta")
