"""Final-best distributions, time to a target, and rank tests between methods.

Example::

    from crdiff_search.analysis import final_best, rank_tests, trials_to_reach
    final = final_best(table)                      # one row per (method, seed)
    kw, pairs = rank_tests(final)                  # Kruskal-Wallis + Mann-Whitney U per pair
    reach, target = trials_to_reach(table, share=0.95)
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from crdiff_search import records
from crdiff_search.analysis.table import ratio_columns, running_best


def final_best(table: pd.DataFrame, *, maximize: bool = True) -> pd.DataFrame:
    """One row per (method, seed): the best completed score, where it was found, what it cost.

    Columns ``method, seed, final_best, best_trial, trials, images, elapsed_s, ratio.*`` (the
    ratios of the best trial). ``final_best`` is NaN for a study with no completed trial.
    """
    ratios = ratio_columns(table)
    rows = []
    for (method, seed), study in table.groupby(["method", "seed"], sort=False):
        best = records.best_completed(study, "max" if maximize else "min", order="trial_number")
        row = {
            "method": method,
            "seed": seed,
            "final_best": np.nan,
            "best_trial": np.nan,
            "trials": len(study),
            "images": float(study["n_images"].fillna(0).sum()),
            "elapsed_s": float(study["elapsed_s"].max()),
        }
        if best is not None:
            row.update(final_best=float(best["score"]), best_trial=int(best["trial_number"]))
            row.update({c: float(best[c]) for c in ratios})
        else:
            row.update({c: np.nan for c in ratios})
        rows.append(row)
    return pd.DataFrame(rows)


def reach_target(
    table: pd.DataFrame,
    share: float = 0.95,
    *,
    maximize: bool = True,
    best: float | None = None,
    baseline: float | None = None,
) -> float:
    """The score that counts as reaching ``share`` of the best known score.

    Scores such as ImageReward can be negative, so the share is taken of the improvement over a
    baseline: ``baseline + share * (best - baseline)``. The baseline is the dense model's score
    (``score - score_delta``) when the table has it, otherwise 0 (a plain share of the best).
    ``best`` defaults to the best completed score anywhere in the table.
    """
    if not 0.0 < share <= 1.0:
        raise ValueError(f"share must be in (0, 1], got {share}")
    done = table.loc[table["state"] == "COMPLETE", "score"].dropna()
    if best is None:
        best = float(done.max() if maximize else done.min())
    if baseline is None:
        dense = (
            table["dense_score"].dropna() if "dense_score" in table else pd.Series([], dtype=float)
        )
        baseline = float(dense.median()) if len(dense) else 0.0
    return baseline + share * (best - baseline)


def trials_to_reach(
    table: pd.DataFrame,
    share: float = 0.95,
    *,
    maximize: bool = True,
    best: float | None = None,
    baseline: float | None = None,
) -> tuple[pd.DataFrame, float]:
    """Per (method, seed), the budget spent when the best-so-far first reached the target.

    Returns ``(frame, target)``; the frame has ``method, seed, reached, trials, images,
    elapsed_s`` with ``inf`` budgets for seeds that never reached it (so a median over seeds
    stays honest: it is ``inf`` when fewer than half the seeds got there).
    """
    target = reach_target(table, share, maximize=maximize, best=best, baseline=baseline)
    rows = []
    for (method, seed), study in table.groupby(["method", "seed"], sort=False):
        study = study.sort_values("trial_number", kind="stable")
        usable = study["score"].where(study["state"] == "COMPLETE")
        running = running_best(usable, maximize=maximize)
        # A hair of tolerance so that the trial that set the best counts as reaching it.
        tol = 1e-12 * max(1.0, abs(target))
        hit = (running >= target - tol) if maximize else (running <= target + tol)
        hit = hit.fillna(False).to_numpy(bool)
        if hit.any():
            first = study.iloc[int(np.argmax(hit))]
            rows.append(
                {
                    "method": method,
                    "seed": seed,
                    "reached": True,
                    "trials": float(first["trial_number"]),
                    "images": float(first["cum_images"]),
                    "elapsed_s": float(first["elapsed_s"]),
                }
            )
        else:
            rows.append(
                {
                    "method": method,
                    "seed": seed,
                    "reached": False,
                    "trials": math.inf,
                    "images": math.inf,
                    "elapsed_s": math.inf,
                }
            )
    return pd.DataFrame(rows), target


def _holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (family-wise error over all pairs)."""
    p = np.asarray(pvalues, float)
    m = len(p)
    order = np.argsort(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def _hodges_lehmann(a: np.ndarray, b: np.ndarray) -> float:
    """Median of all pairwise differences a_i - b_j: a robust 'by how much'."""
    return float(np.median(np.subtract.outer(a, b)))


def rank_tests(
    final: pd.DataFrame, *, maximize: bool = True, value: str = "final_best"
) -> tuple[dict[str, float], pd.DataFrame]:
    """Kruskal-Wallis over all methods, and a two-sided Mann-Whitney U test per pair.

    Returns ``(kruskal, pairs)``. ``kruskal`` has ``H``, ``p``, ``k`` (methods), ``n`` (values).
    ``pairs`` has one row per pair (a, b): sizes, medians, ``shift`` (Hodges-Lehmann estimate
    of a - b), ``U`` (for a), ``p``, ``p_holm`` (Holm-adjusted over the pairs), ``p_a_better``
    (probability that a random seed of a beats one of b, ties counted half: the common-language
    effect size) and ``rank_biserial`` (= 2 * p_a_better - 1, in [-1, 1]).
    """
    groups = {
        m: part[value].dropna().to_numpy(float) for m, part in final.groupby("method", sort=False)
    }
    groups = {m: v for m, v in groups.items() if len(v)}
    kruskal = {
        "H": math.nan,
        "p": math.nan,
        "k": len(groups),
        "n": int(sum(len(v) for v in groups.values())),
    }
    if len(groups) >= 2:
        values = np.concatenate(list(groups.values()))
        if np.ptp(values) == 0:
            kruskal.update(H=0.0, p=1.0)
        else:
            h, p = stats.kruskal(*groups.values())
            kruskal.update(H=float(h), p=float(p))
    rows = []
    for a, b in itertools.combinations(groups, 2):
        xa, xb = groups[a], groups[b]
        sa, sb = (xa, xb) if maximize else (-xa, -xb)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            u, p = stats.mannwhitneyu(sa, sb, alternative="two-sided")
        p_better = float(u) / (len(xa) * len(xb))
        rows.append(
            {
                "a": a,
                "b": b,
                "n_a": len(xa),
                "n_b": len(xb),
                "median_a": float(np.median(xa)),
                "median_b": float(np.median(xb)),
                "shift": _hodges_lehmann(xa, xb),
                "U": float(u),
                "p": float(p) if np.isfinite(p) else 1.0,
                "p_a_better": p_better,
                "rank_biserial": 2.0 * p_better - 1.0,
            }
        )
    pairs = pd.DataFrame(
        rows,
        columns=[
            "a",
            "b",
            "n_a",
            "n_b",
            "median_a",
            "median_b",
            "shift",
            "U",
            "p",
            "p_a_better",
            "rank_biserial",
        ],
    )
    pairs.insert(
        pairs.columns.get_loc("p") + 1, "p_holm", _holm(pairs["p"].to_numpy()) if len(pairs) else []
    )
    return kruskal, pairs


def smallest_p(n_a: int, n_b: int) -> float:
    """The smallest two-sided p-value an exact Mann-Whitney U test of these sizes can give
    (complete separation, no ties): how much certainty the number of seeds allows at best."""
    return min(1.0, 2.0 / math.comb(n_a + n_b, n_a))


def identical_methods(table: pd.DataFrame) -> list[tuple[str, str]]:
    """Pairs of methods that proposed exactly the same ratios, seed for seed and trial for trial
    (for example TPE within its random start-up trials and the random sampler)."""
    ratios = ratio_columns(table)
    if not ratios:
        return []
    keyed = {
        m: part.set_index(["seed", "trial_number"])[ratios].sort_index()
        for m, part in table.groupby("method", sort=False)
    }
    same = []
    for a, b in itertools.combinations(keyed, 2):
        x, y = keyed[a], keyed[b]
        if x.index.equals(y.index) and np.allclose(x.to_numpy(), y.to_numpy(), equal_nan=True):
            same.append((a, b))
    return same


def summary_table(
    table: pd.DataFrame,
    *,
    share: float = 0.95,
    maximize: bool = True,
    final: pd.DataFrame | None = None,
    reach: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per method: seeds, trials, final best (median, IQR, mean, min, max), how many
    seeds reached ``share`` of the best known score and the median budget to get there, and the
    median trial timings."""
    final = final_best(table, maximize=maximize) if final is None else final
    reach = trials_to_reach(table, share, maximize=maximize)[0] if reach is None else reach
    rows = []
    for method, part in final.groupby("method", sort=False):
        values = part["final_best"].dropna().to_numpy(float)
        got = reach[reach["method"] == method]
        trials = table[table["method"] == method]
        q25, med, q75 = np.quantile(values, [0.25, 0.5, 0.75]) if len(values) else (np.nan,) * 3
        rows.append(
            {
                "method": method,
                "seeds": int(part["seed"].nunique()),
                "trials": float(part["trials"].median()),
                "median": float(med),
                "q25": float(q25),
                "q75": float(q75),
                "mean": float(values.mean()) if len(values) else np.nan,
                "min": float(values.min()) if len(values) else np.nan,
                "max": float(values.max()) if len(values) else np.nan,
                "reached": f"{int(got['reached'].sum())}/{len(got)}",
                "trials_to_target": float(np.median(got["trials"])) if len(got) else np.nan,
                "images_to_target": float(np.median(got["images"])) if len(got) else np.nan,
                "failed": int((trials["state"] == "FAILED").sum()),
                "pruned": int((trials["state"] == "PRUNED").sum()),
                "images": float(part["images"].median()),
                "t_trial_s": float(trials["t_total"].median()),
                "wall_s": float(part["elapsed_s"].median()),
            }
        )
    return pd.DataFrame(rows)


def paired_difference(
    a: np.ndarray,
    b: np.ndarray,
    *,
    maximize: bool = True,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> dict[str, float]:
    """Mean of ``a - b`` over paired items (the same prompt and seed scored twice), with a
    bootstrap confidence interval and a Wilcoxon signed-rank test.

    Returns ``delta`` (mean of a - b), ``ci_low``/``ci_high`` (percentile bootstrap over the
    items, ``n_resamples`` draws, seeded), ``p`` (two-sided Wilcoxon signed-rank, zero
    differences kept by Pratt's rule; 1.0 when every difference is zero), and ``wins``/
    ``ties``/``losses`` (items where a is better / equal / worse, by ``maximize``).
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired scores need equal lengths, got {a.size} and {b.size}")
    if a.size == 0:
        raise ValueError("paired scores are empty")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence {confidence!r} must lie strictly between 0 and 1")
    diff = a - b
    better = diff if maximize else -diff
    out = {
        "delta": float(diff.mean()),
        "ci_low": float(diff.mean()),
        "ci_high": float(diff.mean()),
        "p": 1.0,
        "wins": int((better > 0).sum()),
        "ties": int((better == 0).sum()),
        "losses": int((better < 0).sum()),
        "n": int(diff.size),
    }
    if diff.size >= 2 and np.any(diff != 0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # normal approximation with ties
            out["p"] = float(stats.wilcoxon(diff, zero_method="pratt").pvalue)
    if diff.size >= 2 and np.ptp(diff) > 0:  # else every resample has the same mean
        res = stats.bootstrap(
            (diff,),
            np.mean,
            confidence_level=confidence,
            n_resamples=n_resamples,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
        out["ci_low"] = float(res.confidence_interval.low)
        out["ci_high"] = float(res.confidence_interval.high)
    return out
