"""``crdiff compare``: input checks before Ray, the plan, resume rules, --collect and --report-only,
and one small end-to-end comparison through the search runner."""

from __future__ import annotations

import json
import textwrap

import pandas as pd
import pytest

from crdiff_search.analysis.compare import MANIFEST, TABLE
from crdiff_search.analysis.synthetic import study_table
from crdiff_search.cli import main
from crdiff_search.compare import parse_seeds, plan_comparison, run_comparison, study_status
from crdiff_search.errors import UsageError


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """The testbed at its training size with a small, cheap prompt batch."""
    path = tmp_path_factory.mktemp("exp") / "tb.toml"
    path.write_text(
        textwrap.dedent("""
        study = "tb"
        resolution = "32x32"

        [model]
        source = "testbed"
        steps = 4

        [prompts]
        count = 2
    """)
    )
    return path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--samplers", "anneal,bogus"], "unknown sampler(s) 'bogus'; valid: anneal"),
        (["--samplers", "tpe,tpe"], "twice"),
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--seeds", "a,b"], "--seeds 'a,b'"),
        (["--trials", "1"], "--trials must be >= 2"),
        (["--share", "1.5"], "--share must be in (0, 1]"),
        (["--prompts", "0"], "--prompts must be >= 1"),
        (["--collect", "/nonexistent/folder", "--out", "x"], "neither a trial table"),
        (["--report-only", "/nonexistent/folder"], "no comparison.parquet"),
        (["--set", "resources.cpu"], "expected KEY=VALUE"),
        (["--set", "bogus.key=1"], "unknown section 'bogus'"),
    ],
)
def test_bad_input_exits_2_before_ray_starts(argv, message, capsys):
    import ray

    assert main(["compare", *argv]) == 2
    assert message in capsys.readouterr().err
    assert not ray.is_initialized()


def test_seeds_are_a_count_or_a_list():
    assert parse_seeds("3") == (0, 1, 2)
    assert parse_seeds("4,9") == (4, 9)
    with pytest.raises(UsageError, match="distinct"):
        parse_seeds("1,1")


def test_plan_pins_prompts_and_generation_seeds_and_varies_only_the_sampler(experiment, tmp_path):
    plan = plan_comparison(
        str(experiment),
        samplers=["tpe", "uniform"],
        seeds=[0, 5],
        trials=4,
        early_stopping=True,
        out_dir=tmp_path,
    )
    assert [s.name for s in plan.studies] == [
        "tpe-s0",
        "uniform-s0",
        "tpe-s5",
        "uniform-s5",
        "tpe-asha-s0",
        "uniform-asha-s0",
        "tpe-asha-s5",
        "uniform-asha-s5",
    ]
    configs = [s.config for s in plan.studies]
    assert len({tuple(c.prompt_list()) for c in configs}) == 1
    assert len(configs[0].prompt_list()) == 2
    assert {tuple(c.seed_list()) for c in configs} == {(0, 1)}
    assert [(c.search.sampler, c.search.seed, c.search.early_stopping) for c in configs[:3]] == [
        ("tpe", 0, False),
        ("uniform", 0, False),
        ("tpe", 5, False),
    ]
    assert all(c.search.trials == 4 for c in configs)
    # Early stopping needs several prompt chunks; every arm scores the same chunks.
    assert {len(c.chunks()) for c in configs} == {2}
    assert [c.search.early_stopping for c in configs].count(True) == 4
    assert {c.tracking.experiment for c in configs} == {"tb-compare"}
    assert configs[0].output_dir == tmp_path / "studies" / "tpe-s0"
    assert plan.context["resolution"] == "32x32" and plan.maximize


def test_early_stopping_only_plans_the_asha_arms_alone(experiment, tmp_path):
    plan = plan_comparison(
        str(experiment),
        samplers=["gp", "tpe"],
        seeds=[3],
        trials=4,
        early_stopping=True,
        plain=False,
        out_dir=tmp_path,
    )
    assert [s.name for s in plan.studies] == ["gp-asha-s3", "tpe-asha-s3"]
    assert all(s.config.search.early_stopping for s in plan.studies)
    assert {len(s.config.chunks()) for s in plan.studies} == {2}
    with pytest.raises(UsageError, match="--early-stopping-only"):
        plan_comparison(str(experiment), samplers=["gp"], seeds=[0], plain=False)


def test_a_folder_with_other_settings_is_refused_and_a_full_table_is_complete(
    experiment, tmp_path, monkeypatch
):
    plan = plan_comparison(
        str(experiment), samplers=["random"], seeds=[0], trials=3, out_dir=tmp_path
    )
    study = plan.studies[0]
    assert study_status(study) == "new"
    out = study.config.output_dir
    out.mkdir(parents=True)
    (out / "experiment.toml").write_text(study.config.replace(**{"search.trials": 9}).to_toml())
    with pytest.raises(UsageError, match="other settings"):
        study_status(study)
    (out / "experiment.toml").write_text(study.config.to_toml())
    study_table([0.1, 0.2, None], sampler="random", seed=0).to_parquet(out / "trials.parquet")
    assert study_status(study) == "complete"
    # The same folder named relative to the working folder holds the same study.
    monkeypatch.chdir(tmp_path.parent)
    again = plan_comparison(
        str(experiment), samplers=["random"], seeds=[0], trials=3, out_dir=tmp_path.name
    )
    assert not again.studies[0].config.output_dir.is_absolute()
    assert study_status(again.studies[0]) == "complete"


def test_collect_and_report_only_rebuild_the_same_report(tmp_path, capsys):
    runs = tmp_path / "runs"
    for sampler, mean in (("anneal", 0.5), ("random", 0.2)):
        for seed in range(3):
            folder = runs / f"{sampler}-{seed}"
            folder.mkdir(parents=True)
            scores = [mean + 0.1 * k + 0.01 * seed for k in range(4)]
            study_table(scores, sampler=sampler, seed=seed).to_parquet(folder / "trials.parquet")
    out = tmp_path / "cmp"
    assert main(["compare", "--collect", str(runs), "--out", str(out)]) == 0
    assert "collected 6" in capsys.readouterr().out
    table = pd.read_parquet(out / TABLE)
    assert len(table) == 24 and sorted(table["method"].unique()) == ["anneal", "random"]
    first = (out / "report.md").read_text()
    assert "Highest median final score: anneal" in first
    (out / "report.md").unlink()
    assert main(["compare", "--report-only", str(out)]) == 0
    assert (out / "report.md").read_text() == first


@pytest.mark.slow
def test_end_to_end_compare_two_samplers_two_seeds_through_the_runner(experiment, tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = [
        "compare",
        str(experiment),
        "--samplers",
        "tpe,uniform",
        "--seeds",
        "2",
        "--trials",
        "3",
        "--out",
        str(out),
        "--no-tracking",
    ]
    assert main(argv) == 0
    assert "ran 4, skipped 0" in capsys.readouterr().out

    table = pd.read_parquet(out / TABLE)
    assert len(table) == 2 * 2 * 3
    assert table.groupby(["method", "seed"]).size().to_dict() == {
        ("tpe", 0): 3,
        ("tpe", 1): 3,
        ("uniform", 0): 3,
        ("uniform", 1): 3,
    }
    assert (table["state"] == "COMPLETE").all()
    dense = table[table["trial_number"] == 1]
    assert (dense[["ratio.down", "ratio.mid", "ratio.up"]] == 0.0).all().all()
    # Same prompts and noise everywhere: the dense model scores the same in every study.
    assert dense["score"].nunique() == 1
    uniform = table[(table["method"] == "uniform") & (table["trial_number"] > 1)]
    assert (uniform["ratio.down"] == uniform["ratio.up"]).all()
    assert (table["n_images"] == 2).all() and (table["cum_images"].max() == 6)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["samplers"] == ["tpe", "uniform"] and manifest["seeds"] == [0, 1]
    report = (out / "report.md").read_text()
    assert "- methods: `tpe`, `uniform`" in report and "![ratio landscape]" in report
    assert (out / "figures" / "best_vs_images.png").stat().st_size > 1000

    # Running it again finds every study complete and only rewrites the report.
    again = run_comparison(_same_plan(experiment, out), out)
    assert again.ran == () and len(again.skipped) == 4
    assert (out / "report.md").read_text() == report


def _same_plan(experiment, out):
    return plan_comparison(
        str(experiment),
        samplers=["tpe", "uniform"],
        seeds=[0, 1],
        trials=3,
        out_dir=out,
        overrides={"tracking.enabled": False},
    )


def test_runs_resumes_and_reports_failed_studies_without_ray(experiment, tmp_path, monkeypatch):
    """The orchestration alone, with the runner replaced by a fake that writes tables."""
    import ray

    from crdiff_search import runner
    from crdiff_search.runner.study import StudyResult

    calls = []

    def fake_run_study(config, *, out_dir, resume, address, progress):
        calls.append((config.search.sampler, config.search.seed, resume))
        scores = [0.5, None, None] if config.search.sampler == "random" else [0.5, 0.7, 0.6]
        if config.search.sampler == "random" and config.search.seed == 1:
            scores = [None, None, None]
        table = study_table(scores, sampler=config.search.sampler, seed=config.search.seed)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "experiment.toml").write_text(config.to_toml())
        table.to_parquet(out_dir / "trials.parquet")
        states = table["state"].value_counts().to_dict()
        return StudyResult(out_dir / "trials.parquet", out_dir, {}, 0.7, 0.5, "", None, 3, states)

    monkeypatch.setattr(runner, "run_study", fake_run_study)
    monkeypatch.setattr(ray, "init", lambda **kw: None)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    plan = plan_comparison(
        str(experiment), samplers=["tpe", "random"], seeds=[0, 1], trials=3, out_dir=tmp_path
    )
    # random-s0 was interrupted: it has a config and a Ray folder, so it is resumed.
    interrupted = plan.studies[1]
    assert interrupted.name == "random-s0"
    folder = interrupted.config.output_dir
    (folder / "ray" / interrupted.config.study).mkdir(parents=True)
    (folder / "experiment.toml").write_text(interrupted.config.to_toml())

    result = run_comparison(plan, tmp_path, log=lambda _: None)

    assert calls == [
        ("tpe", 0, False),
        ("random", 0, True),
        ("tpe", 1, False),
        ("random", 1, False),
    ]
    assert result.failed == {"random-s1": "no trial completed: boom"}
    table = pd.read_parquet(result.table_path)
    assert len(table) == 12 and (table["method"] == "random").sum() == 6
    assert "Highest median final score: tpe" in result.report_path.read_text()

    # --complete-only: a larger plan runs nothing and reports only the finished studies.
    bigger = plan_comparison(
        str(experiment), samplers=["tpe", "random"], seeds=[0, 1, 2], trials=3, out_dir=tmp_path
    )
    partial = bigger.studies[-1].config.output_dir
    partial.mkdir(parents=True)
    (partial / "experiment.toml").write_text(bigger.studies[-1].config.to_toml())
    study_table([0.9], sampler="random", seed=2).to_parquet(partial / "trials.parquet")
    calls.clear()
    again = run_comparison(bigger, tmp_path, run=False, log=lambda _: None)
    assert calls == [] and again.ran == ()
    assert sorted(pd.read_parquet(again.table_path)["seed"].unique()) == [0, 1]


def test_studies_are_collected_from_mlflow(tmp_path, capsys):
    from crdiff_search.tracking import StudyTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = StudyTracker(uri, "old-studies")
    for sampler, top in (("anneal", 0.9), ("random", 0.4)):
        parent = tracker.start_study(
            f"tb-{sampler}",
            params={"search.sampler": sampler, "search.seed": 3, "search.early_stopping": False},
        )
        for i, score in enumerate([0.1, top, 0.2]):
            tracker.log_trial(
                parent,
                f"t{i}",
                params={"ratio.down": 0.1 * i, "ratio.up": 0.2 * i},
                metrics={"score": score, "score_delta": score - 0.1, "n_images": 4},
                timings={"total": 1.5},
            )
        tracker.finish_study(parent)
    out = tmp_path / "cmp"
    argv = ["compare", "--collect-mlflow", "old-studies", "--tracking-uri", uri, "--out", str(out)]
    assert main(argv) == 0
    assert "collected 2" in capsys.readouterr().out
    table = pd.read_parquet(out / TABLE)
    assert table.groupby("method")["best_so_far"].max().to_dict() == {"anneal": 0.9, "random": 0.4}
    assert set(table["seed"]) == {3} and table["trial_number"].max() == 3
    assert table["ratio.up"].tolist()[:3] == [0.0, 0.2, 0.4]
    assert table["t_total"].tolist()[0] == 1.5
    assert main([*argv[:2], "nope", *argv[3:]]) == 2
    assert "no MLflow experiment 'nope'" in capsys.readouterr().err


def test_an_interrupted_study_stops_the_comparison(experiment, tmp_path, monkeypatch):
    import ray

    from crdiff_search import runner
    from crdiff_search.runner.study import StudyResult

    calls = []

    def interrupted_run_study(config, *, out_dir, resume, address, progress):
        calls.append(config.search.sampler)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "experiment.toml").write_text(config.to_toml())
        table = study_table([0.5], sampler=config.search.sampler, seed=0)  # 1 of 3 trials
        table.to_parquet(out_dir / "trials.parquet")
        return StudyResult(
            out_dir / "trials.parquet", out_dir, {}, 0.5, 0.5, "", None, 1, {"COMPLETE": 1}
        )

    monkeypatch.setattr(runner, "run_study", interrupted_run_study)
    monkeypatch.setattr(ray, "init", lambda **kw: None)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    plan = plan_comparison(
        str(experiment), samplers=["tpe", "random"], seeds=[0], trials=3, out_dir=tmp_path
    )
    result = run_comparison(plan, tmp_path, log=lambda _: None)
    assert calls == ["tpe"]
    assert result.failed == {"tpe-s0": "stopped before its budget; run again to resume"}


def test_ctrl_c_before_any_trial_finished_stops_the_comparison(experiment, tmp_path, monkeypatch):
    """A Ctrl-C while a study's first trials run (no trial complete yet) stops the comparison
    there too; it used to be taken for a broken study and the next one started."""
    import ray

    from crdiff_search import runner
    from crdiff_search.runner.study import StudyResult

    calls = []

    def stopped_early(config, *, out_dir, resume, address, progress):
        calls.append(config.search.sampler)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "experiment.toml").write_text(config.to_toml())
        return StudyResult(
            out_dir / "trials.parquet", out_dir, {}, float("nan"), float("nan"), "", None, 0,
            {"RUNNING": 2}, budget=3, interrupted=True,
        )  # fmt: skip

    monkeypatch.setattr(runner, "run_study", stopped_early)
    monkeypatch.setattr(ray, "init", lambda **kw: None)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    plan = plan_comparison(
        str(experiment), samplers=["tpe", "random"], seeds=[0], trials=3, out_dir=tmp_path
    )
    with pytest.raises(RuntimeError, match="no study produced a trial table"):
        run_comparison(plan, tmp_path, log=lambda _: None)
    assert calls == ["tpe"]


def test_heldout_scores_each_pick_once_into_the_report(experiment, tmp_path, monkeypatch):
    """--heldout N: every complete study's pick (its best search trial) and the dense model
    are scored on N held-out prompts through rerank (1 candidate, no POA), once per study;
    tables/picks.csv and a report section hold them."""
    import types

    import ray

    from crdiff_search import rerank as rerank_module
    from crdiff_search import runner
    from crdiff_search.runner.study import StudyResult

    scored_before = []  # the picks already scored when each study starts

    def complete_run_study(config, *, out_dir, resume, address, progress):
        scored_before.append(len(list(tmp_path.glob("studies/*/heldout_pick.json"))))
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "experiment.toml").write_text(config.to_toml())
        table = study_table([0.5, 0.6, 0.7], sampler=config.search.sampler, seed=0)
        table.to_parquet(out_dir / "trials.parquet")
        return StudyResult(
            out_dir / "trials.parquet", out_dir, {}, 0.7, 0.5, "", None, 3, {"COMPLETE": 3}, 3
        )

    calls = []

    def fake_rerank(folder, *, top_k, weights, n_prompts, address, log_mlflow, progress):
        calls.append((str(folder), top_k, tuple(weights), n_prompts))
        gain = 0.05 if "tpe" in str(folder) else -0.01
        winner = {
            "trial_id": "t2", "search_score": 0.7, "pruned_score": 0.4 + gain, "ratios": {"up": 0.3},
            "delta_low": gain - 0.02, "delta_high": gain + 0.02,
        }  # fmt: skip
        return types.SimpleNamespace(winner=winner, dense_score=0.4)

    monkeypatch.setattr(runner, "run_study", complete_run_study)
    monkeypatch.setattr(rerank_module, "rerank", fake_rerank)
    monkeypatch.setattr(ray, "init", lambda **kw: None)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    plan = plan_comparison(
        str(experiment), samplers=["tpe", "random"], seeds=[0, 1], trials=3, out_dir=tmp_path
    )
    result = run_comparison(plan, tmp_path, heldout=16, log=lambda _: None)
    assert len(calls) == 4 and {c[1:] for c in calls} == {(1, (1.0,), 16)}
    assert scored_before == [0, 1, 2, 3]  # each pick right after its study
    picks = pd.read_csv(tmp_path / "tables" / "picks.csv")
    assert len(picks) == 4 and set(picks["sampler"]) == {"tpe", "random"}
    assert picks.set_index("study").loc["tpe-s0", "heldout_delta"] == pytest.approx(0.05)
    report = result.report_path.read_text()
    assert "## The pick, held out" in report and "16 held-out prompts" in report
    section = report.split("## The pick, held out")[1]
    tpe_row = next(line for line in section.splitlines() if line.startswith("| tpe |"))
    assert "+0.0500" in tpe_row and tpe_row.rstrip().endswith("| 2 |")
    run_comparison(plan, tmp_path, heldout=16, log=lambda _: None)
    assert len(calls) == 4  # scored once per study
    with pytest.raises(UsageError, match="--heldout must be >= 0"):
        run_comparison(plan, tmp_path, heldout=-1, log=lambda _: None)


def _fake_comparison(experiment, out, monkeypatch, *, seeds, early_stopping_only=False, **kw):
    """A comparison folder whose studies are synthetic tables (no Ray, no model)."""
    import ray

    from crdiff_search import runner
    from crdiff_search.runner.study import StudyResult

    def complete_run_study(config, *, out_dir, resume, address, progress):
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "experiment.toml").write_text(config.to_toml())
        shift = 0.01 * config.search.seed + (0.05 if config.search.early_stopping else 0.0)
        scores = [0.5, 0.6 + shift, 0.7 + shift]
        study_table(scores, sampler=config.search.sampler, seed=config.search.seed).to_parquet(
            out_dir / "trials.parquet"
        )
        return StudyResult(
            out_dir / "trials.parquet", out_dir, {}, 0.7, 0.5, "", None, 3, {"COMPLETE": 3}, 3
        )

    monkeypatch.setattr(runner, "run_study", complete_run_study)
    monkeypatch.setattr(ray, "init", lambda **kw: None)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    plan = plan_comparison(
        str(experiment),
        samplers=["tpe", "random"],
        seeds=seeds,
        trials=3,
        early_stopping=early_stopping_only,
        plain=not early_stopping_only,
        out_dir=out,
        **kw,
    )
    run_comparison(plan, out, log=lambda _: None)
    return out


def test_merge_joins_seeds_and_asha_arms_and_refuses_other_experiments(
    experiment, tmp_path, monkeypatch, capsys
):
    a = _fake_comparison(experiment, tmp_path / "a", monkeypatch, seeds=[0])
    b = _fake_comparison(experiment, tmp_path / "b", monkeypatch, seeds=[1])
    manifest = json.loads((b / MANIFEST).read_text())  # planned, never run: not merged
    manifest["studies"]["tpe-s9"] = {"sampler": "tpe", "seed": 9, "early_stopping": False}
    (b / MANIFEST).write_text(json.dumps(manifest))
    asha = _fake_comparison(
        experiment, tmp_path / "asha", monkeypatch, seeds=[0], early_stopping_only=True
    )
    out = tmp_path / "all"
    assert main(["compare", "--merge", str(a), str(b), str(asha), str(a), "--out", str(out)]) == 0
    table = pd.read_parquet(out / TABLE)
    assert sorted(table["study"].unique()) == [
        "random-asha-s0", "random-s0", "random-s1", "tpe-asha-s0", "tpe-s0", "tpe-s1"
    ]  # fmt: skip
    assert len(table) == 6 * 3  # the folder given twice adds nothing
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["seeds"] == [0, 1] and manifest["early_stopping"] is True
    assert len(manifest["studies"]) == 6 and "early stopping" in manifest["context"]
    assert "tpe+asha" in (out / "report.md").read_text()

    other = _fake_comparison(
        experiment, tmp_path / "other", monkeypatch, seeds=[2], overrides={"resolution": "24x24"}
    )
    assert main(["compare", "--merge", str(a), str(other), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "differs from" in err and "resolution" in err and "'24x24'" in err
    assert not (tmp_path / "x").exists()  # checked before anything is written

    clash = tmp_path / "clash"
    clash.mkdir()
    for name in (MANIFEST, TABLE):
        (clash / name).write_bytes((a / name).read_bytes())
    changed = pd.read_parquet(clash / TABLE)
    changed.loc[changed.index[-1], "score"] += 0.1
    changed.to_parquet(clash / TABLE)
    with pytest.raises(UsageError, match="tpe-s0 is in .* with different trials|random-s0 is in"):
        from crdiff_search.compare import merge_comparisons

        merge_comparisons([a, clash], tmp_path / "y")
    assert main(["compare", "--merge", str(a), str(b)]) == 2
    assert "--merge needs --out" in capsys.readouterr().err
    assert main(["compare", "--merge", str(a), str(tmp_path / "nothing"), "--out", "z"]) == 2
    assert "is not a comparison folder" in capsys.readouterr().err
