"""The annealing chain replayed trial by trial, and its figure."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from crdiff_search.analysis.anneal_path import anneal_path_figure, chain_path
from crdiff_search.samplers import create_sampler


@pytest.fixture(scope="module")
def annealed():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = create_sampler("anneal", seed=3)
    study = optuna.create_study(direction="maximize", sampler=sampler)

    def objective(trial):
        x = trial.suggest_float("down", 0.0, 0.95)
        y = trial.suggest_float("up", 0.0, 0.95)
        return -((x - 0.8) ** 2) - (y - 0.2) ** 2

    study.optimize(objective, n_trials=18)
    return study, sampler


def test_chain_path_follows_the_chain(annealed):
    study, sampler = annealed
    path = chain_path(study, sampler)
    assert list(path["trial"]) == list(range(18))
    assert {"ratio.down", "ratio.up", "score", "accepted", "temperature"} <= set(path.columns)
    accepted = path[path["accepted"]]
    assert 1 <= len(accepted) < len(path)  # it moved, and it refused some moves
    # after each trial the chain stands on the last accepted point: its score is that point's
    for _, row in path.iterrows():
        last = accepted[accepted["trial"] <= row["trial"]]
        if not last.empty and row["restarts"] == 0:
            assert row["current_score"] == pytest.approx(last["score"].iloc[-1])
    # the best so far never falls, and equals the best score seen
    best = path["best_score"].to_numpy(float)
    assert np.all(np.diff(best) >= 0) and best[-1] == pytest.approx(path["score"].max())
    final = sampler.chain(study)
    assert path["temperature"].iloc[-1] == pytest.approx(final.temperature)


def test_anneal_path_figure_draws_three_panels(annealed, tmp_path):
    from crdiff_search.analysis.plots import save_png

    study, sampler = annealed
    fig = anneal_path_figure(chain_path(study, sampler), title="toy")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 3 and "path" in titles[2]
    assert fig.axes[2].get_xlabel().startswith(("down", "up"))
    out = save_png(fig, tmp_path / "path.png")
    assert out.stat().st_size > 5_000
