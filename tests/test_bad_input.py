"""A corpus of malformed inputs, run through the CLI as a user would: every case exits 2, prints
no traceback, and names the bad field or value (and nothing starts: no Ray, no model)."""

from __future__ import annotations

import json
import sys

import pytest

from crdiff_search.cli import main

# ---- experiment files: (TOML text, what the message must name)
EXPERIMENTS = {
    "version string": ('version = "1"', "version must be an integer"),
    "version bool": ("version = true", "version must be an integer"),
    "version 2": ("version = 2", "version = 2 is not supported"),
    "study with space": ('study = "a b"', "study = 'a b'"),
    "study empty": ('study = ""', "study = ''"),
    "study number": ("study = 3", "study must be a string"),
    "resolution words": ('resolution = "big"', "resolution 'big'"),
    "resolution zero": ('resolution = "0x32"', "resolution '0x32'"),
    "resolution negative": ('resolution = "-8x32"', "resolution '-8x32'"),
    "resolution huge": ('resolution = "100000x100000"', "over the limit"),
    "resolution number": ("resolution = 32", "resolution must be a string"),
    "resolution odd": ('resolution = "30x30"', "30x30"),
    "unknown top key": ("colour = 1", "unknown key(s) 'colour'"),
    "plugins string": ('plugins = "x"', "plugins must be an array"),
    "plugins missing": ('plugins = ["no_such_mod_zz"]', "no_such_mod_zz"),
    "plugins number": ("plugins = [3]", "plugins[0] must be a string"),
    "model table scalar": ('model = "x"', "[model] must be a table"),
    "model unknown key": ("[model]\nsize = 1", "unknown key(s) 'size'"),
    "model source empty": ('[model]\nsource = ""', "model.source is empty"),
    "model source missing": (
        '[model]\nsource = "/no/such/model"\n[prompts]\nitems = ["a"]\n[rerank]\nafter_search = false',
        "/no/such/model",
    ),
    "model dtype": ('[model]\ndtype = "f8"', "model.dtype = 'f8'"),
    "model dtype number": ("[model]\ndtype = 16", "model.dtype must be a string"),
    "model scheduler": ('[model]\nscheduler = "fast"', "model.scheduler = 'fast'"),
    "model steps zero": ("[model]\nsteps = 0", "model.steps must be >= 1"),
    "model steps float": ("[model]\nsteps = 2.5", "model.steps must be an integer"),
    "model steps string": ('[model]\nsteps = "8"', "model.steps must be an integer"),
    "model guidance nan": ("[model]\nguidance = nan", "model.guidance must be a finite number"),
    "model guidance inf": ("[model]\nguidance = inf", "model.guidance must be a finite number"),
    "model guidance string": ('[model]\nguidance = "x"', "model.guidance must be a number"),
    "model device gpu": ('[model]\ndevice = "gpu"', "cuda:N"),
    "model device cuda x": ('[model]\ndevice = "cuda:x"', "cuda:N"),
    "model device number": ("[model]\ndevice = 0", "model.device must be a string"),
    "prompts scalar": ('prompts = "a cat"', "[prompts] must be a table"),
    "prompts unknown": ("[prompts]\nn = 3", "unknown key(s) 'n'"),
    "prompts items string": ('[prompts]\nitems = "a cat"', "prompts.items must be an array"),
    "prompts items numbers": ("[prompts]\nitems = [1, 2]", "prompts.items[0]"),
    "prompts file missing": ('[prompts]\nfile = "nope.txt"', "nope.txt"),
    "prompts file folder": ('[prompts]\nfile = "."', "is a folder"),
    "prompts count zero": ("[prompts]\ncount = 0", "prompts.count"),
    "prompts count string": ('[prompts]\ncount = "8"', "prompts.count must be an integer"),
    "prompts count over items": ('[prompts]\nitems = ["a"]\ncount = 5', "prompts.count = 5"),
    "prompts seeds short": (
        '[prompts]\nitems = ["a", "b"]\nseeds = [1]',
        "prompts.seeds lists 1 seeds for 2",
    ),
    "prompts seeds long": (
        '[prompts]\nitems = ["a", "b"]\nseeds = [1, 2, 3]',
        "prompts.seeds lists 3 seeds for 2",
    ),
    "prompts seeds float": ("[prompts]\nseeds = 1.5", "prompts.seeds must be an integer"),
    "prompts chunk negative": ("[prompts]\nchunk_size = -1", "prompts.chunk_size"),
    "prompts batch string": ('[prompts]\nbatch_size = "4"', "prompts.batch_size"),
    "objective name": ('[objective]\nname = "psnr"', "objective.name = 'psnr'"),
    "objective name number": ("[objective]\nname = 3", "objective.name"),
    "objective name empty list": ("[objective]\nname = []", "objective.name is empty"),
    "objective twice": ('[objective]\nname = ["scene", "scene"]', "lists a name twice"),
    "objective weights count": (
        '[objective]\nname = "scene"\nweights = [1.0, 2.0]',
        "objective.weights has 2 values",
    ),
    "objective weight string": ('[objective]\nweights = ["x"]', "objective.weights[0]"),
    "objective mode": ('[objective]\nmode = "up"', "objective.mode = 'up'"),
    "objective mode against fid": ('[objective]\nname = "fid"\nmode = "max"', "lower-is-better"),
    "objective option unknown": (
        "[objective]\noptions = { colour = 1 }",
        "does not take option 'colour'",
    ),
    "objective options scalar": ("[objective]\noptions = 3", "objective.options must be a table"),
    "objective relative unknown": (
        '[objective]\nrelative = ["clip"]',
        "objective.relative[0] = 'clip'",
    ),
    "objective relative set metric": (
        '[objective]\nname = "fid"\nrelative = ["fid"]',
        "set metric",
    ),
    "composite bad term": (
        '[objective]\nname = "composite"\noptions = { terms = [{ name = "nope" }] }',
        "unknown objective 'nope'",
    ),
    "composite term weight": (
        '[objective]\nname = "composite"\noptions = { terms = [{ name = "scene", weight = "x" }] }',
        "weight must be a finite number",
    ),
    "partition granularity": ('[partition]\ngranularity = "layer"', "partition.granularity"),
    "partition include kind": ('[partition]\ninclude = ["conv"]', "partition.include[0]"),
    "partition include string": ('[partition]\ninclude = "ff"', "partition.include must be"),
    "partition n_groups negative": ("[partition]\nn_groups = -1", "partition.n_groups"),
    "partition criterion": ('[partition]\ncriterion = "taylor"', "taylor"),
    "ratios low high": ("[ratios]\nlow = 0.9\nhigh = 0.1", "ratios"),
    "ratios high one": ("[ratios]\nhigh = 1.0", "ratios"),
    "ratios negative": ("[ratios]\nlow = -0.1", "ratios"),
    "ratios string": ('[ratios]\nlow = "a"', "ratios.low must be a number"),
    "ratios nan": ("[ratios]\nhigh = nan", "ratios.high must be a finite number"),
    "ratios unknown group": ("[ratios.groups]\nmiddle = [0.1, 0.2]", "middle"),
    "ratios group scalar": ("[ratios.groups]\nmid = 0.2", "ratios.groups.mid"),
    "search sampler": ('[search]\nsampler = "bayes"', "search.sampler = 'bayes'"),
    "search trials zero": ("[search]\ntrials = 0", "search.trials must be >= 1"),
    "search trials float": ("[search]\ntrials = 1.5", "search.trials must be an integer"),
    "search trials bool": ("[search]\ntrials = true", "search.trials must be an integer"),
    "search concurrency": ("[search]\nconcurrency = 0", "search.concurrency"),
    "search retries": ("[search]\nretries = -1", "search.retries"),
    "search seed string": ('[search]\nseed = "0"', "search.seed must be an integer"),
    "search early stopping": ('[search]\nearly_stopping = "yes"', "search.early_stopping"),
    "search option unknown": (
        "[search]\nsampler_options = { speed = 2 }",
        "does not accept option(s) speed",
    ),
    "search option value": (
        "[search]\nsampler_options = { patience = -3 }",
        "search.sampler_options",
    ),
    "search options scalar": ("[search]\nsampler_options = 2", "search.sampler_options must be"),
    "resources cpu": ("[resources]\ncpu = 0", "resources"),
    "resources gpu": ("[resources]\ngpu = -1", "resources"),
    "resources string": ('[resources]\ncpu = "2"', "resources.cpu must be a number"),
    "tracking enabled": ('[tracking]\nenabled = "no"', "tracking.enabled"),
    "tracking scheme": ('[tracking]\nuri = "ftp://x/y"', "unknown scheme 'ftp'"),
    "tracking no scheme": ('[tracking]\nuri = "somewhere"', "no scheme"),
    "rerank top_k": ("[rerank]\ntop_k = 0", "rerank.top_k"),
    "rerank weights empty": ("[rerank]\nweights = []", "rerank.weights is empty"),
    "rerank weight negative": ("[rerank]\nweights = [-1.0]", "rerank.weights"),
    "rerank prompts": ("[rerank]\nprompts = 0", "rerank.prompts"),
    "rerank file missing": ('[rerank]\nfile = "held.txt"', "held.txt"),
    "not toml": ("[model\nsource = 1", "is not valid TOML"),
}


def _run(argv, capsys):
    rc = main(argv)
    captured = capsys.readouterr()
    return rc, captured.err.strip()


def _no_work_started():
    return "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


@pytest.mark.parametrize("case", list(EXPERIMENTS))
def test_malformed_experiment_files(case, tmp_path, capsys, monkeypatch):
    text, expected = EXPERIMENTS[case]
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "exp.toml"
    path.write_text(text + "\n")
    rc, err = _run(["search", str(path), "--dry-run"], capsys)
    assert rc == 2, err
    assert expected in err, err
    assert "Traceback" not in err and _no_work_started()


ENCODINGS = {
    "latin-1": 'study = "caf\xe9"\n'.encode("latin-1"),
    "utf-16": 'study = "x"\n'.encode("utf-16"),
    "binary": bytes(range(256)),
}


@pytest.mark.parametrize("encoding", list(ENCODINGS))
@pytest.mark.parametrize("kind", ["experiment", "grid", "prompts", "recipe"])
def test_files_that_are_not_utf8_are_named_with_the_problem(kind, encoding, tmp_path, capsys):
    bad = tmp_path / f"bad.{kind}"
    bad.write_bytes(ENCODINGS[encoding])
    argv = {
        "experiment": ["search", str(bad), "--dry-run"],
        "grid": ["launch", str(bad), "--dry-run"],
        "prompts": ["generate", "--model", "testbed", "--resolution", "32x32", "--prompts", str(bad),
                    "--recipe", "none", "--out", str(tmp_path / "o")],
        "recipe": ["generate", "--model", "testbed", "--resolution", "32x32", "--prompt", "a",
                   "--recipe", str(bad), "--out", str(tmp_path / "o")],
    }[kind]  # fmt: skip
    rc, err = _run(argv, capsys)
    assert rc == 2, err
    assert str(bad) in err and ("UTF-8" in err or "utf-8" in err), err
    assert "Traceback" not in err


# ---- grids: (TOML text, expected)
GRIDS = {
    "version bool": ("version = true", "version = True"),
    "version 3": ("version = 3", "version = 3"),
    "no studies": ("version = 1", "study"),
    "study not table": ('version = 1\nstudy = "x"', "study"),
    "unknown key": ("version = 1\ncolour = 2\n[[study]]\nexperiment = 'e.toml'", "colour"),
    "missing experiment": ("version = 1\n[[study]]\nexperiment = 'nope.toml'", "nope.toml"),
    "experiment number": ("version = 1\n[[study]]\nexperiment = 3", "experiment"),
    "bad override": (
        "version = 1\n[[study]]\nexperiment = 'e.toml'\nsampler = 'bayes'",
        "search.sampler = 'bayes'",
    ),
    "bad resolution": (
        "version = 1\n[[study]]\nexperiment = 'e.toml'\nresolution = 'big'",
        "resolution 'big'",
    ),
    "duplicate names": (
        "version = 1\n[[study]]\nexperiment = 'e.toml'\n[[study]]\nexperiment = 'e.toml'",
        "both named",
    ),
    "env not table": ("version = 1\nenv = 3\n[[study]]\nexperiment = 'e.toml'", "env"),
    "defaults not table": (
        "version = 1\ndefaults = 3\n[[study]]\nexperiment = 'e.toml'",
        "defaults",
    ),
    "not toml": ("version = = 1", "is not valid TOML"),
}


@pytest.mark.parametrize("case", list(GRIDS))
def test_malformed_grids(case, tmp_path, capsys, monkeypatch):
    text, expected = GRIDS[case]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "e.toml").write_text('study = "e"\n[search]\ntrials = 2\n')
    grid = tmp_path / "grid.toml"
    grid.write_text(text + "\n")
    rc, err = _run(["launch", str(grid), "--dry-run"], capsys)
    assert rc == 2, err
    assert expected in err, err
    assert "Traceback" not in err


# ---- recipes: (changes to a valid recipe's JSON, expected)
RECIPES = {
    "ratios list": ({"ratios": [0.1, 0.2]}, "ratios"),
    "ratios empty": ({"ratios": {}}, "ratios"),
    "ratio nan": ({"ratios": {"down": float("nan")}}, "recipe ratio for group 'down'"),
    "ratio inf": ({"ratios": {"down": float("inf")}}, "recipe ratio for group 'down'"),
    "ratio one": ({"ratios": {"down": 1.0}}, "valid ratios are in [0, 1)"),
    "ratio string": ({"ratios": {"down": "0.2"}}, "recipe ratio for group 'down'"),
    "width string": ({"width": "32"}, "'width' must be a positive integer"),
    "width float": ({"width": 32.5}, "'width' must be a positive integer"),
    "height zero": ({"height": 0}, "'height' must be a positive integer"),
    "poa_w nan": ({"poa_w": float("nan")}, "poa_w"),
    "poa_w string": ({"poa_w": "1.5"}, "poa_w"),
    "poa window scalar": ({"poa_window": 0.5}, "poa_window must be null or [lo, hi]"),
    "poa window order": ({"poa_window": [0.9, 0.1]}, "poa_window"),
    "guidance nan": ({"guidance": float("nan")}, "guidance"),
    "steps zero": ({"steps": 0}, "steps"),
    "scores nan": ({"scores": {"dense": float("nan")}}, "scores must be finite"),
    "scores list": ({"scores": [1]}, "scores"),
    "criterion": ({"criterion": "taylor"}, "criterion 'taylor'"),
    "partition scalar": ({"partition": "paper"}, "partition"),
    "partition granularity": ({"partition": {"granularity": "layer"}}, "granularity 'layer'"),
    "partition include": ({"partition": {"granularity": "paper", "include": ["x"]}}, "include"),
    "unknown field": ({"colour": 1}, "unknown fields ['colour']"),
    "schema bool": ({"schema_version": True}, "schema_version True"),
    "schema 9": ({"schema_version": 9}, "schema_version 9"),
    "model empty": ({"model": ""}, "'model' must be a non-empty string"),
    "not an object": ([1, 2], "must be a JSON object"),
    "higher_is_better": ({"higher_is_better": "yes"}, "higher_is_better"),
}


@pytest.mark.parametrize("case", list(RECIPES))
def test_malformed_recipes(case, tmp_path, capsys):
    from crdiff_search.recipe import Recipe

    changes, expected = RECIPES[case]
    good = Recipe(model="testbed", width=32, height=32, ratios={"down": 0.2, "mid": 0.1, "up": 0.3})
    if isinstance(changes, dict):
        data = {**good.to_dict(), **changes}
        data.pop("checksum", None)
    else:
        data = changes
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(data))  # json writes NaN as NaN, as a hand edit might
    argv = ["generate", "--model", "testbed", "--resolution", "32x32", "--prompt", "a",
            "--recipe", str(path), "--out", str(tmp_path / "o")]  # fmt: skip
    rc, err = _run(argv, capsys)
    assert rc == 2, err
    assert expected in err, err
    assert "Traceback" not in err


def test_a_recipe_is_never_written_with_nan():
    from crdiff_search.recipe import Recipe

    recipe = Recipe(model="testbed", width=32, height=32, ratios={"down": 0.2})
    object.__setattr__(recipe, "poa_w", float("nan"))  # past validation, as a bug would
    with pytest.raises(ValueError):
        recipe.to_json()


# ---- CLI arguments: (argv, expected)
ARGS = {
    "search trials zero": (["search", "--trials", "0", "--dry-run"], "--trials must be >= 1"),
    "search concurrency": (["search", "--concurrency", "0", "--dry-run"], "--concurrency"),
    "search sampler": (["search", "--sampler", "bayes", "--dry-run"], "'bayes'"),
    "search tracking scheme": (["search", "--tracking-uri", "ftp://x", "--dry-run"], "ftp"),
    "search missing file": (["search", "nope.toml", "--dry-run"], "nope.toml"),
    "search folder as file": (["search", ".", "--dry-run"], "is a folder"),
    "generate device": (
        [
            "generate",
            "--model",
            "testbed",
            "--resolution",
            "32x32",
            "--prompt",
            "a",
            "--device",
            "gpu",
            "--recipe",
            "none",
        ],
        "cuda:N",
    ),  # fmt: skip
    "generate dtype": (
        [
            "generate",
            "--model",
            "testbed",
            "--resolution",
            "32x32",
            "--prompt",
            "a",
            "--dtype",
            "f8",
            "--recipe",
            "none",
        ],
        "dtype 'f8'",
    ),  # fmt: skip
    "generate resolution huge": (
        [
            "generate",
            "--model",
            "testbed",
            "--resolution",
            "100000x100000",
            "--prompt",
            "a",
            "--recipe",
            "none",
        ],
        "over the limit",
    ),  # fmt: skip
    "generate resolution words": (
        ["generate", "--model", "testbed", "--resolution", "big", "--prompt", "a"],
        "resolution 'big'",
    ),  # fmt: skip
    "generate no prompt": (
        ["generate", "--model", "testbed", "--resolution", "32x32", "--recipe", "none"],
        "--prompt",
    ),  # fmt: skip
    "generate steps": (
        [
            "generate",
            "--model",
            "testbed",
            "--resolution",
            "32x32",
            "--prompt",
            "a",
            "--steps",
            "0",
            "--recipe",
            "none",
        ],
        "--steps 0",
    ),  # fmt: skip
    "generate prompts folder": (
        [
            "generate",
            "--model",
            "testbed",
            "--resolution",
            "32x32",
            "--prompts",
            ".",
            "--recipe",
            "none",
        ],
        "is a folder",
    ),  # fmt: skip
    "generate missing recipe": (
        [
            "generate",
            "--model",
            "testbed",
            "--resolution",
            "32x32",
            "--prompt",
            "a",
            "--recipe",
            "nope.json",
        ],
        "nope.json",
    ),  # fmt: skip
    "rerank missing folder": (["rerank", "no/such/study"], "no/such/study"),
    "export missing folder": (["export", "no/such/study"], "no/such/study"),
    "launch missing grid": (["launch", "nope.toml", "--dry-run"], "nope.toml"),
}


@pytest.mark.parametrize("case", list(ARGS))
def test_bad_command_line_arguments(case, tmp_path, capsys, monkeypatch):
    argv, expected = ARGS[case]
    monkeypatch.chdir(tmp_path)
    rc, err = _run(argv, capsys)
    assert rc == 2, err
    assert expected in err, err
    assert "Traceback" not in err and _no_work_started()


def test_the_corpus_has_at_least_a_hundred_cases():
    n = len(EXPERIMENTS) + len(GRIDS) + len(RECIPES) + len(ARGS) + 4 * len(ENCODINGS)
    assert n >= 100, n
