"""Which trial to keep: the best search score, or the best *smoothed* search score?

A study's search score is the mean over its prompts, so its best trial is partly the luckiest
one: a chain that refines around one point (annealing) collects many near-equal candidates and
keeps the one whose noise ran highest, and that pick then scores lower on new prompts. This
measures a simple remedy on a comparison's studies: rank the completed trials by the
kernel-weighted mean of the scores around each (a Gaussian in ratio units of bandwidth ``h``,
the trial itself included), keep the best of that, and score both picks on the held-out prompts
of the study's experiment (memoised by ratios, seeded from ``tables/picks.csv`` and
``tables/pick_cost.csv``). ``--tune-seeds`` choose the bandwidth (the one with the highest mean
paired gain over the plain pick there); the other seeds report it.

Run::

    python -m crdiff_search.analysis.pick_rules docs/compare-24x24 --bandwidths 0.05,0.1,0.2
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

RULES = "tables/pick_rules.csv"
SUMMARY = "tables/pick_rules_summary.csv"


def smoothed_scores(ratios: np.ndarray, scores: np.ndarray, bandwidth: float) -> np.ndarray:
    """Kernel-weighted mean of ``scores`` around each row of ``ratios`` (Gaussian weights of
    bandwidth ``bandwidth`` in ratio units; every point weighs itself by 1)."""
    ratios = np.asarray(ratios, float)
    scores = np.asarray(scores, float)
    if bandwidth <= 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
    d2 = ((ratios[:, None, :] - ratios[None, :, :]) ** 2).sum(-1)
    w = np.exp(-d2 / (2 * bandwidth**2))
    return (w @ scores) / w.sum(1)


def picks_by_rule(
    table: pd.DataFrame, groups: Sequence[str], bandwidths: Sequence[float]
) -> pd.DataFrame:
    """One row per (study, rule): rule ``best`` keeps the highest search score, ``h=<b>`` the
    highest smoothed score (ties: the earlier trial)."""
    cols = [f"ratio.{g}" for g in groups]
    rows = []
    for study, sub in table.groupby("study", sort=False):
        done = sub[sub["state"] == "COMPLETE"].sort_values("trial_index")
        if done.empty:
            continue
        x = done[cols].to_numpy(float)
        y = done["score"].to_numpy(float)
        rules = {"best": y}
        rules.update({f"h={b:g}": smoothed_scores(x, y, b) for b in bandwidths})
        for rule, values in rules.items():
            i = int(np.argmax(values))
            rows.append(
                {
                    "study": study,
                    "method": done["method"].iloc[0],
                    "seed": int(done["seed"].iloc[0]),
                    "rule": rule,
                    "pick_trial": int(done["trial_index"].iloc[i]),
                    "search_score": float(y[i]),
                    "smoothed_score": float(values[i]),
                    **{c: float(x[i, k]) for k, c in enumerate(cols)},
                }
            )
    return pd.DataFrame(rows)


def paired_versus_best(picks: pd.DataFrame) -> pd.DataFrame:
    """Per rule other than ``best``: its held-out gain minus the plain pick's, per study
    (mean, how many studies better / worse / same pick, Wilcoxon signed-rank p)."""
    base = picks[picks["rule"] == "best"].set_index("study")["heldout_gain"]
    rows = []
    for rule, sub in picks[picks["rule"] != "best"].groupby("rule", sort=False):
        diff = sub.set_index("study")["heldout_gain"] - base.reindex(sub["study"]).to_numpy()
        moved = diff[diff != 0]
        p = float(stats.wilcoxon(moved).pvalue) if len(moved) >= 2 else float("nan")
        rows.append(
            {
                "rule": rule,
                "studies": len(diff),
                "mean_diff": float(diff.mean()),
                "better": int((diff > 0).sum()),
                "worse": int((diff < 0).sum()),
                "same_pick": int((diff == 0).sum()),
                "wilcoxon_p": p,
            }
        )
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> int:
    from crdiff_search.analysis.pick_cost import (
        COSTS,
        comparison_parser,
        load_comparison,
        load_gain_memo,
        score_picks,
    )

    parser = comparison_parser("python -m crdiff_search.analysis.pick_rules", __doc__)
    parser.add_argument("--bandwidths", default="0.05,0.1,0.2")
    parser.add_argument("--tune-seeds", default="0,1,2,3", help="seeds that choose the bandwidth")
    args = parser.parse_args(argv)
    bandwidths = [float(b) for b in args.bandwidths.split(",")]
    tune = {int(s) for s in args.tune_seeds.split(",") if s.strip()}

    from crdiff_search.analysis.compare import PICKS_TABLE
    from crdiff_search.analysis.heldout import HeldOut

    folder = Path(args.compare_dir)
    table, manifest, groups = load_comparison(folder)
    picks = picks_by_rule(table, groups, bandwidths)
    memo = load_gain_memo(
        [
            (folder / COSTS, "heldout_gain"),
            (folder / PICKS_TABLE, "heldout_delta"),
            (folder / RULES, "heldout_gain"),
        ],
        groups,
    )
    picks["heldout_gain"] = score_picks(
        picks,
        groups,
        memo,
        lambda: HeldOut.at(
            manifest["context"]["resolution"], experiment=args.experiment, n_prompts=args.prompts
        ),
        label=lambda r: f"{r['study']} {r['rule']}",
    )
    (folder / RULES).parent.mkdir(parents=True, exist_ok=True)
    picks.to_csv(folder / RULES, index=False)  # full precision: the ratios are memo keys

    tuned = paired_versus_best(picks[picks["seed"].isin(tune)])
    chosen = tuned.loc[tuned["mean_diff"].idxmax(), "rule"]
    report = paired_versus_best(picks[~picks["seed"].isin(tune)])
    summary = pd.concat(
        [tuned.assign(seeds="tune"), report.assign(seeds="report")], ignore_index=True
    )
    summary["chosen"] = summary["rule"] == chosen
    summary.to_csv(folder / SUMMARY, index=False, float_format="%.6g")
    per_method = (
        picks[picks["rule"].isin(["best", chosen]) & ~picks["seed"].isin(tune)]
        .pivot_table(index="method", columns="rule", values="heldout_gain", aggfunc="median")
        .reindex(dict.fromkeys(picks["method"]))
    )
    print(f"bandwidth chosen on seeds {sorted(tune)}: {chosen}")
    print(summary.to_string(index=False))
    print("median held-out gain on the report seeds, per method:")
    print(per_method.to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
