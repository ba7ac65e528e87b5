"""Studies on a real (local) Ray: concurrency, worker reuse, the dense trial, the trial table,
early stopping over prompt chunks, and retried-then-failed trials.

One Ray instance serves the module; trials are tiny (random-init pipeline, 2 prompts, 2 steps,
32x32) and scored by a stand-in objective defined here. Ray workers import this module (it is
the experiment's plugin), which registers the stand-in with ``register_objective``.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crdiff_search.config import ExperimentConfig
from crdiff_search.model_info import check_model
from crdiff_search.objectives import register_objective
from crdiff_search.objectives.base import Objective

PLUGIN = Path(__file__).stem


class RecordingBrightness(Objective):
    """Mean brightness; logs every call to ``log`` (pid, time, images); can sleep and can raise
    on given call numbers (counted across processes through the log)."""

    name = "test-recording-brightness"

    def __init__(self, log: str = "", delay: float = 0.0, fail_calls: tuple = ()):
        self.log, self.delay, self.fail_calls = log, delay, tuple(fail_calls)

    def score(self, images, prompts):
        call = 0
        if self.log:
            with open(self.log, "a+") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                f.seek(0)
                call = len(f.read().splitlines()) + 1
                f.write(json.dumps({"pid": os.getpid(), "t": time.time(), "n": len(images)}) + "\n")
        if call in self.fail_calls:
            raise RuntimeError(f"injected failure on call {call}")
        time.sleep(self.delay)
        return np.array([np.asarray(im, dtype=np.float64).mean() / 255.0 for im in images])


register_objective("test-recording-brightness", RecordingBrightness, replace=True)

CONTRACT_COLUMNS = [
    "trial_id",
    "trial_index",
    "state",
    "score",
    "score_delta",
    "sparsity",
    "n_images",
    "t_prune",
    "t_generate",
    "t_score",
    "t_total",
    "error",
    "sampler",
    "seed",
    "started_at",
    "finished_at",
]


def tiny_config(model: Path, out: Path, **changes) -> ExperimentConfig:
    data = {
        "study": out.name,
        "resolution": "32x32",
        "output": str(out),
        "plugins": [PLUGIN],
        "model": {"source": str(model), "steps": 2, "guidance": 1.0, "device": "cpu"},
        "prompts": {"items": ["a red cat", "a blue bus"], "seeds": 0},
        "objective": {"name": "test-recording-brightness", "options": {"log": str(out) + ".calls"}},
        "search": {"sampler": "random", "trials": 6, "concurrency": 2, "seed": 0},
        "tracking": {"enabled": False},
    }
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    config = ExperimentConfig.from_dict(data)
    check_model(config)
    return config


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from crdiff_search.testing import tiny_sd_pipeline

    folder = tmp_path_factory.mktemp("model") / "tiny"
    tiny_sd_pipeline().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def concurrent_study(ray_session, tiny_model, tmp_path_factory):
    """6 trials, 2 at a time, 2 prompt chunks with early stopping on."""
    from crdiff_search.runner import run_study

    out = tmp_path_factory.mktemp("studies") / "concurrent"
    config = tiny_config(
        tiny_model,
        out,
        **{
            "prompts.chunk_size": 1,
            "search.early_stopping": True,
            "objective.options": {"log": str(out) + ".calls", "delay": 0.4},
        },
    )
    t0 = time.perf_counter()
    result = run_study(config, out_dir=out, progress=False)
    wall = time.perf_counter() - t0
    return config, result, pd.read_parquet(result.table_path), wall


def test_table_rows_and_columns(concurrent_study):
    config, result, table, _ = concurrent_study
    assert len(table) == config.search.trials == result.n_trials
    assert table["trial_id"].is_unique
    assert sorted(table["trial_index"]) == list(range(config.search.trials))
    groups = ["down", "mid", "up"]
    assert set(CONTRACT_COLUMNS + [f"ratio.{g}" for g in groups]) <= set(table.columns)
    assert set(table["state"]) <= {"COMPLETE", "PRUNED"}
    assert (table["sampler"] == "random").all() and (table["seed"] == 0).all()
    assert str(table["started_at"].dtype).startswith("datetime64")
    assert (table["finished_at"] > table["started_at"]).all()
    assert (table["t_total"] >= table["t_generate"] + table["t_score"] - 1e-6).all()
    assert (table["t_score"] >= 0.4 * table["n_images"] - 0.05).all()  # the objective's delay
    complete = table[table["state"] == "COMPLETE"]
    assert (complete["n_images"] == 2).all() and (complete["chunk"] == 2).all()
    assert (table.loc[table["state"] == "PRUNED", "n_images"] == 1).all()
    best = complete.loc[complete["score"].idxmax()]
    assert result.best_score == pytest.approx(best["score"])
    assert result.best_ratios == {g: pytest.approx(best[f"ratio.{g}"]) for g in groups}


def test_optuna_db_holds_every_finished_trial(concurrent_study):
    """DIR/optuna.db: the study for optuna.load_study and its tools, one trial per finished
    row of trials.parquet, with the same scores and states."""
    import optuna

    config, result, table, _ = concurrent_study
    study = optuna.load_study(
        study_name=config.study, storage=f"sqlite:///{result.table_path.parent / 'optuna.db'}"
    )
    trials = {t.user_attrs["trial_index"]: t for t in study.get_trials()}
    finished = table[table["state"].isin(["COMPLETE", "FAILED", "PRUNED"])]
    assert len(trials) == len(finished) == len(table)
    states = {"COMPLETE": "COMPLETE", "PRUNED": "PRUNED", "FAILED": "FAIL"}
    for row in finished.to_dict("records"):
        trial = trials[row["trial_index"]]
        assert trial.state.name == states[row["state"]]
        if row["state"] == "COMPLETE":
            assert trial.value == pytest.approx(row["score"])
        assert trial.params == {g: pytest.approx(row[f"ratio.{g}"]) for g in trial.params}
    assert trials[0].params == {g: 0.0 for g in trials[0].params}  # the dense trial fits
    assert {"PRUNED", "COMPLETE"} <= {t.state.name for t in trials.values()}


def test_trial_zero_is_dense(concurrent_study):
    _, result, table, _ = concurrent_study
    dense = table[table["trial_index"] == 0].iloc[0]
    assert dense["state"] == "COMPLETE"  # early stopping never stops the baseline
    assert [dense[f"ratio.{g}"] for g in ("down", "mid", "up")] == [0.0, 0.0, 0.0]
    assert dense["score_delta"] == 0.0 and dense["sparsity"] == 0.0
    assert result.dense_score == pytest.approx(dense["score"])
    others = table[(table["trial_index"] > 0) & (table["state"] == "COMPLETE")]
    assert len(others) >= 1
    assert (others["sparsity"] > 0).all()
    np.testing.assert_allclose(others["score_delta"], others["score"] - dense["score"], atol=1e-9)


def test_trials_overlap_with_concurrency_2(concurrent_study):
    _, _, table, _ = concurrent_study
    assert table["worker_pid"].nunique() == 2
    spans = sorted(zip(table["started_at"], table["finished_at"], strict=True))
    overlaps = sum(
        b_start < a_end for (_, a_end), (b_start, _) in zip(spans, spans[1:], strict=False)
    )
    assert overlaps >= 1, spans


def test_one_pipeline_load_per_worker(concurrent_study):
    _, _, table, _ = concurrent_study
    assert len(table) >= 4
    assert (table["worker_loads"] == 1).all()
    # Each worker paid its load once, on its first trial only.
    loaded = table[table["t_load"] > 0]
    assert sorted(loaded["worker_pid"]) == sorted(table["worker_pid"].unique())


def test_per_chunk_reports(concurrent_study):
    _, result, table, _ = concurrent_study
    # Ray's own results: one report per prompt chunk for a trial that ran to the end.
    dense_id = table.loc[table["trial_index"] == 0, "trial_id"].iloc[0]
    trial_dir = next(p for p in result.results_dir.iterdir() if dense_id in p.name)
    reports = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    assert [r["n_images"] for r in reports] == [1, 2]


def test_failing_trial_is_retried_then_recorded(ray_session, tiny_model, tmp_path):
    from crdiff_search.runner import run_study

    out = tmp_path / "flaky"
    # One worker, so calls are ordered: 1 dense, 2 trial 1, 3 trial 2 (fails), 4 its retry
    # (fails again, in the trial or in a new worker's dense baseline), then trial 3 succeeds.
    config = tiny_config(
        tiny_model,
        out,
        **{
            "search.trials": 4,
            "search.concurrency": 1,
            "search.retries": 1,
            "objective.options": {"log": str(out) + ".calls", "fail_calls": [3, 4]},
        },
    )
    result = run_study(config, out_dir=out, progress=False)
    table = pd.read_parquet(result.table_path).set_index("trial_index")
    assert len(table) == 4
    assert table.loc[2, "state"] == "FAILED"
    assert "RuntimeError: injected failure on call 4" in table.loc[2, "error"]
    assert table.loc[2, "attempts"] == 2  # the first try and one retry
    assert list(table.loc[[0, 1, 3], "state"]) == ["COMPLETE"] * 3
    assert result.states == {"COMPLETE": 3, "FAILED": 1}


def test_paper_preset_ends_the_study_when_its_chain_stops(ray_session, tiny_model, tmp_path):
    """anneal-paper reads search.trials as its iterations (3): the dense trial 0, the start
    evaluation and 3 moves run (5 trials), then the chain stops and so does the study,
    complete, below its most trials (dense + start + 3 + 2 restarts = 7)."""
    from crdiff_search.runner import run_study
    from crdiff_search.runner.study import study_budget, study_complete
    from crdiff_search.study_folder import StudyFolder

    out = tmp_path / "paper"
    config = tiny_config(
        tiny_model,
        out,
        **{
            "search.sampler": "anneal-paper",
            "search.trials": 3,
            "search.concurrency": 1,
            "ratios.low": 0.1,
            "ratios.high": 0.8,
        },
    )
    assert study_budget(config) == 7
    result = run_study(config, out_dir=out, progress=False)
    table = pd.read_parquet(result.table_path).sort_values("trial_index")
    assert len(table) == 5 and set(table["state"]) == {"COMPLETE"}
    assert result.complete and result.sampler_stopped and result.budget == 7
    start = table[table["trial_index"] == 1][[c for c in table if c.startswith("ratio.")]]
    assert np.allclose(start.to_numpy(), 0.3)
    stop = json.loads(StudyFolder(out).stop_file.read_text())
    assert stop["iterations"] == 3 and stop["trials"] == 5
    assert study_complete(out, config)


def test_failed_images_score_the_failure_value(ray_session, tiny_model, tmp_path):
    """objective.failed_image_score: a chunk whose scoring fails is scored image by image and
    the image that fails counts the failure value in the mean; the trial completes."""
    from crdiff_search.runner import run_study

    out = tmp_path / "failed-images"
    # One worker, calls in order: 1 dense (2 images), 2 trial 1 (fails as a batch), 3 its first
    # image alone (fails: -2.0), 4 its second image alone, 5 trial 2.
    config = tiny_config(
        tiny_model,
        out,
        **{
            "search.trials": 3,
            "search.concurrency": 1,
            "search.retries": 0,
            "objective.failed_image_score": -2.0,
            "objective.options": {"log": str(out) + ".calls", "fail_calls": [2, 3]},
        },
    )
    result = run_study(config, out_dir=out, progress=False)
    table = pd.read_parquet(result.table_path).set_index("trial_index")
    assert list(table["state"]) == ["COMPLETE"] * 3
    assert list(table["n_failed_images"]) == [0, 1, 0]
    calls = [json.loads(line) for line in Path(str(out) + ".calls").read_text().splitlines()]
    assert [c["n"] for c in calls] == [2, 2, 1, 1, 2]
    # Trial 1's score: the mean of -2.0 and its second image's brightness (in [0, 1]).
    assert -1.0 <= table.loc[1, "score"] <= -0.5


def test_mlflow_reads_as_mlflow_users_expect(ray_session, tiny_model, tmp_path):
    """The classic runs view, trial runs named by index (tagged with it and Ray's id), the
    study run's step metrics (step = trial index) and the trial table as an artifact."""
    from mlflow.tracking import MlflowClient

    from crdiff_search.runner import run_study

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "tracked"
    config = tiny_config(
        tiny_model, out, **{"search.trials": 4, "tracking": {"enabled": True, "uri": uri}}
    )
    result = run_study(config, out_dir=out, progress=False)
    table = pd.read_parquet(result.table_path)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(config.tracking_experiment)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([experiment.experiment_id])
    trials = {
        r.data.tags["crdiff.trial_id"]: r for r in runs if r.data.tags["crdiff.kind"] == "trial"
    }
    assert len(trials) == len(table) == 4
    for row in table.to_dict("records"):
        run = trials[row["trial_id"]]
        assert run.info.run_name == f"trial-{row['trial_index']:04d}"
        assert run.data.tags["crdiff.trial_index"] == str(row["trial_index"])
    (study,) = [r for r in runs if r.data.tags["crdiff.kind"] == "study"]
    scores = client.get_metric_history(study.info.run_id, "trial_score")
    assert sorted(m.step for m in scores) == sorted(table["trial_index"])
    by_step = {m.step: m.value for m in scores}
    for row in table.to_dict("records"):
        assert by_step[row["trial_index"]] == pytest.approx(row["score"])
    best = sorted(client.get_metric_history(study.info.run_id, "best_so_far"), key=lambda m: m.step)
    assert [m.step for m in best] == [1, 2, 3, 4]  # by trials completed
    values = [m.value for m in best]
    assert config.objective.mode == "max" and values == sorted(values)  # only rises
    assert values[-1] == pytest.approx(table["score"].max())
    assert "trials.parquet" in [a.path for a in client.list_artifacts(study.info.run_id)]


def test_warm_started_study_runs_the_points_first(ray_session, tiny_model, tmp_path):
    """search.warm_start = "registry": trials 1-3 are the planned points (warm_start.json)."""
    from test_recipe_roundtrip import make_recipe
    from test_registry_core import fresh_registry_uri

    from crdiff_search.registry import Registry
    from crdiff_search.runner import run_study

    groups = ("down", "mid", "up")
    uri = fresh_registry_uri(tmp_path / "reg")
    reg = Registry(uri)
    model = str(tiny_model)
    reg.export(
        make_recipe(model=model, width=64, height=64, ratios={"down": 0.4, "mid": 0.1, "up": 0.3})
    )
    reg.export(
        make_recipe(model=model, width=16, height=16, ratios={"down": 0.2, "mid": 0.5, "up": 0.0})
    )
    out = tmp_path / "warm"
    config = tiny_config(
        tiny_model,
        out,
        **{
            "tracking.uri": uri,
            "search.sampler": "anneal",
            "search.trials": 5,
            "search.concurrency": 1,
            "search.warm_start": "registry",
            "search.warm_start_points": 3,
        },
    )
    run_study(config, out_dir=out, progress=False)
    plan = json.loads((out / "warm_start.json").read_text())
    table = pd.read_parquet(out / "trials.parquet").sort_values("trial_index")
    ratios = table[[f"ratio.{g}" for g in groups]].to_dict("records")
    assert ratios[0] == {f"ratio.{g}": 0.0 for g in groups}  # the dense trial
    for got, want in zip(ratios[1:4], plan["points"], strict=True):
        assert got == {f"ratio.{g}": pytest.approx(want[g]) for g in groups}
    assert len(table) == 5 and len(plan["points"]) == 3


def test_refine_end_to_end_on_the_testbed(ray_session, tmp_path):
    """`refine` on the testbed, tiny budget: trial 1 is the registry recipe, the verdict rows
    are dense / registry / refined on new seeds, the files are written, and the shared registry
    changes only with export."""
    from test_recipe_roundtrip import make_recipe
    from test_registry_core import fresh_registry_uri

    from crdiff_search.recipe import Recipe
    from crdiff_search.refine import refine
    from crdiff_search.registry import Registry

    uri = fresh_registry_uri(tmp_path / "reg")
    reg = Registry(uri)
    shared = make_recipe(
        width=24,
        height=24,
        ratios={"down": 0.9, "mid": 0.6, "up": 0.2},
        poa_w=1.0,
        poa_window=None,
        steps=2,
        guidance=2.0,
        model_revision=None,
    )
    reg.export(shared)
    result = refine(
        "testbed",
        (24, 24),
        ["three green triangles"],
        trials=3,
        seeds_per_prompt=2,
        check_seeds=2,
        registry=uri,
        concurrency=1,
        out=tmp_path / "refine",
        progress=False,
    )
    table = pd.read_parquet(tmp_path / "refine" / "study" / "trials.parquet")
    first = table[table["trial_index"] == 1].iloc[0]
    assert {g: first[f"ratio.{g}"] for g in ("down", "mid", "up")} == pytest.approx(shared.ratios)
    assert [r["name"] for r in result.rows] == ["dense", "registry", "refined"]
    assert "vs_registry_low" in result.rows[2] and result.verdict
    saved = Recipe.load(tmp_path / "refine" / "recipe.json")
    assert saved == result.refined and saved.resolution == (24, 24)
    assert saved.scores["heldout_prompts"] == 2
    assert (tmp_path / "refine" / "refine_compare.png").is_file()
    info = json.loads((tmp_path / "refine" / "refine.json").read_text())
    assert info["base"]["ratios"] == pytest.approx(shared.ratios) and info["exported"] is None
    assert [e.version for e in reg.list("testbed")] == [1]  # the shared alias did not move
