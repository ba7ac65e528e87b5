"""Experiment configs: defaults, round trips, overrides, and every named validation error."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from crdiff_search.config import (
    CONFIG_VERSION,
    ConfigErrors,
    ExperimentConfig,
    SearchSpec,
    load_experiment,
)
from crdiff_search.errors import UsageError
from crdiff_search.model_info import model_info
from crdiff_search.resolution import parse_resolution
from crdiff_search.testing import tiny_unet_config

REPO = Path(__file__).resolve().parent.parent


def config_only_model(folder: Path) -> Path:
    """A pipeline folder holding only config files (as the validator may read), no weights."""
    (folder / "unet").mkdir(parents=True)
    (folder / "vae").mkdir()
    (folder / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "StableDiffusionPipeline",
                "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"],
            }
        )
    )
    unet = {"_class_name": "UNet2DConditionModel", **tiny_unet_config()}
    (folder / "unet" / "config.json").write_text(json.dumps(unet))
    (folder / "vae" / "config.json").write_text(
        json.dumps(
            {
                "_class_name": "AutoencoderKL",
                "block_out_channels": [32, 64],
            }
        )
    )
    return folder


def write(tmp_path: Path, text: str, name: str = "exp.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_defaults_are_the_testbed_study_and_round_trip():
    cfg = load_experiment(None)
    assert cfg == ExperimentConfig()
    assert cfg.version == CONFIG_VERSION
    assert cfg.model.source == "testbed"
    assert (cfg.width, cfg.height) == (24, 24)  # below the training size (32x32)
    assert cfg.ratios.high >= 0.95 and cfg.rerank.after_search and cfg.rerank.prompts >= 128
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg
    assert ExperimentConfig.from_toml(cfg.to_toml()) == cfg


def test_file_round_trip_with_every_section(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# captions\na cat on a sofa\na red bus\n\na bowl of fruit\n")
    model = config_only_model(tmp_path / "model")
    path = write(
        tmp_path,
        f"""
        study = "tiny-32x48"
        resolution = "32x48"
        output = "{tmp_path / "out"}"
        [model]
        source = "{model}"
        dtype = "float16"
        scheduler = "ddim"
        steps = 2
        guidance = 5.0
        [prompts]
        file = "prompts.txt"
        count = 2
        seeds = [7, 9]
        chunk_size = 1
        [objective]
        name = ["clip", "aesthetic"]
        weights = [1.0, 0.25]
        options = {{ clip = {{ model = "ViT-B-32" }} }}
        [partition]
        granularity = "block"
        [ratios]
        low = 0.05
        high = 0.5
        [search]
        sampler = "tpe"
        trials = 12
        concurrency = 3
        early_stopping = true
        retries = 2
        [resources]
        cpu = 2
        gpu = 1
        [tracking]
        uri = "http://127.0.0.1:5000"
    """,
    )
    cfg = load_experiment(path)
    assert cfg.prompt_list() == ["a cat on a sofa", "a red bus"]
    assert cfg.seed_list() == [7, 9]
    assert cfg.chunks() == [(0, 1), (1, 2)]
    assert cfg.prompts.file == str(prompts)  # resolved next to the experiment file
    assert cfg.objective.options_for("clip") == {"model": "ViT-B-32"}
    assert cfg.objective.options_for("aesthetic") == {}
    assert cfg.ratios.bounds("anything") == (0.05, 0.5)
    assert cfg.resources.gpu == 1.0 and cfg.search.early_stopping
    again = ExperimentConfig.from_toml(cfg.to_toml())
    assert again == cfg
    assert cfg.to_dict()["objective"]["name"] == ["clip", "aesthetic"]


def test_overrides_short_and_dotted():
    cfg = load_experiment(
        None,
        trials=5,
        sampler="random",
        seed=3,
        out="x/y",
        tracking_uri="a.db",
        **{"model.steps": 2, "prompts__count": 3},
        concurrency=None,
    )
    assert (cfg.search.trials, cfg.search.sampler, cfg.search.seed) == (5, "random", 3)
    assert cfg.output_dir == Path("x/y") and cfg.tracking.uri == "a.db"
    assert cfg.model.steps == 2 and cfg.prompts.count == 3
    assert cfg.search.concurrency == SearchSpec.concurrency  # None = not given


def test_seed_list_and_chunks():
    cfg = load_experiment(
        None, **{"prompts.count": 5, "prompts.seeds": 10, "prompts.chunk_size": 2}
    )
    assert cfg.seed_list() == [10, 11, 12, 13, 14]
    assert cfg.chunks() == [(0, 2), (2, 4), (4, 5)]


def test_early_stopping_without_a_chunk_size_reports_after_each_quarter_of_the_prompts():
    plain = load_experiment(None)
    assert plain.chunks() == [(0, 64)]
    stopping = load_experiment(None, early_stopping=True)
    assert stopping.chunks() == [(0, 16), (16, 32), (32, 48), (48, 64)]
    odd = load_experiment(None, early_stopping=True, **{"prompts.count": 6})
    assert odd.chunks() == [(0, 2), (2, 4), (4, 6)]
    set_size = load_experiment(None, early_stopping=True, **{"prompts.chunk_size": 32})
    assert set_size.chunks() == [(0, 32), (32, 64)]


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("bogus = 1", ["'bogus'", "[model]", "resolution"]),
        ("[model]\nsteps_count = 2", ["[model]", "'steps_count'", "valid keys", "steps"]),
        ('[model]\nsteps = "8"', ["model.steps", "integer", "'8'"]),
        ('[model]\nguidance = "high"', ["model.guidance", "number"]),
        ('[model]\ndtype = "fp8"', ["model.dtype", "'fp8'", "float16", "bfloat16"]),
        ('[model]\nscheduler = "heun"', ["model.scheduler", "ddim", "euler"]),
        ('resolution = "64by64"', ["resolution", "'64by64'", "WIDTHxHEIGHT"]),
        ("resolution = 64", ["resolution", "string"]),
        ('[search]\nsampler = "grid"', ["search.sampler", "'grid'", "anneal", "tpe", "uniform"]),
        ("[search]\ntrials = 0", ["search.trials", ">= 1"]),
        ('[search]\nearly_stopping = "yes"', ["search.early_stopping", "true or false"]),
        (
            '[search]\nearly_stopping = true\n[prompts]\nitems = ["a"]\ncount = 1',
            ["search.early_stopping", "at least 2 prompts", "prompts.count = 1)"],
        ),
        (
            "[search]\nearly_stopping = true\n[prompts]\nchunk_size = 64",
            ["prompts.chunk_size = 64", "one chunk", "valid: prompts.chunk_size 1..63"],
        ),
        ('[objective]\nname = "beauty"', ["objective.name", "'beauty'", "imagereward", "scene"]),
        (
            '[objective]\nname = ["clip", "aesthetic"]\nweights = [1.0]',
            ["objective.weights", "one per name"],
        ),
        ('[objective]\nmode = "up"', ["objective.mode", "max", "min"]),
        ('[partition]\ngranularity = "layer"', ["partition.granularity", "paper", "block", "kind"]),
        ('[partition]\ninclude = ["conv"]', ["partition.include[0]", "self_attn", "resnet"]),
        ("[ratios]\nlow = 0.6\nhigh = 0.2", ["ratios", "0 <= low < high < 1"]),
        ("[ratios.groups]\nmid = [0.1]", ["ratios.groups.mid", "[low, high]"]),
        ('[prompts]\nfile = "nowhere.txt"', ["prompts.file", "nowhere.txt", "does not exist"]),
        ('[prompts]\nitems = ["a", "b"]\ncount = 3', ["prompts.count", "valid: 1..2"]),
        ("[prompts]\nseeds = [1, 2]\ncount = 3", ["prompts.seeds", "one per prompt"]),
        ("[prompts]\nchunk_size = 65", ["prompts.chunk_size", "valid: 0"]),
        ("version = 2", ["version", "valid: 1"]),
        ('plugins = ["no_such_module_xyz"]', ["plugins[0]", "no_such_module_xyz"]),
        ("[resources]\ngpu = -1", ["resources", "gpu >= 0"]),
        ('[resources]\npruner_cache = "lru"', ["resources.pruner_cache", "'lru'", "histogram"]),
        ('[resources]\npruner_backup = "gpu"', ["resources.pruner_backup", "device, host"]),
        ("[resources]\npruner_device_budget = -1", ["pruner_device_budget", ">= 0"]),
        ('[partition]\ncriterion = "taylor"', ["partition.criterion", "'taylor'", "magnitude"]),
        ("[rerank]\ntop_k = 0", ["rerank.top_k", ">= 1"]),
        ("[rerank]\nweights = [1.0, -1.5]", ["rerank.weights", "-1.5", "w >= 0"]),
        ("[rerank]\nweights = []", ["rerank.weights", "empty"]),
        ('[rerank]\nweights = ["x"]', ["rerank.weights[0]", "number"]),
        ("[rerank]\nprompts = 0", ["rerank.prompts", ">= 1"]),
        ('[rerank]\nfile = "held.txt"', ["rerank.file", "held.txt", "does not exist"]),
        ('[rerank]\nafter_search = "yes"', ["rerank.after_search", "true or false"]),
        ("[rerank]\nheldout = 3", ["[rerank]", "'heldout'", "top_k", "seed"]),
    ],
)
def test_bad_fields_name_the_field_and_valid_values(tmp_path, text, needles):
    path = write(tmp_path, text + "\n")
    with pytest.raises(UsageError) as info:
        load_experiment(path)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


def test_a_file_with_several_mistakes_gets_all_of_them_in_one_run(tmp_path):
    from crdiff_search.config import ConfigErrors

    path = write(
        tmp_path,
        """
        study = "bad name"
        resolution = "64by64"
        bogus = 1
        [model]
        steps = "8"
        dtype = "fp8"
        [search]
        sampler = "grid"
        trials = 0
        [ratios]
        low = 0.6
        high = 0.2
        [rerank]
        top_k = 0
        heldout = 3
        """,
    )
    with pytest.raises(ConfigErrors) as info:
        load_experiment(path)
    problems = info.value.problems
    needles = [
        "'bogus'",
        "study = 'bad name'",
        "'64by64'",
        "model.steps",
        "model.dtype",
        "search.sampler",
        "search.trials",
        "0 <= low < high < 1",
        "rerank.top_k",
        "'heldout'",
    ]
    for needle in needles:
        assert sum(needle in p for p in problems) == 1, (needle, problems)
    assert len(problems) == len(needles)
    text = str(info.value)
    assert text.startswith(f"{len(needles)} problems in the experiment:")
    assert text.count("\n  - ") == len(needles)


def test_real_model_needs_prompts(tmp_path):
    model = config_only_model(tmp_path / "model")
    path = write(tmp_path, f'resolution = "32x32"\n[model]\nsource = "{model}"\n')
    with pytest.raises(UsageError, match="prompts: give `items`"):
        load_experiment(path)


def test_a_verdict_after_the_search_needs_held_out_prompts(tmp_path, capsys):
    from crdiff_search.cli import main
    from crdiff_search.config import check_heldout

    model = config_only_model(tmp_path / "model")
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\na dog\n")
    base = f'resolution = "32x32"\n[model]\nsource = "{model}"\n'
    for section in ('[prompts]\nitems = ["a cat"]\n', f'[prompts]\nfile = "{prompts}"\n'):
        path = write(tmp_path, base + section)
        config = load_experiment(path)  # a study without the verdict is fine
        with pytest.raises(UsageError, match="rerank.after_search = true .* no held-out") as info:
            check_heldout(config)
        assert "rerank.file" in str(info.value)
        check_heldout(config.replace(**{"rerank.after_search": False}))
        # `crdiff search` refuses before Ray starts, unless told to skip the verdict
        assert main(["search", str(path), "--no-tracking", "--out", str(tmp_path / "o")]) == 2
        assert "no held-out prompts" in capsys.readouterr().err
    path = write(tmp_path, base + f'[prompts]\nfile = "{prompts}"\ncount = 1\n')
    check_heldout(load_experiment(path))  # one line left to hold out
    path = write(tmp_path, base + f'[prompts]\nitems = ["a"]\n[rerank]\nfile = "{prompts}"\n')
    config = load_experiment(path)
    assert config.rerank.file == str(prompts)
    check_heldout(config)
    check_heldout(load_experiment(None))  # the testbed draws held-out captions itself


def test_resolution_must_divide_by_the_models_spatial_factor(tmp_path):
    model = config_only_model(tmp_path / "model")
    # A latent pipeline takes sides divisible by 8 (and by its VAE factor), read from configs only.
    assert model_info(str(model)).spatial_factor == 8
    path = write(
        tmp_path,
        f"""
        resolution = "30x32"
        [model]
        source = "{model}"
        [prompts]
        items = ["a cat"]
    """,
    )
    with pytest.raises(UsageError) as info:
        load_experiment(path)
    assert "divisible by 8" in str(info.value) and "24x32" in str(info.value)


@pytest.mark.parametrize("builder", ["tiny_sd_pipeline", "testbed"])
def test_search_and_generate_accept_the_same_resolutions(builder, tmp_path):
    """One rule for every command: the loaded pipeline's factor (generate, rerank) is the one
    the config files give (search), so a searched resolution can always be generated."""
    from crdiff_search import testing
    from crdiff_search.models import load_pipeline, spatial_factor

    if builder == "testbed":
        pipe, source = load_pipeline("testbed"), "testbed"
    else:
        pipe = getattr(testing, builder)()
        pipe.save_pretrained(tmp_path / "pipe")
        source = str(tmp_path / "pipe")
    assert spatial_factor(pipe) == model_info(source).spatial_factor


def test_known_hub_ids_are_checked_without_the_network():
    info = model_info("stabilityai/stable-diffusion-xl-base-1.0")
    assert info is not None and info.spatial_factor == 8
    with pytest.raises(UsageError, match="divisible by 8"):
        load_experiment(
            None,
            model="stabilityai/stable-diffusion-xl-base-1.0",
            resolution="500x560",
            **{"prompts.items": ["a cat"], "prompts.count": 1},
        )


def test_ratio_groups_the_partition_lacks(tmp_path):
    pytest.importorskip("crdiff_search.search_spaces.partition")
    model = config_only_model(tmp_path / "model")
    path = write(
        tmp_path,
        f"""
        resolution = "32x32"
        [model]
        source = "{model}"
        [prompts]
        items = ["a cat"]
        [ratios.groups]
        middle = [0.0, 0.3]
    """,
    )
    with pytest.raises(UsageError) as info:
        load_experiment(path)
    msg = str(info.value)
    assert "'middle'" in msg and "down" in msg and "up" in msg


def test_missing_experiment_file():
    with pytest.raises(UsageError, match="does not exist"):
        load_experiment("/nonexistent/exp.toml")


def test_parse_resolution():
    assert parse_resolution("400x560") == (400, 560)
    assert parse_resolution(" 48 X 32 ") == (48, 32)
    with pytest.raises(UsageError):
        parse_resolution("0x32")


def test_cli_exits_2_before_ray_starts(tmp_path):
    bad = [
        write(tmp_path, "[model]\nsteps = 'x'\n", "a.toml"),
        write(tmp_path, "[search]\nsampler = 'grid'\n", "b.toml"),
        write(tmp_path, "[prompts]\nfile = 'missing.txt'\n", "c.toml"),
    ]
    code = textwrap.dedent(f"""
        import sys
        from crdiff_search.cli import main
        codes = [main(["search", p]) for p in {[str(p) for p in bad]!r}]
        codes.append(main(["search", "--trials", "0"]))
        print("CODES", codes, "ray" in sys.modules, "torch" in sys.modules)
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("CODES")][0]
    assert line == "CODES [2, 2, 2, 2] False False", out.stdout + out.stderr
    assert "model.steps" in out.stderr and "search.sampler" in out.stderr
    assert "prompts.file" in out.stderr and "--trials" in out.stderr


SHIPPED = sorted(
    p for p in (REPO / "experiments").glob("*.toml") if "[[study]]" not in p.read_text()
)


def test_shipped_experiments_load_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    names = {p.stem for p in SHIPPED}
    assert {
        "testbed",
        "sd15-768x768",
        "sd15-400x560",
        "sd21-768x768",
        "sd21-480x360",
        "sdxl-512x512",
        "sdxl-400x560",
        "sdxl-480x360",
        "pixart-768x768",
    } <= names
    for path in SHIPPED:
        cfg = load_experiment(path)
        assert cfg.study == path.stem
        assert f"{cfg.width}x{cfg.height}" in path.stem or path.stem == "testbed"
        assert len(cfg.prompt_list()) == cfg.prompts.count
    # The testbed file spells out the embedded defaults.
    assert load_experiment(REPO / "experiments" / "testbed.toml") == load_experiment(None)


def test_grid_lists_every_real_study():
    from crdiff_search.launch import load_grid

    grid = load_grid(REPO / "experiments" / "grid.toml")
    listed = sorted(Path(s.experiment).name for s in grid.studies)
    assert listed == sorted(p.name for p in SHIPPED if not p.stem.startswith("testbed"))


def test_testbed_map_grid_plans_one_study_per_map_size(tmp_path):
    from crdiff_search.launch import load_grid, plan_grid
    from crdiff_search.testbed.evaluate import MAP_SIZES

    grid = load_grid(REPO / "experiments" / "testbed-map.toml", cwd=tmp_path)
    plans = plan_grid(grid)
    assert [p.resolution for p in plans] == [f"{w}x{h}" for w, h in MAP_SIZES]
    assert all(
        p.model == "testbed" and p.trials == load_experiment(None).search.trials for p in plans
    )
    assert all(p.out_dir == tmp_path / "runs" / "testbed-map" / p.name for p in plans)
    # a local head runs the jobs with this interpreter; each study re-ranks after its search
    assert all(p.entrypoint.startswith(f"{sys.executable} -m crdiff_search search") for p in plans)
    assert all("after_search = true" in p.study_toml for p in plans)


def test_prompt_files_skip_comments_and_reject_binary_with_one_line(tmp_path):
    from crdiff_search.config import read_prompt_file

    text = tmp_path / "p.txt"
    text.write_text("# held-out set\na red cat\n\n  a blue bus  \n")
    assert read_prompt_file(text) == ["a red cat", "a blue bus"]
    binary = tmp_path / "p.bin"
    binary.write_bytes(b"\xff\xfe\x00\x81 not text")
    with pytest.raises(UsageError, match=r"--prompts file .*p\.bin.* cannot be read as UTF-8"):
        read_prompt_file(binary, "--prompts file")


def test_validation_is_pure_it_imports_no_plugin_and_builds_no_sampler(monkeypatch):
    import crdiff_search.samplers._registry as registry
    from crdiff_search import validation
    from crdiff_search.runner.study import build_sampler

    def refuse(*args, **kwargs):
        raise AssertionError("validation built a sampler")

    monkeypatch.setattr(registry, "create_sampler", refuse)
    monkeypatch.setattr("crdiff_search.samplers.create_sampler", refuse)
    data = {"plugins": ["no_such_module_anywhere"], "search": {"sampler_options": {"patience": 3}}}
    config = validation.validate(data)  # the plug-in is not imported, the sampler not built
    assert config.plugins == ("no_such_module_anywhere",)
    with pytest.raises(ConfigErrors, match="no_such_module_anywhere.*cannot be imported"):
        ExperimentConfig.from_dict(data)  # loading imports it, as the step before validation
    monkeypatch.undo()
    bad_value = load_experiment(None, **{"search.sampler_options": {"patience": -1}})
    with pytest.raises(UsageError, match="search.sampler_options"):
        build_sampler(bad_value)  # values: checked when the driver builds it, before Ray


def test_paper_studies_run_the_reference_procedure(monkeypatch, tmp_path):
    """experiments/paper/: anneal-paper on the reference's 2 prompts with its one seed, 30
    steps, guidance 7.5, ImageReward's reference protocol, failures scored -2.0, one at a time;
    at most dense + 1 + 120 + 2 trials; every file listed in its grid."""
    from crdiff_search.launch import load_grid
    from crdiff_search.model_info import check_model, study_criterion
    from crdiff_search.runner.study import study_budget

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = REPO / "experiments" / "paper"
    files = sorted(folder.glob("*.toml"))
    studies = [p for p in files if p.name != "grid.toml"]
    assert {p.stem for p in studies} == {
        "sd15-768x768", "sd21-480x360", "sdxl-512x512", "sdxl-400x560", "sdxl-480x360",
    }  # fmt: skip
    for path in studies:
        cfg = load_experiment(path)
        assert cfg.study == f"paper-{path.stem}"
        assert (cfg.search.sampler, cfg.search.trials, cfg.search.concurrency) == (
            "anneal-paper",
            120,
            1,
        )
        assert study_budget(cfg) == 1 + 1 + 120 + 2
        assert cfg.prompt_list() == [
            "A cat holding a sign that says hello world",
            "A billboard in Times Square showing the text 'FUTURE IS NOW' in bold neon letters",
        ]
        assert cfg.seed_list() == [24432, 24432]
        assert (cfg.model.steps, cfg.model.guidance, cfg.model.scheduler) == (30, 7.5, "default")
        assert cfg.objective.names == ("imagereward",)
        assert cfg.objective.options_for("imagereward") == {"resize": "reference"}
        assert cfg.objective.failed_image_score == -2.0
        assert cfg.ratios.bounds("down") == (0.1, 0.8)
        assert check_model(cfg) is not None and study_criterion(cfg) == "magnitude"
        from crdiff_search.runner import prepare

        groups, summary = prepare(cfg)  # what `crdiff search --dry-run` checks
        assert groups == ("down", "mid", "up") and summary["max_trials"] == 124
    grid = load_grid(folder / "grid.toml")
    assert sorted(Path(s.experiment).name for s in grid.studies) == [p.name for p in studies]
    from crdiff_search.launch import plan_grid

    plans = plan_grid(load_grid(folder / "grid.toml", cwd=tmp_path))
    assert len(plans) == 5 and all(p.trials == 124 for p in plans)
    stopped = plans[0].out_dir
    stopped.mkdir(parents=True)
    (stopped / "sampler_stopped.json").write_text("{}")
    assert plans[0].table_complete() and not plans[1].table_complete()


@pytest.mark.parametrize(
    "objective, message",
    [
        ({"name": "scene", "failed_image_score": "low"}, "failed_image_score must be a number"),
        ({"name": "scene", "failed_image_score": float("nan")}, "must be a finite number"),
        ({"name": "fid", "failed_image_score": -2.0}, "'fid' is a set metric"),
    ],
)
def test_failed_image_score_is_checked(objective, message):
    with pytest.raises(UsageError, match=message):
        ExperimentConfig.from_dict({"objective": objective})


def test_failed_image_score_round_trips_and_criterion_defaults_to_auto():
    cfg = ExperimentConfig.from_dict({"objective": {"name": "scene", "failed_image_score": -2}})
    assert cfg.objective.failed_image_score == -2.0 and cfg.partition.criterion == "auto"
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg
    assert "failed_image_score" not in ExperimentConfig.from_dict({}).to_dict()["objective"]


def test_the_pruner_layout_reaches_the_worker(tmp_path):
    """[resources] pruner_* choose the worker's Pruner layout (memory on a GPU, RAM on CPU)."""
    from crdiff_search.runner import worker
    from crdiff_search.runner.spec import WorkerSpec

    path = write(
        tmp_path,
        '[resources]\npruner_cache = "histogram"\npruner_backup = "host"\n'
        "pruner_device_budget = 0.5\n",
    )
    config = load_experiment(path)
    spec = WorkerSpec.from_config(config, prompts=["one red cube"], seeds=[0])
    assert spec.pruner == {"cache": "histogram", "backup": "host", "device_budget": 0.5}
    default = WorkerSpec.from_config(load_experiment(None), prompts=["a"], seeds=[0])
    assert spec.load_key() != default.load_key()  # another layout is another loaded state
    state, loaded = worker.worker_state(spec)
    assert loaded and (state.pruner.cache, state.pruner.backup) == ("histogram", "host")
    assert state.pruner.host_backup
