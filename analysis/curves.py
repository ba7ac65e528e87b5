"""Best-so-far curves against trials or compute, and their median and IQR over seeds.

Only COMPLETE trials can set a best: a FAILED trial has no score and a PRUNED (early-stopped)
trial's score was measured on fewer prompts. Every finished trial still counts as spent budget
(a trial, its images, its wall time).

Example::

    from crdiff_search.analysis import curve_bands
    bands = curve_bands(table, axis="images")   # method, x, median, q25, q75, n
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from crdiff_search.analysis.table import running_best
from crdiff_search.errors import UsageError

# axis name -> (tidy table column, order the trials are taken in, label)
AXES: dict[str, tuple[str, str, str]] = {
    "trial": ("trial_number", "trial_number", "trials"),
    "images": ("cum_images", "trial_number", "generated images"),
    "wall": ("elapsed_s", "elapsed_s", "wall time (s)"),
}
MAX_GRID_POINTS = 300


def _check_axis(axis: str) -> tuple[str, str, str]:
    if axis not in AXES:
        raise UsageError(f"unknown axis {axis!r}; valid: {', '.join(AXES)}")
    return AXES[axis]


def best_so_far(table: pd.DataFrame, axis: str = "trial", *, maximize: bool = True) -> pd.DataFrame:
    """One step curve per (method, seed): columns ``method, seed, x, best`` (NaN before the
    first completed trial)."""
    column, order, _ = _check_axis(axis)
    parts = []
    for (method, seed), study in table.groupby(["method", "seed"], sort=False):
        study = study.sort_values([order, "trial_number"], kind="stable")
        usable = study["score"].where(study["state"] == "COMPLETE")
        best = running_best(usable, maximize=maximize)
        parts.append(
            pd.DataFrame(
                {
                    "method": method,
                    "seed": seed,
                    "x": study[column].to_numpy(float),
                    "best": best.to_numpy(float),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def default_grid(curves: pd.DataFrame, axis: str) -> np.ndarray:
    """Trial axis: every trial number; compute axes: the observed x values (thinned to at most
    :data:`MAX_GRID_POINTS`)."""
    xs = np.unique(curves["x"].dropna().to_numpy(float))
    if axis == "trial":
        return np.arange(1, int(xs.max()) + 1, dtype=float) if len(xs) else xs
    if len(xs) > MAX_GRID_POINTS:
        xs = np.linspace(xs.min(), xs.max(), MAX_GRID_POINTS)
    return xs


def _step_values(x: np.ndarray, y: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The step function (x, y) at ``grid``; NaN before its first point and after its last."""
    idx = np.searchsorted(x, grid, side="right") - 1
    values = np.where(idx >= 0, y[np.clip(idx, 0, None)], np.nan)
    values[grid > x[-1]] = np.nan
    return values


def curve_bands(
    table: pd.DataFrame,
    axis: str = "trial",
    *,
    grid: np.ndarray | None = None,
    maximize: bool = True,
) -> pd.DataFrame:
    """Median, 25th and 75th percentile of the best-so-far over seeds, per method, on a grid.

    Columns ``method, x, median, q25, q75, n`` (n = seeds with a value at x). A band is only
    defined where every seed of the method has a value: from the point all seeds have completed
    a trial up to the point the first seed ran out of budget, so that the median never silently
    mixes seeds in and out.
    """
    curves = best_so_far(table, axis, maximize=maximize)
    grid = default_grid(curves, axis) if grid is None else np.asarray(grid, float)
    rows = []
    for method, part in curves.groupby("method", sort=False):
        stack = []
        for _, study in part.groupby("seed", sort=True):
            stack.append(_step_values(study["x"].to_numpy(), study["best"].to_numpy(), grid))
        values = np.vstack(stack)
        n = np.sum(~np.isnan(values), axis=0)
        full = n == values.shape[0]
        q = np.full((3, len(grid)), np.nan)
        if full.any():
            q[:, full] = np.quantile(values[:, full], [0.5, 0.25, 0.75], axis=0)
        rows.append(
            pd.DataFrame(
                {"method": method, "x": grid, "median": q[0], "q25": q[1], "q75": q[2], "n": n}
            )
        )
    return pd.concat(rows, ignore_index=True)
