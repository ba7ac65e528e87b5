"""One tidy comparison table from many study tables.

A study writes ``trials.parquet`` (one row per trial). :func:`combine_studies` stacks several of
them into one table, one row per trial, with the columns every analysis needs: the method label,
the sampler and its seed, the trial's position, its ratios, metrics, timings, the wall clock, and
the running totals (images generated, elapsed wall time, best score so far).

Example::

    from crdiff_search.analysis import combine_studies
    table = combine_studies(["runs/tpe-s0/trials.parquet", "runs/anneal-s0/trials.parquet"])
    table.groupby("method")["best_so_far"].max()
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from crdiff_search.errors import UsageError
from crdiff_search.records import DONE_STATES, RATIO_PREFIX
from crdiff_search.study_folder import TABLE_FILE

TIMING_COLUMNS = ("t_prune", "t_generate", "t_score", "t_restore", "t_total")
ASHA_SUFFIX = "+asha"

_REQUIRED = ("trial_index", "state", "score")
_NUMERIC = ("score", "score_delta", "sparsity", "n_images", *TIMING_COLUMNS)
# The column order of the tidy table; ratio columns go after "state".
_LEADING = (
    "method",
    "sampler",
    "seed",
    "early_stopping",
    "study",
    "trial_id",
    "trial_index",
    "trial_number",
    "state",
)
_TRAILING = (
    "score",
    "score_delta",
    "dense_score",
    "sparsity",
    "n_images",
    *TIMING_COLUMNS,
    "started_at",
    "finished_at",
    "elapsed_s",
    "cum_images",
    "cum_trial_s",
    "best_so_far",
    "error",
)


def ratio_columns(table: pd.DataFrame) -> list[str]:
    """The ``ratio.<group>`` columns of a table, in table order."""
    return [c for c in table.columns if str(c).startswith(RATIO_PREFIX)]


def running_best(scores: pd.Series, *, maximize: bool = True) -> pd.Series:
    """Best score so far; NaN (failed, pruned) entries carry the previous best forward."""
    best = scores.cummax() if maximize else scores.cummin()
    return best.ffill()


def method_label(sampler: str, early_stopping: bool) -> str:
    """How a (sampler, early stopping) arm is named in tables and plots: ``tpe`` or ``tpe+asha``."""
    return f"{sampler}{ASHA_SUFFIX}" if early_stopping else str(sampler)


def load_study_table(path: str | Path) -> pd.DataFrame:
    """Read one study's ``trials.parquet`` (a file, or a folder that holds one)."""
    path = Path(path)
    if path.is_dir():
        path = path / TABLE_FILE
    if not path.is_file():
        raise UsageError(f"no trial table at {path}")
    return pd.read_parquet(path)


def find_study_tables(roots: Iterable[str | Path]) -> list[Path]:
    """Every ``trials.parquet`` under the given folders (or the files themselves), sorted."""
    found: list[Path] = []
    for root in roots:
        root = Path(root)
        if root.is_file():
            found.append(root)
        elif root.is_dir():
            found.extend(sorted(root.rglob(TABLE_FILE)))
        else:
            raise UsageError(f"--collect: {root} is neither a trial table nor a folder")
    return sorted(set(found))


def _seconds(values: pd.Series) -> pd.Series:
    """Timestamps (datetimes, ISO strings or epoch seconds) as float epoch seconds."""
    if values.isna().all():
        return pd.Series(np.nan, index=values.index, dtype=float)
    if pd.api.types.is_numeric_dtype(values):
        return values.astype(float)
    stamps = pd.to_datetime(values, utc=True, errors="coerce", format="mixed")
    seconds = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    return seconds.astype(float)


def _has_early_stopping(study: pd.DataFrame) -> bool:
    return bool((study["state"] == "PRUNED").any())


def tidy_study(
    raw: pd.DataFrame,
    *,
    study: str | None = None,
    sampler: str | None = None,
    seed: int | None = None,
    early_stopping: bool | None = None,
    maximize: bool = True,
) -> pd.DataFrame:
    """One study's trial table in the tidy layout (see the module docstring).

    ``sampler``, ``seed`` and ``early_stopping`` override what the table says; without them the
    table's ``sampler`` and ``seed`` columns are used, and early stopping is inferred from
    pruned trials.
    """
    missing = [c for c in _REQUIRED if c not in raw.columns]
    if missing:
        raise UsageError(f"trial table lacks column(s) {missing}; it has {list(raw.columns)}")
    df = raw.copy()
    for col in _NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df else np.nan
    for col in ratio_columns(df):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    df["state"] = df["state"].astype(str).str.upper()
    df = df[df["state"].isin(DONE_STATES)].copy()
    df["trial_index"] = pd.to_numeric(df["trial_index"], errors="coerce").astype(int)
    df = df.sort_values("trial_index", kind="stable").reset_index(drop=True)

    if sampler is None:
        if "sampler" not in df or df["sampler"].isna().all():
            raise UsageError(f"study {study!r}: no sampler column; pass sampler=")
        sampler = str(df["sampler"].dropna().iloc[0])
    if seed is None:
        if "seed" not in df or df["seed"].isna().all():
            raise UsageError(f"study {study!r}: no seed column; pass seed=")
        seed = int(df["seed"].dropna().iloc[0])
    if early_stopping is None:
        early_stopping = _has_early_stopping(df)
    df["sampler"] = str(sampler)
    df["seed"] = int(seed)
    df["early_stopping"] = bool(early_stopping)
    df["method"] = method_label(str(sampler), bool(early_stopping))
    df["study"] = (
        study if study is not None else f"{df['method'].iloc[0] if len(df) else sampler}-s{seed}"
    )
    if "trial_id" not in df:
        df["trial_id"] = [f"{df['study'].iloc[0]}-{i}" for i in df["trial_index"]]
    df["trial_number"] = np.arange(1, len(df) + 1)
    df["dense_score"] = df["score"] - df["score_delta"]

    started = (
        _seconds(df["started_at"]) if "started_at" in df else pd.Series(np.nan, index=df.index)
    )
    finished = (
        _seconds(df["finished_at"]) if "finished_at" in df else pd.Series(np.nan, index=df.index)
    )
    df["started_at"] = started
    df["finished_at"] = finished
    # Elapsed wall time from the study's first start; trials may overlap (parallel workers),
    # so this is the clock a user waits on, not the sum of trial times.
    if len(df) and started.notna().any() and finished.notna().all():
        df["elapsed_s"] = finished - started.min()
    else:
        df["elapsed_s"] = df["t_total"].fillna(0.0).cumsum()
    df["cum_images"] = df["n_images"].fillna(0.0).cumsum()
    df["cum_trial_s"] = df["t_total"].fillna(0.0).cumsum()

    usable = df["score"].where(df["state"] == "COMPLETE")
    df["best_so_far"] = running_best(usable, maximize=maximize)
    if "error" not in df:
        df["error"] = None

    ratios = sorted(ratio_columns(df))
    extra = [c for c in df.columns if c not in (*_LEADING, *_TRAILING, *ratios)]
    return df[[*_LEADING, *ratios, *_TRAILING, *extra]]


def combine_studies(
    studies: Iterable[str | Path | pd.DataFrame] | Mapping[str, str | Path | pd.DataFrame],
    *,
    maximize: bool = True,
    labels: Mapping[str, Mapping[str, object]] | None = None,
) -> pd.DataFrame:
    """Stack study tables (paths or frames) into one tidy table, one row per finished trial.

    ``studies`` may be a mapping ``study id -> table``; ``labels`` maps a study id to keyword
    overrides for :func:`tidy_study` (``sampler``, ``seed``, ``early_stopping``).
    """
    items = studies.items() if isinstance(studies, Mapping) else enumerate(studies)
    frames = []
    for key, source in items:
        raw = source if isinstance(source, pd.DataFrame) else load_study_table(source)
        study = key if isinstance(key, str) else None
        if study is None and not isinstance(source, pd.DataFrame):
            study = Path(source).parent.name if Path(source).is_file() else Path(source).name
        overrides = dict((labels or {}).get(study, {})) if study is not None else {}
        frames.append(tidy_study(raw, study=study, maximize=maximize, **overrides))
    if not frames:
        raise UsageError("no study tables to combine")
    table = pd.concat(frames, ignore_index=True)
    duplicated = table.drop_duplicates(["study"]).duplicated(["method", "seed"])
    if duplicated.any():
        dup = table.drop_duplicates(["study"])[duplicated][["method", "seed"]].values.tolist()
        raise UsageError(f"several studies share the same (method, seed): {dup}")
    return order_table(table)


def order_table(table: pd.DataFrame, methods: Iterable[str] | None = None) -> pd.DataFrame:
    """Rows sorted by method (given order, else first appearance), seed and trial number."""
    order = list(dict.fromkeys([*(methods or []), *table["method"]]))
    rank = {m: i for i, m in enumerate(order)}
    key = table["method"].map(rank)
    return (
        table.assign(_m=key)
        .sort_values(["_m", "seed", "trial_number"], kind="stable")
        .drop(columns="_m")
        .reset_index(drop=True)
    )


def methods_of(table: pd.DataFrame) -> list[str]:
    """Method labels in table order."""
    return list(dict.fromkeys(table["method"]))


def save_table(table: pd.DataFrame, path: str | Path) -> Path:
    """Write the tidy table as parquet (the input of ``crdiff compare --report-only``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(path, index=False)
    return path


def load_table(path: str | Path) -> pd.DataFrame:
    """Read a tidy comparison table written by :func:`save_table`."""
    path = Path(path)
    if path.is_dir():
        path = path / "comparison.parquet"
    if not path.is_file():
        raise UsageError(f"no comparison table at {path}")
    table = pd.read_parquet(path)
    missing = [c for c in ("method", "seed", "trial_number", "best_so_far") if c not in table]
    if missing:
        raise UsageError(f"{path} is not a comparison table (missing {missing})")
    return table
