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
from collections.abc import Sequence
from pathlib import Path

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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m crdiff_search.analysis.pick_cost", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("compare_dir", help="a `crdiff compare` folder")
    parser.add_argument("--budgets", default="5,10,20,40")
    parser.add_argument("--share", type=float, default=0.95)
    parser.add_argument("--prompts", type=int, default=128, help="held-out prompts (128)")
    parser.add_argument("--experiment", default=None, help="the comparison's experiment file")
    args = parser.parse_args(argv)

    from crdiff_search.analysis.heldout import HeldOut

    folder = Path(args.compare_dir)
    table = pd.read_parquet(folder / "comparison.parquet")
    manifest = json.loads((folder / "compare.json").read_text())
    resolution = manifest["context"]["resolution"]
    groups = [c[len("ratio.") :] for c in table.columns if c.startswith("ratio.")]
    budgets = [int(b) for b in args.budgets.split(",")]
    picks = picks_at(table, budgets, groups)
    held = HeldOut.at(resolution, experiment=args.experiment, n_prompts=args.prompts)
    path = folder / COSTS
    memo: dict[tuple, float] = {}
    if path.is_file():  # earlier runs: their scores are kept
        for r in pd.read_csv(path).to_dict("records"):
            memo[tuple(round(r[f"ratio.{g}"], 6) for g in groups)] = r["heldout_gain"]
    gains = []
    for i, r in enumerate(picks.to_dict("records")):
        key = tuple(round(r[f"ratio.{g}"], 6) for g in groups)
        if key not in memo:
            print(f"[{i + 1}/{len(picks)}] {r['study']} at {r['budget']} trials", file=sys.stderr)
            memo[key] = held.versus({g: r[f"ratio.{g}"] for g in groups})["delta"]
        gains.append(memo[key])
    picks["heldout_gain"] = gains
    path.parent.mkdir(parents=True, exist_ok=True)
    picks.to_csv(path, index=False, float_format="%.6g")
    target = args.share * picks["heldout_gain"].max()
    rows = []
    for method, sub in picks.groupby("method", sort=False):
        per_seed = []
        for _, s in sub.groupby("seed"):
            hit = s[s["heldout_gain"] >= target].sort_values("budget")
            per_seed.append(hit.iloc[0] if len(hit) else None)
        reached = [h for h in per_seed if h is not None]
        rows.append(
            {
                "method": method,
                "seeds": len(per_seed),
                "reached": len(reached),
                "median_trials": float(np.median([h["budget"] for h in reached]))
                if reached
                else None,
                "median_images": float(np.median([h["images"] for h in reached]))
                if reached
                else None,
                "median_wall_s": float(np.median([h["wall_s"] for h in reached]))
                if reached
                else None,
                "final_median_gain": float(
                    sub[sub["budget"] == max(budgets)]["heldout_gain"].median()
                ),
            }
        )
    summary = pd.DataFrame(rows)
    summary.to_csv(folder / SUMMARY, index=False, float_format="%.6g")
    print(f"target: {args.share:.0%} of the best held-out gain {picks['heldout_gain'].max():+.4f}")
    print(summary.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
