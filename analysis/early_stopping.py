"""Does early stopping (ASHA over prompt chunks) reach the same final score with fewer images?

A method run with early stopping is labelled ``<sampler>+asha``; it is compared with the same
sampler run without it, seed for seed in distribution (Mann-Whitney U on the final best) and in
images spent.

Example::

    from crdiff_search.analysis import early_stopping_summary
    early_stopping_summary(table)   # one row per early-stopped method
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from crdiff_search.analysis.stats import final_best


def has_early_stopping(table: pd.DataFrame) -> bool:
    """Whether any study in the table ran with early stopping."""
    return bool(table["early_stopping"].any())


def early_stopping_summary(
    table: pd.DataFrame, *, maximize: bool = True, final: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per early-stopped method, next to its plain counterpart (when the table has it).

    Columns: ``method, base, seeds, final_median, base_final_median, shift`` (Hodges-Lehmann
    estimate of early-stopped minus plain final best), ``p`` (two-sided Mann-Whitney U),
    ``images_median, base_images_median, images_saved`` (share of images not generated),
    ``pruned_share`` (share of the early-stopped method's trials that were stopped).
    """
    final = final_best(table, maximize=maximize) if final is None else final
    kinds = table.drop_duplicates("method").set_index("method")
    rows = []
    for method in kinds.index[kinds["early_stopping"].astype(bool)]:
        base = str(kinds.loc[method, "sampler"])
        es = final[final["method"] == method]
        plain = final[final["method"] == base]
        trials = table[table["method"] == method]
        es_vals = es["final_best"].dropna().to_numpy(float)
        row = {
            "method": method,
            "base": base if len(plain) else None,
            "seeds": int(es["seed"].nunique()),
            "final_median": float(np.median(es_vals)) if len(es_vals) else np.nan,
            "base_final_median": np.nan,
            "shift": np.nan,
            "p": np.nan,
            "images_median": float(es["images"].median()),
            "base_images_median": np.nan,
            "images_saved": np.nan,
            "pruned_share": float((trials["state"] == "PRUNED").mean()) if len(trials) else np.nan,
        }
        base_vals = plain["final_best"].dropna().to_numpy(float)
        if len(plain) and len(base_vals) and len(es_vals):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                _, p = stats.mannwhitneyu(es_vals, base_vals, alternative="two-sided")
            base_images = float(plain["images"].median())
            row.update(
                base_final_median=float(np.median(base_vals)),
                shift=float(np.median(np.subtract.outer(es_vals, base_vals))),
                p=float(p) if np.isfinite(p) else 1.0,
                base_images_median=base_images,
                images_saved=1.0 - row["images_median"] / base_images if base_images else np.nan,
            )
        rows.append(row)
    return pd.DataFrame(
        rows,
        columns=[
            "method",
            "base",
            "seeds",
            "final_median",
            "base_final_median",
            "shift",
            "p",
            "images_median",
            "base_images_median",
            "images_saved",
            "pruned_share",
        ],
    )
