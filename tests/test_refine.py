"""``crdiff refine``: bad input exits 2 before anything loads, and the refinement's study is
built from the recipe it starts from (its partition, objective, sampling, and the user's
prompts, each with several seeds). The end-to-end run is in test_search_runner (one Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_recipe_roundtrip import make_recipe

from crdiff_search.cli import main


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--prompt", "x", "--trials", "1"], "--trials 1 must be an integer >= 2"),
        (["--prompt", "x", "--seeds", "0"], "--seeds 0"),
        (["--prompt", "x", "--check-seeds", "0"], "--check-seeds 0"),
        (["--prompt", "  "], "at least one --prompt"),
        (["--prompt", "x", "--sampler", "annealing"], "--sampler 'annealing' is unknown"),
        (["--prompt", "x", "--recipe", "missing.json"], "does not exist"),
        (["--prompt", "x", "--recipe", "none"], "not 'none'"),
    ],
)
def test_refine_rejects_bad_input_before_loading(argv, message, capsys, tmp_path):
    out = str(tmp_path / "o")
    code = main(["refine", "--model", "testbed", "--resolution", "24x24", "--out", out, *argv])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_refine_study_is_built_from_the_recipe(tmp_path: Path):
    from crdiff_search.refine import refine_config

    base = make_recipe(width=24, height=24, steps=5, guidance=3.0, attention_scaling="entropy")
    config = refine_config(
        "testbed",
        (24, 24),
        ["two red circles", "a blue square"],
        base,
        trials=6,
        seeds_per_prompt=3,
        sampler="tpe",
        concurrency=1,
        out=tmp_path / "study",
        tracking=False,
        tracking_uri=None,
    )
    assert config.prompt_list() == ["two red circles"] * 3 + ["a blue square"] * 3
    assert len(set(config.seed_list())) == 6  # every image its own seed
    assert (config.model.steps, config.model.guidance) == (5, 3.0)
    assert config.objective.names == ("scene",) and config.partition.spec == base.partition
    assert config.search.repair == "prune+entropy" and config.search.sampler == "tpe"
    assert config.search.trials == 6 and not config.rerank.after_search
