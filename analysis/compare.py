"""The comparison folder's table and report: ``comparison.parquet`` + ``compare.json`` ->
``report.md`` / ``report.html`` (the studies themselves run in :mod:`crdiff_search.compare`).

Example::

    from crdiff_search.analysis.compare import build_report
    build_report("runs/compare-testbed")      # rewrites report.md from the saved table
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crdiff_search.errors import UsageError

MANIFEST = "compare.json"
TABLE = "comparison.parquet"
DEFAULT_SHARE = 0.95


def read_manifest(out_dir: Path) -> dict[str, Any]:
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


PICKS_TABLE = "tables/picks.csv"  # each study's pick scored on held-out prompts


def pick_summary(picks):
    """Per method: studies, median search score and held-out delta of the pick (IQR), and
    how many picks beat the dense model held out (their paired 95 % interval above 0)."""
    import numpy as np

    from crdiff_search.analysis.table import method_label

    labels = zip(picks["sampler"], picks["early_stopping"], strict=True)
    picks = picks.assign(method=[method_label(s, bool(e)) for s, e in labels])
    rows = []
    for method, group in picks.groupby("method", sort=False):
        delta = group["heldout_delta"].to_numpy(float)
        low = group["delta_low"].astype(float)
        rows.append(
            {
                "method": method,
                "studies": len(group),
                "search score (median)": float(np.median(group["search_score"])),
                "held-out delta (median)": float(np.median(delta)),
                "held-out delta (IQR)": float(np.percentile(delta, 75) - np.percentile(delta, 25)),
                "picks above dense (95 % interval)": int((low > 0).sum()),
            }
        )
    return rows


def append_picks(out: Path, report: Path) -> None:
    """The report's section on the held-out picks, from ``DIR/tables/picks.csv``."""
    import pandas as pd

    picks = pd.read_csv(out / PICKS_TABLE)
    summary = pd.DataFrame(pick_summary(picks))
    n = sorted(set(picks["heldout_prompts"]))
    lines = [
        "",
        "## The pick, held out",
        "",
        f"Each study's pick (its best search trial) and the dense model scored on "
        f"{', '.join(map(str, n))} held-out prompts (paired, same seeds); "
        f"`{PICKS_TABLE}` has one row per study.",
        "",
        "| " + " | ".join(summary.columns) + " |",
        "|" + "---|" * len(summary.columns),
    ]
    for row in summary.to_dict("records"):
        cells = [
            f"{v:+.4f}" if "delta" in k else (f"{v:.4f}" if isinstance(v, float) else str(v))
            for k, v in row.items()
        ]
        lines.append("| " + " | ".join(cells) + " |")
    with open(report, "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def build_report(out_dir: str | Path, *, share: float = DEFAULT_SHARE) -> Path:
    """(Re)write the report of ``DIR`` from ``DIR/comparison.parquet`` and ``DIR/compare.json``."""
    from crdiff_search.analysis.report import write_report
    from crdiff_search.analysis.table import load_table

    out = Path(out_dir)
    if not (out / TABLE).is_file():
        raise UsageError(f"{out} holds no {TABLE}; run the comparison first")
    manifest = read_manifest(out)
    table = load_table(out / TABLE)
    report = write_report(
        table,
        out,
        title=manifest.get("title", "Sampler comparison"),
        share=share,
        maximize=manifest.get("maximize", True),
        score_label=manifest.get("score_label", "score"),
        context=manifest.get("context", {}),
    )
    if (out / PICKS_TABLE).is_file():
        append_picks(out, report.markdown)
    return report.markdown
