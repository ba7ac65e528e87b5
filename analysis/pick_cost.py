"""What a user pays: the cost at which each arm's pick first reaches 95 % of the best held-out
gain any arm found.

A comparison's table (``comparison.parquet``) has every trial's ratios; the pick a user would
make after ``b`` trials is the best search score among the first ``b`` (by trial index). This
scores the pick of every study at each budget of ``--budgets`` on the held-out prompts of the
study's experiment (memoised by ratios: picks shared by several studies are scored once; the
dense model once), and reports per arm the median images and wall time until the pick's
held-out gain first reaches ``--share`` of the best held-out gain of any pick.

Run::

    python -m crdiff_search.analysis.pick_cost docs/compare-24x24 --budgets 5,10,20,40
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

COSTS = "tables/pick_cost.csv"
SUMMARY = "tables/pick_cost_summary.csv"


def picks_at(table: pd.DataFrame, budgets: Sequence[int], groups: Sequence[str]) -> pd.DataFrame:
    """One row per (study, budget): the pick's trial, ratios, and the images and wall time the
    study had spent on its first ``budget`` trials."""
    rows = []
    for study, sub in table.groupby("study", sort=False):
        sub = sub.sort_values("trial_index")
        for b in budgets:
            first = sub[sub["trial_index"] < b]
            done = first[first["state"] == "COMPLETE"]
            if done.empty or len(first) < b:
                continue
            best = done.loc[done["score"].idxmax()]
            rows.append(
                {
                    "study": study,
                    "method": best["method"],
                    "seed": int(best["seed"]),
                    "budget": b,
                    "pick_trial": int(best["trial_index"]),
                    "search_score": float(best["score"]),
                    "images": int(first["n_images"].sum()),
                    "wall_s": float(first["elapsed_s"].max()),  # since the study began
                    **{f"ratio.{g}": float(best[f"ratio.{g}"]) for g in groups},
                }
            )
    return pd.DataFrame(rows)


def ratio_key(row: Mapping[str, Any], groups: Sequence[str]) -> tuple:
    """A candidate's identity for the memo: its ratios, rounded to 6 decimals."""
    return tuple(round(float(row[f"ratio.{g}"]), 6) for g in groups)


def load_gain_memo(
    sources: Sequence[tuple[Path, str]], groups: Sequence[str]
) -> dict[tuple, float]:
    """Held-out gains already measured, by ratios: from each (csv, column) that exists."""
    memo: dict[tuple, float] = {}
    for path, column in sources:
        if Path(path).is_file():
            for r in pd.read_csv(path).to_dict("records"):
                memo[ratio_key(r, groups)] = float(r[column])
    return memo


def score_picks(
    picks: pd.DataFrame,
    groups: Sequence[str],
    memo: dict[tuple, float],
    make_held: Callable[[], Any],
    *,
    label: Callable[[Mapping[str, Any]], str],
) -> list[float]:
    """The held-out gain over the dense model of every row's ratios, scoring only those not in
    ``memo`` (which it fills); the held-out set is built on the first miss only."""
    held = None
    gains = []
    for i, r in enumerate(picks.to_dict("records")):
        key = ratio_key(r, groups)
        if key not in memo:
            if held is None:
                held = make_held()
            print(f"[{i + 1}/{len(picks)}] {label(r)}", file=sys.stderr, flush=True)
            memo[key] = held.versus({g: r[f"ratio.{g}"] for g in groups})["delta"]
        gains.append(memo[key])
    return gains


def cost_summary(
    picks: pd.DataFrame, shares: Sequence[float], budgets: Sequence[int]
) -> pd.DataFrame:
    """Per (share, method): how many seeds' picks reached ``share`` of the best held-out gain of
    any pick, and the median trials, images and wall time at which they first did; and the
    median held-out gain of the picks at the largest budget."""
    rows = []
    for share in shares:
        target = share * picks["heldout_gain"].max()
        for method, sub in picks.groupby("method", sort=False):
            reached = []
            for _, s in sub.groupby("seed"):
                hit = s[s["heldout_gain"] >= target].sort_values("budget")
                if len(hit):
                    reached.append(hit.iloc[0])

            def median(column: str, reached=reached) -> float | None:
                return float(np.median([h[column] for h in reached])) if reached else None

            rows.append(
                {
                    "share": share,
                    "target_gain": target,
                    "method": method,
                    "seeds": sub["seed"].nunique(),
                    "reached": len(reached),
                    "median_trials": median("budget"),
                    "median_images": median("images"),
                    "median_wall_s": median("wall_s"),
                    "final_median_gain": float(
                        sub[sub["budget"] == max(budgets)]["heldout_gain"].median()
                    ),
                }
            )
    return pd.DataFrame(rows)


def comparison_parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """The arguments every held-out measurement of a comparison takes: the folder, the number
    of held-out prompts and the comparison's experiment file."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    parser.add_argument("compare_dir", help="a `crdiff compare` folder")
    parser.add_argument("--prompts", type=int, default=128, help="held-out prompts (128)")
    parser.add_argument("--experiment", default=None, help="the comparison's experiment file")
    return parser


def load_comparison(folder: Path) -> tuple[pd.DataFrame, dict, list[str]]:
    """A comparison folder's trial table, manifest and ratio groups."""
    from crdiff_search.analysis.compare import MANIFEST, TABLE

    table = pd.read_parquet(folder / TABLE)
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    groups = [c[len("ratio.") :] for c in table.columns if c.startswith("ratio.")]
    return table, manifest, groups


def main(argv: Sequence[str] | None = None) -> int:
    parser = comparison_parser("python -m crdiff_search.analysis.pick_cost", __doc__)
    parser.add_argument("--budgets", default="5,10,20,40")
    parser.add_argument(
        "--share",
        default="0.95",
        help="target(s): share(s) of the best held-out gain of any pick, e.g. 0.75,0.95",
    )
    args = parser.parse_args(argv)

    from crdiff_search.analysis.heldout import HeldOut

    folder = Path(args.compare_dir)
    table, manifest, groups = load_comparison(folder)
    resolution = manifest["context"]["resolution"]
    budgets = [int(b) for b in args.budgets.split(",")]
    shares = [float(x) for x in args.share.split(",")]
    if not all(0 < x <= 1 for x in shares):
        parser.error(f"--share: each share must be in (0, 1], got {args.share}")
    picks = picks_at(table, budgets, groups)
    path = folder / COSTS
    memo = load_gain_memo([(path, "heldout_gain")], groups)  # earlier runs: their scores are kept
    picks["heldout_gain"] = score_picks(
        picks,
        groups,
        memo,
        lambda: HeldOut.at(resolution, experiment=args.experiment, n_prompts=args.prompts),
        label=lambda r: f"{r['study']} at {r['budget']} trials",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    picks.to_csv(path, index=False)  # full precision: the ratios are the memo's keys
    summary = cost_summary(picks, shares, budgets)
    summary.to_csv(folder / SUMMARY, index=False, float_format="%.6g")
    print(f"best held-out gain of any pick: {picks['heldout_gain'].max():+.4f}")
    print(summary.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
