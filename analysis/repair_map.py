"""The repair map: one model, many resolutions, dense against repaired on held-out prompts.

Each study of a launched grid (one per resolution) leaves ``rerank.json`` and
``rerank.parquet`` in its folder (``crdiff rerank``, or ``rerank.after_search`` in the
experiment). :func:`build_map` turns those folders into one table, a row per resolution:
the dense model, the best pruned candidate (w = 1), the best pruned + POA candidate, the
winner's difference from dense with its interval and test, its ratios, and how much of the gap
to the training-size score (the ceiling) it closes. :func:`map_figure` draws it.

Example::

    from crdiff_search.analysis.repair_map import build_map, map_figure, write_map
    table = build_map(["runs/testbed-24x24", "runs/testbed-48x48"], training=(32, 32))
    write_map(table, "docs/repair-map")      # map.csv, map.png, map.md
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from crdiff_search.errors import UsageError

MAP_CSV = "map.csv"
MAP_PNG = "map.png"
MAP_MD = "map.md"
# The columns every map has, in order; ratio columns (one per group) follow "p_value".
BASE_COLUMNS = (
    "resolution",
    "dense",
    "pruned",
    "poa",
    "winner",
    "winner_w",
    "delta",
    "delta_low",
    "delta_high",
    "p_value",
)
TAIL_COLUMNS = (
    "verdict",
    "wins",
    "ties",
    "losses",
    "gap_closed",
    "ceiling",
    "n_prompts",
    "heldout_seed",
    "search_trials",
    "search_delta",
    "width",
    "height",
    "study",
)


def _study_row(folder: Path) -> dict:
    from crdiff_search.rerank import load_study
    from crdiff_search.study_folder import RERANK_FILE, RERANK_TABLE

    config, _, trials = load_study(folder)
    info_path, table_path = folder / RERANK_FILE, folder / RERANK_TABLE
    if not info_path.is_file() or not table_path.is_file():
        raise UsageError(
            f"study {str(folder)!r} has no held-out re-ranking ({RERANK_FILE}): run "
            f"`crdiff rerank {folder}` (or set rerank.after_search = true before launching)"
        )
    info = json.loads(info_path.read_text(encoding="utf-8"))
    table = pd.read_parquet(table_path)
    maximize = config.objective.mode != "min"

    def best(kind: str) -> float:
        rows = table[table["kind"] == kind]["score"]
        if rows.empty:
            return math.nan
        return float(rows.max() if maximize else rows.min())

    win = info["winner"]
    verdict = info.get("verdict", {}).get("status", "untested")
    done = trials[trials["state"] == "COMPLETE"]
    dense_search = done[done["trial_index"] == 0]["score"]
    search_best = done["score"].max() if maximize else done["score"].min()
    row = {
        "resolution": config.resolution,
        "width": config.width,
        "height": config.height,
        "study": config.study,
        "dense": float(info["dense_score"]),
        "pruned": best("pruned"),
        "poa": best("poa"),
        "winner": "pruned" if win["w"] == 1.0 else "poa",
        "winner_w": float(win["w"]),
        "delta": float(win["score_delta"]),
        "delta_low": _num(win.get("delta_low")),
        "delta_high": _num(win.get("delta_high")),
        "p_value": _num(win.get("p_vs_dense")),
        **{g: float(r) for g, r in win["ratios"].items()},
        "verdict": verdict,
        "wins": _num(win.get("wins")),
        "ties": _num(win.get("ties")),
        "losses": _num(win.get("losses")),
        "n_prompts": int(info["n_prompts"]),
        "heldout_seed": info.get("heldout", {}).get("seed"),
        "search_trials": int(len(done)),
        "search_delta": (
            float(search_best - dense_search.iloc[0]) if len(dense_search) else math.nan
        ),
        "_groups": list(win["ratios"]),
    }
    return row


def _num(value) -> float:
    return math.nan if value is None else float(value)


def build_map(
    folders: Sequence[str | Path], *, training: tuple[int, int] | None = None
) -> pd.DataFrame:
    """One row per study folder, sorted by image area then width. ``training`` is the model's
    training size: its study's held-out dense score is the ``ceiling``, and ``gap_closed`` is
    the winner's gain over that gap (``(winner - dense) / (ceiling - dense)``, only where the
    dense model is below the ceiling)."""
    if not folders:
        raise UsageError("the repair map needs at least one study folder")
    rows = [_study_row(Path(f).resolve()) for f in folders]
    groups = list(dict.fromkeys(g for r in rows for g in r.pop("_groups")))
    table = pd.DataFrame.from_records(rows)
    table = table.assign(_area=table["width"] * table["height"]).sort_values(
        ["_area", "width"], kind="stable"
    )
    table = table.drop(columns="_area").reset_index(drop=True)
    ceiling = math.nan
    if training is not None:
        at = table[(table["width"] == training[0]) & (table["height"] == training[1])]
        if len(at):
            ceiling = float(at["dense"].iloc[0])
    table["ceiling"] = ceiling
    gap = table["ceiling"] - table["dense"]
    table["gap_closed"] = np.where(gap > 1e-9, table["delta"] / gap.where(gap > 1e-9), np.nan)
    return table[[*BASE_COLUMNS, *groups, *TAIL_COLUMNS]]


def map_figure(table: pd.DataFrame, *, training: tuple[int, int] | None = None, title: str = ""):
    """Two panels: held-out score per resolution (dense, best pruned, best pruned + POA, the
    winner's interval, the ceiling) and the winner's ratios per group."""
    from matplotlib.figure import Figure

    groups = [c for c in table.columns if c not in (*BASE_COLUMNS, *TAIL_COLUMNS)]
    x = np.arange(len(table))
    labels = [
        r + (" (R)" if training and r == f"{training[0]}x{training[1]}" else "")
        for r in table["resolution"]
    ]
    fig = Figure(figsize=(9, 6.4))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.4]})
    width = 0.26
    series = (("dense", "#7f7f7f"), ("pruned", "#1f77b4"), ("poa", "#d62728"))
    for i, (col, colour) in enumerate(series):
        name = {"dense": "dense", "pruned": "best pruned", "poa": "best pruned + POA"}[col]
        top.bar(x + (i - 1) * width, table[col], width, color=colour, label=name)
    # the winner's interval, drawn on its own bar
    for j, row in table.iterrows():
        if math.isnan(row["delta_low"]):
            continue
        offset = 0 if row["winner"] == "pruned" else 1
        centre = row["dense"] + row["delta"]
        lo, hi = row["dense"] + row["delta_low"], row["dense"] + row["delta_high"]
        top.errorbar(
            j + offset * width,
            centre,
            yerr=[[centre - lo], [hi - centre]],
            color="black",
            capsize=3,
            lw=1,
        )
        mark = {"repaired": "repaired", "null": "no repair", "untested": "untested"}
        top.annotate(
            f"{row['delta']:+.3f}\n{mark.get(row['verdict'], row['verdict'])}",
            (j, max(row["dense"], row["pruned"], row["poa"], hi)),
            xytext=(0, 4),
            textcoords="offset points",
            ha="center",
            fontsize=8,
        )
    ceiling = table["ceiling"].iloc[0] if len(table) else math.nan
    if not math.isnan(ceiling):
        top.axhline(ceiling, color="black", ls="--", lw=1, label="dense at training size")
    top.set_ylabel("held-out score")
    peak = float(np.nanmax(table[["dense", "pruned", "poa"]].to_numpy()))
    top.set_ylim(0, max(1.0, peak) * 1.18)
    top.legend(loc="upper center", fontsize=8, ncol=4, frameon=False)
    top.set_title(title or "Repair map: dense vs repaired on held-out prompts", fontsize=11)
    top.grid(axis="y", alpha=0.3)
    gw = 0.8 / max(1, len(groups))
    for i, g in enumerate(groups):
        bottom.bar(x - 0.4 + gw * (i + 0.5), table[g], gw, label=g)
    bottom.set_ylim(0, 1.3)
    bottom.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    bottom.set_ylabel("winner's ratios")
    bottom.legend(loc="upper center", fontsize=8, ncol=len(groups), frameon=False)
    bottom.set_xticks(x, labels)
    bottom.set_xlabel("resolution (width x height)")
    bottom.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def format_markdown(table: pd.DataFrame) -> str:
    """The map as a Markdown table (the README's)."""
    groups = [c for c in table.columns if c not in (*BASE_COLUMNS, *TAIL_COLUMNS)]
    head = (
        "| resolution | dense | best pruned | best pruned + POA | winner vs dense [95 % CI] | "
        f"p | better / equal / worse | gap closed | {' / '.join(groups)} | verdict |"
    )
    lines = [head, "|" + "---|" * (9 + 1)]
    for row in table.itertuples(index=False):
        r = row._asdict()
        interval = (
            "-"
            if math.isnan(r["delta_low"])
            else f"[{r['delta_low']:+.3f}, {r['delta_high']:+.3f}]"
        )
        winner = "pruned" if r["winner"] == "pruned" else f"POA w={r['winner_w']:g}"
        counts = (
            "-"
            if math.isnan(r["wins"])
            else f"{int(r['wins'])} / {int(r['ties'])} / {int(r['losses'])}"
        )
        closed = "-" if math.isnan(r["gap_closed"]) else f"{r['gap_closed']:.0%}"
        ratios = " / ".join(f"{r[g]:.2f}" for g in groups)
        p = "-" if math.isnan(r["p_value"]) else f"{r['p_value']:.2g}"
        lines.append(
            f"| {r['resolution']} | {r['dense']:.3f} | {r['pruned']:.3f} | {r['poa']:.3f} | "
            f"{r['delta']:+.3f} {interval} ({winner}) | {p} | {counts} | {closed} | {ratios} | "
            f"{r['verdict']} |"
        )
    return "\n".join(lines) + "\n"


def write_map(
    table: pd.DataFrame,
    out_dir: str | Path,
    *,
    training: tuple[int, int] | None = None,
    title: str = "",
) -> list[Path]:
    """``map.csv``, ``map.png`` and ``map.md`` in ``out_dir``; returns their paths."""
    from crdiff_search.analysis.plots import save_png

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / MAP_CSV, index=False, float_format="%.6g")
    save_png(map_figure(table, training=training, title=title), out / MAP_PNG)
    (out / MAP_MD).write_text(format_markdown(table), encoding="utf-8")
    return [out / MAP_CSV, out / MAP_PNG, out / MAP_MD]
