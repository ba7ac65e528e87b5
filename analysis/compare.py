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


def build_report(out_dir: str | Path, *, share: float = DEFAULT_SHARE) -> Path:
    """(Re)write the report of ``DIR`` from ``DIR/comparison.parquet`` and ``DIR/compare.json``."""
    import pandas as pd

    from crdiff_search.analysis.report import write_report
    from crdiff_search.analysis.table import load_table

    out = Path(out_dir)
    if not (out / TABLE).is_file():
        raise UsageError(f"{out} holds no {TABLE}; run the comparison first")
    manifest = read_manifest(out)
    table = load_table(out / TABLE)
    picks = pd.read_csv(out / PICKS_TABLE) if (out / PICKS_TABLE).is_file() else None
    report = write_report(
        table,
        out,
        title=manifest.get("title", "Sampler comparison"),
        share=share,
        maximize=manifest.get("maximize", True),
        score_label=manifest.get("score_label", "score"),
        context=manifest.get("context", {}),
        picks=picks,
    )
    return report.markdown
