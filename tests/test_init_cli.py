"""``crdiff init``: a ready experiment file that the search's own checks accept once its
prompts file is filled (CPU, offline: config files only)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from crdiff_search.cli import main
from crdiff_search.config import _SECTIONS, load_experiment
from crdiff_search.init_experiment import OBJECTIVE_WEIGHTS, PIPELINE_DEFAULTS

REPO = Path(__file__).resolve().parent.parent


def _prompt_lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def _groups_comment(text: str) -> list[str]:
    """The groups the file's [partition] comment names (wrapped over lines when many)."""
    lines = text.split("# groups: ", 1)[1].splitlines()
    joined = lines[0]
    for line in lines[1:]:
        if not line.startswith("# ") or " = " in line:
            break
        joined += " " + line[2:]
    return joined.split(", ")


def test_testbed_file_fails_until_its_prompts_are_written_then_passes_the_dry_run(
    tmp_path, capsys, monkeypatch
):
    from crdiff_search.testbed import DEFAULT_GUIDANCE, DEFAULT_STEPS
    from crdiff_search.testbed.scenes import sample_captions

    monkeypatch.chdir(tmp_path)
    assert main(["init", "testbed", "--resolution", "24x24", "--out", "exp.toml"]) == 0
    out = capsys.readouterr().out
    path, prompts = tmp_path / "exp.toml", tmp_path / "exp.prompts.txt"
    assert str(prompts.name) in out and "down, mid, up" in out
    text = path.read_text()
    # every section is there, and commented: a comment line or a trailing comment in each
    for section in _SECTIONS:
        body = text.split(f"[{section}]\n", 1)[1].split("\n[", 1)[0]
        assert "#" in body, section
    assert _groups_comment(text) == ["down", "mid", "up"]
    data = tomllib.loads(text)
    assert data["prompts"]["file"] == "exp.prompts.txt"
    assert (data["model"]["steps"], data["model"]["guidance"]) == (DEFAULT_STEPS, DEFAULT_GUIDANCE)
    assert data["model"]["device"] == "auto" and data["objective"]["name"] == "scene"
    assert "objectives/scene.py" in text  # where the objective's weights are (none)
    # the prompts file: a comment header, no prompts
    assert prompts.read_text().startswith("#") and _prompt_lines(prompts) == []

    assert main(["search", "exp.toml", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err  # one problem, not its consequences
    assert str(prompts) in err and "holds no prompts" in err

    with prompts.open("a") as f:
        f.write("\n".join(sample_captions(64, 3)) + "\n")
    assert main(["search", "exp.toml", "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["model"] == "testbed" and plan["resolution"] == "24x24"
    assert list(plan["groups"]) == ["down", "mid", "up"] and plan["prompts"] == 64
    config = load_experiment(path)
    assert (
        config.prompts.file == str(prompts) and config.prompt_list()[0] == sample_captions(1, 3)[0]
    )


@pytest.fixture(scope="module")
def saved_pipelines(tmp_path_factory):
    """A tiny UNet pipeline and a tiny DiT pipeline, written with save_pretrained."""
    from diffusers import DDIMScheduler, DiTPipeline

    from crdiff_search.testing import tiny_dit, tiny_sd_pipeline

    root = tmp_path_factory.mktemp("pipelines")
    sd = tiny_sd_pipeline(seed=0)
    sd.save_pretrained(root / "tiny-sd")
    dit = DiTPipeline(
        transformer=tiny_dit(seed=1), vae=sd.vae, scheduler=DDIMScheduler(), id2label={0: "cat"}
    )
    dit.save_pretrained(root / "tiny-dit")
    # save_pretrained drops id2label; published DiT folders keep it in model_index.json
    index_path = root / "tiny-dit" / "model_index.json"
    index = json.loads(index_path.read_text())
    index["id2label"] = {str(i): f"object {i}, thing {i}" for i in range(60)}
    index_path.write_text(json.dumps(index))
    return {"sd": (root / "tiny-sd", sd.unet), "dit": (root / "tiny-dit", dit.transformer)}


@pytest.mark.parametrize(
    "kind, granularity, pipeline_class, criterion",
    [
        ("sd", "block", "StableDiffusionPipeline", "magnitude"),
        ("sd", "paper", "StableDiffusionPipeline", "magnitude"),
        ("dit", "paper", "DiTPipeline", "magnitude-tensor"),
        ("dit", "thirds", "DiTPipeline", "magnitude"),
    ],
)
def test_a_saved_pipeline_gets_its_own_groups_and_defaults(
    kind, granularity, pipeline_class, criterion, saved_pipelines, tmp_path, capsys, monkeypatch
):
    from crdiff_search.search_spaces import build_partition

    folder, denoiser = saved_pipelines[kind]
    monkeypatch.chdir(tmp_path)
    rc = main(["init", str(folder), "--resolution", "32x48", "--granularity", granularity,
               "--out", "study.toml"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    text = (tmp_path / "study.toml").read_text()
    expected = list(build_partition(denoiser, granularity).group_names)  # from the real weights
    assert _groups_comment(text) == expected
    data = tomllib.loads(text)
    defaults = PIPELINE_DEFAULTS[pipeline_class]
    assert data["model"]["source"] == str(folder.resolve())
    assert (data["model"]["steps"], data["model"]["guidance"]) == (
        defaults.steps,
        defaults.guidance,
    )
    assert f"here: {criterion}" in text
    assert "$CRDIFF_IMAGEREWARD_CHECKPOINT" in text  # where the default scorer's weights are
    prompts = tmp_path / data["prompts"]["file"]
    capsys.readouterr()
    assert main(["search", "study.toml", "--dry-run", "--no-tracking"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(prompts) in err and "holds no prompts" in err
    # filled, the file passes the search's own checks and plans the same groups
    label = "object {i}" if kind == "dit" else "a photo of object {i}"  # DiT: class names
    with prompts.open("a") as f:
        f.write("\n".join(label.format(i=i) for i in range(40)) + "\n")
    capsys.readouterr()
    assert main(["search", "study.toml", "--dry-run", "--no-tracking"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert list(plan["groups"]) == expected and plan["prompts"] == data["prompts"]["count"]


@pytest.mark.parametrize("resolution, valid", [("30x24", ["24x24", "32x24"]), ("4x4", ["8x8"])])
def test_a_resolution_off_the_spatial_factor_names_the_value_and_valid_ones(
    resolution, valid, tmp_path, capsys
):
    out = tmp_path / "bad.toml"
    assert main(["init", "testbed", "--resolution", resolution, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert resolution in err and "divisible by 8" in err
    assert re.findall(r"\d+x\d+", err.split("nearest valid:")[1]) == valid
    assert not any(tmp_path.iterdir())  # nothing written


def test_an_existing_file_is_refused_without_force_and_prompts_are_never_overwritten(
    tmp_path, capsys
):
    out = tmp_path / "exp.toml"
    out.write_text("# mine\n")
    args = ["init", "testbed", "--resolution", "32x32", "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "--force" in err
    assert out.read_text() == "# mine\n" and not (tmp_path / "exp.prompts.txt").exists()

    prompts = tmp_path / "exp.prompts.txt"
    prompts.write_text("a red circle\ntwo blue squares\n")
    assert main([*args, "--force"]) == 0
    assert "kept" in capsys.readouterr().out
    assert tomllib.loads(out.read_text())["resolution"] == "32x32"
    assert prompts.read_text() == "a red circle\ntwo blue squares\n"


def test_a_hub_id_without_cached_configs_is_a_clear_model_error(tmp_path, capsys):
    out = tmp_path / "x.toml"
    repo = "crdiff-tests/no-such-model"
    assert main(["init", repo, "--resolution", "512x512", "--out", str(out)]) == 4
    err = capsys.readouterr().err
    assert repo in err and "not in the local Hugging Face cache" in err
    assert "HF_HUB_OFFLINE" in err and not out.exists()


@pytest.mark.parametrize("objective", sorted(OBJECTIVE_WEIGHTS))
def test_every_objective_writes_a_valid_file_saying_where_its_weights_are(
    objective, tmp_path, capsys
):
    """The hint names the variables its scorer really reads, and the file validates."""
    from crdiff_search.objectives import OBJECTIVES

    module = OBJECTIVES.plugin(objective).target.split(":")[0].rsplit(".", 1)[1]
    source = (REPO / "objectives" / f"{module}.py").read_text()
    hint = OBJECTIVE_WEIGHTS[objective][0]
    for var in re.findall(r"\$(CRDIFF_[A-Z_]+)", hint):
        assert var in source, (objective, var)
    out = tmp_path / "exp.toml"
    args = ["init", "testbed", "--resolution", "24x24", "--objective", objective, "--out", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    (tmp_path / "exp.prompts.txt").write_text("a red circle\n" * 64)
    config = load_experiment(out)
    assert config.objective.names == (objective,)
    assert hint.split()[0] in out.read_text()


def test_dit_prompts_must_be_class_labels_before_ray_starts(saved_pipelines, tmp_path, capsys):
    """A class-conditional model maps each prompt to a class id: a prompt that is no label (or
    a folder without id2label) is refused by the checks, not by every trial."""
    folder, _ = saved_pipelines["dit"]
    study = tmp_path / "dit.toml"
    base = f'''resolution = "32x32"
[model]
source = "{folder}"
[prompts]
items = ["object 3", "thing 7", "a goldfish"]
[rerank]
after_search = false
'''
    study.write_text(base)
    assert main(["search", str(study), "--dry-run", "--no-tracking"]) == 2
    err = capsys.readouterr().err
    assert "'a goldfish' is not a class label" in err and "'object 0'" in err
    study.write_text(base.replace(', "a goldfish"', ""))
    assert main(["search", str(study), "--dry-run", "--no-tracking"]) == 0
    capsys.readouterr()
    bare = tmp_path / "bare-dit"
    import shutil

    shutil.copytree(folder, bare)
    index = json.loads((bare / "model_index.json").read_text())
    del index["id2label"]
    (bare / "model_index.json").write_text(json.dumps(index))
    study.write_text(base.replace(str(folder), str(bare)))
    assert main(["search", str(study), "--dry-run", "--no-tracking"]) == 2
    assert "without class labels" in capsys.readouterr().err
