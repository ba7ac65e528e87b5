"""Sparsity tables: per group, with a total row, and plain-text rendering."""

from __future__ import annotations


def group_table(tensor_report):
    """Aggregate :meth:`Pruner.report` rows per group, plus a ``total`` row."""
    import pandas as pd

    df = tensor_report
    rows = []
    for group, part in df.groupby("group", sort=False):
        rows.append(_row(group, part, requested=float(part["requested"].iloc[0])))
    rows.append(_row("total", df, requested=None))
    return pd.DataFrame(rows)


def _row(group, part, *, requested):
    numel = int(part["numel"].sum())
    zeros = int(part["zeros"].sum())
    return {
        "group": group,
        "tensors": len(part),
        "numel": numel,
        "requested": requested,
        "pruned": int(part["pruned"].sum()),
        "sparsity": zeros / numel if numel else 0.0,
    }


def format_table(df, *, floats: str = "{:.4f}") -> str:
    """Plain-text table with right-aligned numbers (no truncation, unlike pandas' repr)."""
    cols = list(df.columns)
    cells = [[str(c) for c in cols]]
    for row in df.itertuples(index=False):
        out = []
        for v in row:
            if v is None or (isinstance(v, float) and v != v):
                out.append("-")
            elif isinstance(v, float):
                out.append(floats.format(v))
            elif isinstance(v, int):
                out.append(f"{v:,}")
            else:
                out.append(str(v))
        cells.append(out)
    widths = [max(len(r[i]) for r in cells) for i in range(len(cols))]
    numeric = [df[c].dtype.kind in "iuf" or c == "requested" for c in cols]
    lines = []
    for j, r in enumerate(cells):
        parts = [
            r[i].rjust(widths[i]) if numeric[i] else r[i].ljust(widths[i]) for i in range(len(cols))
        ]
        lines.append("  ".join(parts).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
