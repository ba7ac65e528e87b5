"""Figures for the comparison report.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot (no global
state, no GUI backend), so figures can be inspected in tests and saved anywhere with
:func:`save_png`.

Example::

    from crdiff_search.analysis import curve_bands, plots
    fig = plots.best_so_far_figure(curve_bands(table, "images"), "images")
    plots.save_png(fig, "best_vs_images.png")
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from crdiff_search.analysis.curves import AXES
from crdiff_search.analysis.table import RATIO_PREFIX, ratio_columns

DPI = 120  # 6 x 3.6 in -> 720 x 432 px: legible without zooming
MAX_LANDSCAPE_GROUPS = 4
_JITTER_SEED = 0


def method_colors(methods: Sequence[str]) -> dict[str, tuple]:
    """A stable colour per method (tab10 in method order)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(methods)}


def save_png(fig: Figure, path: str | Path) -> Path:
    """Save a small PNG: a 256-colour palette (plots are flat colours, so this loses nothing
    visible and divides the size by about three) and no metadata, so reruns write the same
    bytes."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=DPI, format="png", metadata={"Software": None})
    buffer.seek(0)
    with Image.open(buffer) as image:
        small = image.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    small.save(path, format="PNG", optimize=True)
    return path


def best_so_far_figure(
    bands: pd.DataFrame,
    axis: str,
    *,
    methods: Sequence[str] | None = None,
    target: float | None = None,
    score_label: str = "score",
) -> Figure:
    """Median best-so-far per method (one line each) with its IQR band shaded."""
    methods = list(methods or dict.fromkeys(bands["method"]))
    colors = method_colors(methods)
    fig = Figure(figsize=(6.0, 3.6))
    ax = fig.add_subplot()
    step = "post"
    for method in methods:
        part = bands[bands["method"] == method]
        ax.step(part["x"], part["median"], where=step, color=colors[method], label=method, lw=1.6)
        ax.fill_between(
            part["x"], part["q25"], part["q75"], step=step, color=colors[method], alpha=0.18, lw=0
        )
    if target is not None and np.isfinite(target):
        ax.axhline(target, color="0.4", ls=":", lw=1.0, label="target")
    ax.set_xlabel(AXES[axis][2])
    ax.set_ylabel(f"best {score_label} so far")
    if axis == "trial":
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(
        f"Best {score_label} so far against {AXES[axis][2]}\n"
        "line: median over seeds; band: interquartile range",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def _per_method_width(n_methods: int) -> float:
    """Figure width (inches) that keeps one label per method readable side by side."""
    return max(6.0, 0.8 * n_methods + 2)


def final_best_figure(
    final: pd.DataFrame, *, methods: Sequence[str] | None = None, score_label: str = "score"
) -> Figure:
    """Box plot of the final best per method, with every seed drawn as a point."""
    methods = list(methods or dict.fromkeys(final["method"]))
    colors = method_colors(methods)
    fig = Figure(figsize=(_per_method_width(len(methods)), 3.4))
    ax = fig.add_subplot()
    data = [final.loc[final["method"] == m, "final_best"].dropna().to_numpy(float) for m in methods]
    ax.boxplot(data, tick_labels=methods, widths=0.5, showfliers=False)
    rng = np.random.default_rng(_JITTER_SEED)
    for i, (method, values) in enumerate(zip(methods, data, strict=True), start=1):
        ax.scatter(
            i + rng.uniform(-0.12, 0.12, len(values)), values, s=14, color=colors[method], zorder=3
        )
    ax.set_ylabel(f"final best {score_label}")
    ax.set_xlabel("method")
    ax.grid(alpha=0.3, axis="y")
    ax.tick_params(axis="x", labelsize=9)
    ax.set_title(
        f"Final best {score_label} of each study\npoint: one seed; box: quartiles over seeds",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def landscape_groups(table: pd.DataFrame, limit: int = MAX_LANDSCAPE_GROUPS) -> list[str]:
    """The ratio columns to project: all of them when few, else the ``limit`` whose ratio is most
    rank-correlated with the score (the ones that matter)."""
    columns = ratio_columns(table)
    if len(columns) <= limit:
        return columns
    done = table[table["state"] == "COMPLETE"]
    strength = {c: abs(done[c].corr(done["score"], method="spearman")) for c in columns}
    ranked = sorted(columns, key=lambda c: -np.nan_to_num(strength[c]))
    return [c for c in columns if c in ranked[:limit]]


def landscape_figure(
    table: pd.DataFrame,
    *,
    methods: Sequence[str] | None = None,
    groups: Sequence[str] | None = None,
    score_label: str = "score",
    maximize: bool = True,
) -> Figure:
    """Pairwise projections of the ratios tried, coloured by score: one row per method, one
    column per pair of groups (a single group: ratio against score)."""
    methods = list(methods or dict.fromkeys(table["method"]))
    groups = list(groups or landscape_groups(table))
    done = table[(table["state"] == "COMPLETE") & table["score"].notna()]
    pairs = list(itertools.combinations(groups, 2)) or [(groups[0], None)]
    vmin, vmax = float(done["score"].min()), float(done["score"].max())
    fig = Figure(figsize=(2.6 * len(pairs) + 1.4, 2.1 * len(methods) + 0.9), layout="constrained")
    axes = fig.subplots(len(methods), len(pairs), squeeze=False, sharex="col", sharey="col")
    mappable = None
    for r, method in enumerate(methods):
        # Best trials drawn last, on top.
        part = done[done["method"] == method].sort_values("score", ascending=maximize)
        for c, (gx, gy) in enumerate(pairs):
            ax = axes[r][c]
            y = part[gy] if gy is not None else part["score"]
            mappable = ax.scatter(
                part[gx],
                y,
                c=part["score"],
                s=8,
                cmap="viridis",
                vmin=vmin,
                vmax=vmax,
                linewidths=0,
            )
            ax.tick_params(labelsize=7)
            ylabel = f"{gy.removeprefix(RATIO_PREFIX)} ratio" if gy is not None else score_label
            if r == 0:
                ax.set_title(f"{gx.removeprefix(RATIO_PREFIX)} vs {ylabel}", fontsize=9)
            ax.set_ylabel(f"{method}\n{ylabel}" if c == 0 else ylabel, fontsize=8)
            if r == len(methods) - 1:
                ax.set_xlabel(f"{gx.removeprefix(RATIO_PREFIX)} ratio (share pruned)", fontsize=8)
    if mappable is not None:
        fig.colorbar(mappable, ax=axes, shrink=0.8, label=f"{score_label} (trial)")
    fig.suptitle(
        f"Ratios each method tried, coloured by {score_label} (one row per method; "
        f"{'bright' if maximize else 'dark'} = better, best drawn on top)",
        fontsize=10,
    )
    return fig


def early_stopping_figure(
    final: pd.DataFrame, *, methods: Sequence[str] | None = None, score_label: str = "score"
) -> Figure:
    """Final best against images spent, one point per (method, seed)."""
    methods = list(methods or dict.fromkeys(final["method"]))
    colors = method_colors(methods)
    fig = Figure(figsize=(5.4, 3.4))
    ax = fig.add_subplot()
    for method in methods:
        part = final[final["method"] == method]
        hollow = method.endswith("+asha")
        ax.scatter(
            part["images"],
            part["final_best"],
            s=22,
            label=method,
            facecolors="none" if hollow else colors[method],
            edgecolors=colors[method],
        )
    ax.set_xlabel("images generated by the study")
    ax.set_ylabel(f"final best {score_label}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(
        f"Early stopping: final best {score_label} against images generated\n"
        "filled: full evaluation; hollow: ASHA over prompt chunks",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def delta_bars(
    table: pd.DataFrame,
    *,
    key: str,
    series: Mapping[str, tuple[str, str]],
    column: str = "delta",
    xlabel: str = "resolution (width x height)",
    ylabel: str = "held-out score minus dense (95 % CI)",
    title: str = "",
) -> Figure:
    """Grouped bars of ``column`` (with ``column_low`` / ``column_high`` as its interval) per
    resolution, one bar per ``series`` value of ``table[key]`` (``{value: (label, color)}``)."""
    resolutions = list(dict.fromkeys(table["resolution"]))
    shown = [v for v in series if v in set(table[key])]
    fig = Figure(figsize=(max(7.0, 1.1 * len(resolutions) + 2), 4.2))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(shown))
    for i, value in enumerate(shown):
        sub = table[table[key] == value].set_index("resolution").reindex(resolutions)
        x = np.arange(len(resolutions)) + (i - (len(shown) - 1) / 2) * width
        err = np.vstack([sub[column] - sub[f"{column}_low"], sub[f"{column}_high"] - sub[column]])
        label, color = series[value]
        ax.bar(x, sub[column], width, yerr=err, capsize=3, label=label, color=color)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(resolutions)), resolutions)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def heldout_picks_figure(picks: pd.DataFrame, *, methods: Sequence[str] | None = None) -> Figure:
    """Each study's pick, held out: its paired gain over the dense model with the 95 % interval,
    one column of points per method (seeds side by side), a box over the seeds behind them.
    ``picks`` needs ``method``, ``seed``, ``heldout_delta``, ``delta_low`` and ``delta_high``."""
    methods = [m for m in (methods or dict.fromkeys(picks["method"])) if m in set(picks["method"])]
    colors = method_colors(methods)
    fig = Figure(figsize=(_per_method_width(len(methods)), 3.8))
    ax = fig.add_subplot()
    data = []
    for i, method in enumerate(methods, start=1):
        part = picks[picks["method"] == method].sort_values("seed")
        delta = part["heldout_delta"].to_numpy(float)
        data.append(delta)
        x = i + (np.linspace(-0.25, 0.25, len(part)) if len(part) > 1 else np.zeros(1))
        err = np.vstack([delta - part["delta_low"], part["delta_high"] - delta])
        above = part["delta_low"].to_numpy(float) > 0
        ax.errorbar(x, delta, yerr=err, fmt="none", ecolor=colors[method], alpha=0.45, lw=1)
        ax.scatter(x[above], delta[above], s=18, color=colors[method], zorder=3)
        ax.scatter(
            x[~above], delta[~above], s=18, facecolors="white", edgecolors=colors[method], zorder=3
        )
    ax.boxplot(
        data,
        positions=range(1, len(methods) + 1),
        widths=0.7,
        showfliers=False,
        medianprops={"color": "black"},
    )
    ax.set_xticks(range(1, len(methods) + 1), methods)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel("held-out score minus dense")
    ax.set_xlabel("method")
    ax.grid(alpha=0.3, axis="y")
    ax.tick_params(axis="x", labelsize=9)
    n = sorted(set(picks["heldout_prompts"])) if "heldout_prompts" in picks else []
    prompts = f" on {', '.join(map(str, n))} held-out prompts" if n else ""
    ax.set_title(
        f"Each study's pick against the dense model{prompts}\n"
        "point: one seed, bar: its 95 % interval (filled: above dense); box: over seeds",
        fontsize=10,
    )
    fig.tight_layout()
    return fig
