"""What simulated annealing did on a study: its chain replayed trial by trial, and a figure.

The annealing samplers keep no state: the chain is rebuilt from the finished trials. Replaying
it on the first ``n`` trials for every ``n`` gives, after each trial, the chain's current point
and score, its temperature and whether that trial was accepted (the chain moved to it), so the
path over the ratios can be drawn next to the scores and the cooling.

From the command line, on a study folder (its ``experiment.toml`` and ``optuna.db``)::

    python -m crdiff_search.analysis.anneal_path runs/testbed --out anneal_path.png
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

FINISHED = ("COMPLETE", "FAIL", "PRUNED")


def chain_path(study, sampler) -> pd.DataFrame:
    """One row per finished trial, by trial number: its ratios and score, and the chain right
    after it (``accepted``: the chain's current point is this trial's; ``current_score``,
    ``temperature``, ``best_score``, ``restarts``, ``reheats``). ``sampler`` is the study's
    annealing sampler (anything with a ``chain(study)`` method)."""
    import optuna

    trials = sorted(
        (t for t in study.get_trials(deepcopy=False) if t.state.name in FINISHED),
        key=lambda t: t.number,
    )
    rows = []
    for i, trial in enumerate(trials):
        prefix = optuna.create_study(direction=study.direction)
        prefix.add_trials(trials[: i + 1])
        state = sampler.chain(prefix)
        current = state.current or {}
        accepted = bool(current) and all(
            math.isclose(float(current[k]), float(trial.params.get(k, math.nan)), abs_tol=1e-9)
            for k in current
        )
        rows.append(
            {
                "trial": trial.number,
                **{f"ratio.{k}": float(v) for k, v in trial.params.items()},
                "score": trial.value if trial.state.name == "COMPLETE" else math.nan,
                "accepted": accepted,
                "current_score": state.current_score,
                "temperature": state.temperature,
                "best_score": state.best_score,
                "restarts": state.restarts,
                "reheats": state.reheats,
            }
        )
    return pd.DataFrame(rows)


def anneal_path_figure(path: pd.DataFrame, *, title: str = "", score_label: str = "score"):
    """Three panels: scores with accepted and rejected moves and the chain's current score;
    the temperature; the path over the two ratios that vary most."""
    ratios = [c for c in path.columns if c.startswith("ratio.")]
    pair = sorted(ratios, key=lambda c: -float(path[c].std() or 0.0))[:2]
    fig = Figure(figsize=(12.0, 3.9), layout="constrained")
    ax_score, ax_temp, ax_path = fig.subplots(1, 3, width_ratios=[1.2, 0.8, 1.0])
    acc, rej = path[path["accepted"]], path[~path["accepted"]]
    ax_score.scatter(rej["trial"], rej["score"], marker="x", color="0.55", s=22, label="rejected")
    ax_score.scatter(acc["trial"], acc["score"], color="tab:green", s=26, label="accepted")
    ax_score.step(path["trial"], path["current_score"], where="post", color="tab:green", lw=1.2,
                  alpha=0.7, label="chain's current score")  # fmt: skip
    ax_score.step(path["trial"], path["best_score"], where="post", color="tab:blue", ls="--",
                  lw=1.2, label="best so far")  # fmt: skip
    ax_score.set_xlabel("trial")
    ax_score.set_ylabel(score_label)
    ax_score.set_title("Each trial's score; accepted moves in green", fontsize=10)
    ax_score.legend(fontsize=8, loc="lower right")
    ax_score.grid(alpha=0.3)
    temp = path["temperature"].astype(float)
    ax_temp.step(path["trial"], temp, where="post", color="tab:red")
    if (temp > 0).all():
        ax_temp.set_yscale("log")
    for t in path.loc[path["reheats"].diff().fillna(0) > 0, "trial"]:
        ax_temp.axvline(t, color="tab:orange", ls=":", lw=1)
    for t in path.loc[path["restarts"].diff().fillna(0) > 0, "trial"]:
        ax_temp.axvline(t, color="tab:purple", ls="--", lw=1)
    ax_temp.set_xlabel("trial")
    ax_temp.set_ylabel("temperature")
    ax_temp.set_title("Temperature (dotted: reheat, dashed: restart)", fontsize=10)
    ax_temp.grid(alpha=0.3)
    if len(pair) == 2:
        gx, gy = pair
        ax_path.scatter(rej[gx], rej[gy], marker="x", color="0.6", s=20, label="rejected")
        ax_path.plot(acc[gx], acc[gy], color="tab:green", lw=1, alpha=0.6)
        points = ax_path.scatter(acc[gx], acc[gy], c=acc["trial"], cmap="viridis", s=30,
                                 zorder=3, label="accepted (colour: trial)")  # fmt: skip
        best = path.loc[path["score"].idxmax()] if path["score"].notna().any() else None
        if best is not None:
            ax_path.scatter([best[gx]], [best[gy]], marker="*", s=180, color="gold",
                            edgecolors="black", zorder=4, label="best")  # fmt: skip
        fig.colorbar(points, ax=ax_path, label="trial")
        ax_path.set_xlabel(f"{gx.removeprefix('ratio.')} ratio (share pruned)")
        ax_path.set_ylabel(f"{gy.removeprefix('ratio.')} ratio (share pruned)")
        ax_path.legend(fontsize=8, loc="best")
        ax_path.grid(alpha=0.3)
        ax_path.set_title("The chain's path over two ratios", fontsize=10)
    else:
        ax_path.set_axis_off()
    fig.suptitle(title or "What the annealing chain did", fontsize=11)
    return fig


def study_path(folder: str | Path) -> tuple[pd.DataFrame, str]:
    """The chain path of a study folder (its experiment.toml and optuna.db) and a title."""
    import optuna

    from crdiff_search.config import load_experiment
    from crdiff_search.runner.study import build_sampler
    from crdiff_search.study_folder import CONFIG_FILE, OPTUNA_DB

    folder = Path(folder)
    config = load_experiment(folder / CONFIG_FILE)
    if not config.search.sampler.startswith("anneal"):
        raise SystemExit(f"{folder}: sampler {config.search.sampler!r} is not an annealing one")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{folder / OPTUNA_DB}")
    path = chain_path(study, build_sampler(config))
    title = (
        f"{config.study}: {config.search.sampler} (seed {config.search.seed}) at "
        f"{config.resolution}, {len(path)} trials"
    )
    return path, title


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Draw what the annealing chain of a study did.")
    parser.add_argument("study", help="a study folder (experiment.toml and optuna.db)")
    parser.add_argument("--out", default="anneal_path.png")
    args = parser.parse_args(argv)
    from crdiff_search.analysis.plots import save_png

    path, title = study_path(args.study)
    save_png(anneal_path_figure(path, title=title), args.out)
    accepted = int(path["accepted"].sum())
    print(
        f"{args.out}: {len(path)} trials, {accepted} accepted, best {np.nanmax(path['score']):.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
