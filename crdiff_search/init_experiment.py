"""A ready experiment file for one model at one resolution (``crdiff init``).

The model is checked as ``crdiff search`` checks it (:func:`~crdiff_search.model_info.check_model`:
the spatial factor, the partition's groups, the criterion), from its config files only: the
testbed, a local ``save_pretrained`` folder, or a hub id already in the local Hugging Face
cache (never downloaded with ``HF_HUB_OFFLINE=1``). The file gets the pipeline class's sampling
defaults (:data:`PIPELINE_DEFAULTS`), the groups found (as a comment), a prompts file that the
user fills (written empty, with a comment header, when it does not exist) and every section
commented. Before anything is written the text is loaded back through the config's own
validation.

Example::

    from crdiff_search.init_experiment import write_experiment

    result = write_experiment("testbed", "24x24", out="tb.toml")
    result.groups         # ('down', 'mid', 'up')
    result.prompts_path   # tb.prompts.txt: fill it, then `crdiff search tb.toml --dry-run`
"""

from __future__ import annotations

import os
import re
import textwrap
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crdiff_search.config import (
    CONFIG_VERSION,
    REAL_SAMPLING,
    ExperimentConfig,
    PromptSpec,
    RatioBounds,
    RerankSpec,
    Resources,
    SearchSpec,
    read_prompt_file,
)
from crdiff_search.errors import CrdiffError, ModelSourceError, UsageError
from crdiff_search.names import DEVICES, DTYPES, GRANULARITIES, SCHEDULERS
from crdiff_search.resolution import format_resolution, parse_resolution
from crdiff_search.testbed import DEFAULT_GUIDANCE, DEFAULT_STEPS


@dataclass(frozen=True)
class PipelineDefaults:
    """How a pipeline class is sampled when nothing else is said (``[model]``)."""

    steps: int
    guidance: float
    dtype: str
    scheduler: str  # a name of names.SCHEDULERS; "default" keeps the pipeline's own
    note: str  # why, in a few words (written as a comment)


# Sampling defaults by pipeline class (model_index.json's _class_name): the one table.
PIPELINE_DEFAULTS: dict[str, PipelineDefaults] = {
    "ScenePipeline": PipelineDefaults(
        DEFAULT_STEPS, DEFAULT_GUIDANCE, "float32", "default", "the testbed's own"
    ),
    "StableDiffusionPipeline": PipelineDefaults(
        25, 7.5, "float16", "dpm++", "SD1.x / SD2.x: 25-30 steps, guidance 7.5"
    ),
    "StableDiffusionXLPipeline": PipelineDefaults(
        25, 5.0, "bfloat16", "dpm++", "SDXL: guidance 5-7; its stock VAE overflows in float16"
    ),
    "PixArtAlphaPipeline": PipelineDefaults(20, 4.5, "float16", "dpm++", "PixArt: guidance 4.5"),
    "PixArtSigmaPipeline": PipelineDefaults(20, 4.5, "float16", "dpm++", "PixArt: guidance 4.5"),
    "DiTPipeline": PipelineDefaults(
        25, 4.0, "float16", "default", "DiT: class-conditional, guidance 4"
    ),
    "StableDiffusion3Pipeline": PipelineDefaults(
        28, 7.0, "bfloat16", "default", "SD3: 28 steps, guidance 7 (SD3.5: 3.5-4.5)"
    ),
    "FluxPipeline": PipelineDefaults(
        28, 3.5, "bfloat16", "default", "Flux.1-dev: 28 steps, guidance 3.5 (schnell: 4, 0)"
    ),
}
# Any other pipeline class: the config's own real-model defaults.
FALLBACK_DEFAULTS = PipelineDefaults(
    *REAL_SAMPLING, "float16", "default", "no defaults known for this pipeline class"
)


@dataclass(frozen=True)
class StudyDefaults:
    """The study around the model: prompts, ratio range, budget, resources."""

    prompts: int
    chunk_size: int
    batch_size: int
    ratios: tuple[float, float]
    trials: int
    concurrency: int
    retries: int
    cpu: float
    gpu: float


# The testbed: the embedded testbed study's own values (ExperimentConfig's defaults).
TESTBED_STUDY = StudyDefaults(
    PromptSpec.count,
    PromptSpec.chunk_size,
    PromptSpec.batch_size,
    (RatioBounds.low, RatioBounds.high),
    SearchSpec.trials,
    SearchSpec.concurrency,
    SearchSpec.retries,
    Resources.cpu,
    Resources.gpu,
)


def real_study() -> StudyDefaults:
    """A real model: the paper's range and budget, one GPU per trial, one trial at a time."""
    from crdiff_search.search_spaces.bounds import PAPER_BOUNDS

    return StudyDefaults(32, 8, 8, PAPER_BOUNDS, 120, 1, 2, 4.0, 1.0)


# Where each built-in scorer looks for its weights: (in words, an example `options` table).
OBJECTIVE_WEIGHTS: dict[str, tuple[str, str]] = {
    "scene": ("none: it parses the testbed's scene captions (objectives/scene.py)", ""),
    "imagereward": (
        "ImageReward.pt and med_config.json from options checkpoint / med_config, else "
        "$CRDIFF_IMAGEREWARD_CHECKPOINT / $CRDIFF_IMAGEREWARD_MED_CONFIG, else the Hugging Face "
        "cache (THUDM/ImageReward); the BERT vocab.txt from option vocab, $CRDIFF_BERT_VOCAB "
        "or the cache (google-bert/bert-base-uncased)",
        '{ checkpoint = "/models/ImageReward.pt", med_config = "/models/med_config.json" }',
    ),
    "clip": (
        "open_clip model (option model, default ViT-L-14) with option pretrained (a tag, "
        "default openai, from the Hugging Face cache, or a local file), else "
        "$CRDIFF_CLIP_CHECKPOINT",
        '{ model = "ViT-L-14", pretrained = "/models/open_clip_vit_l14.safetensors" }',
    ),
    "pickscore": (
        "options model / processor (local folders or cached hub ids), else "
        "$CRDIFF_PICKSCORE_MODEL / $CRDIFF_PICKSCORE_PROCESSOR, else the Hugging Face cache "
        "(yuvalkirstain/PickScore_v1, laion/CLIP-ViT-H-14-laion2B-s32B-b79K)",
        '{ model = "/models/PickScore_v1", processor = "/models/CLIP-ViT-H-14" }',
    ),
    "aesthetic": (
        "option weights or $CRDIFF_AESTHETIC_WEIGHTS (sac+logos+ava1-l14-linearMSE.pth); its "
        "CLIP as for clip (clip_model, clip_pretrained, $CRDIFF_CLIP_CHECKPOINT)",
        '{ weights = "/models/sac+logos+ava1-l14-linearMSE.pth" }',
    ),
    "fid": (
        "reference images from option reference or $CRDIFF_FID_REFERENCE; InceptionV3 from "
        "option inception_weights, $CRDIFF_INCEPTION_WEIGHTS or the torch hub cache",
        '{ reference = "/data/reference-images" }',
    ),
    "kid": (
        "as for fid: option reference or $CRDIFF_FID_REFERENCE; option inception_weights, "
        "$CRDIFF_INCEPTION_WEIGHTS or the torch hub cache",
        '{ reference = "/data/reference-images" }',
    ),
    "composite": ("those of its terms (each name as on its own)", ""),
}
_MISSING_WEIGHTS = (
    "Missing weights stop the first trial with an error listing every place tried; nothing "
    "falls back to random weights."
)


@dataclass(frozen=True)
class InitResult:
    """What :func:`write_experiment` wrote and found."""

    path: Path
    prompts_path: Path
    prompts_written: bool  # False: the prompts file was there already (kept as it is)
    prompts_in_file: int  # prompts the prompts file holds now (0 for a new one)
    config: ExperimentConfig  # as validated (with placeholder prompts)
    groups: tuple[str, ...]
    criterion: str  # partition.criterion made concrete for the model
    spatial_factor: int
    pipeline_class: str
    denoiser_class: str
    text: str


def pipeline_defaults(pipeline_class: str) -> PipelineDefaults:
    """The sampling defaults of a pipeline class (:data:`FALLBACK_DEFAULTS` when unknown)."""
    return PIPELINE_DEFAULTS.get(pipeline_class, FALLBACK_DEFAULTS)


def default_objective(source: str) -> str:
    return "scene" if source == "testbed" else "imagereward"


def _looks_like_path(source: str) -> bool:
    windows = os.sep != "/" and os.sep in source
    return source.startswith((".", "/", "~")) or source.count("/") > 1 or windows


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")


def resolve_source(source: str) -> tuple[str, Any]:
    """The source as the file will name it (a local folder made absolute) and its
    :class:`~crdiff_search.model_info.ModelInfo`, read from config files only."""
    from crdiff_search.model_info import model_info

    source = source.strip()
    if not source:
        raise UsageError("MODEL is empty; valid: 'testbed', a save_pretrained folder or a hub id")
    if source == "testbed":
        info = model_info(source)
        if info is None:
            raise ModelSourceError("the testbed's weights are missing from this installation")
        return source, info
    local = Path(source).expanduser()
    if local.exists():
        if not local.is_dir():
            raise UsageError(
                f"model {source!r} is a file; give a folder written by save_pretrained"
            )
        local = local.resolve()
        return str(local), model_info(str(local))
    if _looks_like_path(source):
        raise ModelSourceError(f"model {source!r}: no such folder")
    info = model_info(source)
    if info is None:
        why = (
            "HF_HUB_OFFLINE is set, so nothing is downloaded"
            if _hub_offline()
            else "and its config files could not be downloaded"
        )
        raise ModelSourceError(
            f"model {source!r}: its config files (model_index.json, unet/ or transformer/ "
            f"config.json) are not in the local Hugging Face cache ({why}). Fetch them with "
            f"`hf download {source} --include '*.json'` (or the whole model), or pass a local "
            "folder written by save_pretrained"
        )
    return source, info


def _study_name(source: str, resolution: str) -> str:
    base = "testbed" if source == "testbed" else Path(source.rstrip("/")).name
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-.") or "study"
    return f"{name}-{resolution}".lower()


def _plan(
    source: str,
    info,
    resolution: str,
    *,
    study: str,
    objective: str,
    granularity: str,
    include: Sequence[str],
    n_groups: int,
    prompts_file: str,
) -> dict[str, Any]:
    """The experiment as a dict in the file's own spelling."""
    sampling = pipeline_defaults(info.pipeline_class)
    prof = TESTBED_STUDY if source == "testbed" else real_study()
    objective_table: dict[str, Any] = {"name": objective}
    if objective == "composite":
        term = default_objective(source)
        objective_table["options"] = {"terms": [{"name": term, "weight": 1.0}]}
    partition: dict[str, Any] = {"granularity": granularity}
    if include:
        partition["include"] = list(include)
    if n_groups:
        partition["n_groups"] = n_groups
    partition["criterion"] = "auto"
    rerank = RerankSpec()
    return {
        "version": CONFIG_VERSION,
        "study": study,
        "resolution": resolution,
        "plugins": [],
        "model": {
            "source": source,
            "dtype": sampling.dtype,
            "scheduler": sampling.scheduler,
            "steps": sampling.steps,
            "guidance": sampling.guidance,
            "device": "auto",
        },
        "prompts": {
            "file": prompts_file,
            "count": prof.prompts,
            "seeds": 0,
            "chunk_size": prof.chunk_size,
            "batch_size": prof.batch_size,
        },
        "objective": objective_table,
        "partition": partition,
        "ratios": {"low": prof.ratios[0], "high": prof.ratios[1]},
        "search": {
            "sampler": SearchSpec.sampler,
            "trials": prof.trials,
            "concurrency": prof.concurrency,
            "seed": 0,
            "early_stopping": False,
            "retries": prof.retries,
        },
        "resources": {"cpu": float(prof.cpu), "gpu": float(prof.gpu)},
        "tracking": {"enabled": True, "uri": "", "experiment": ""},
        "rerank": {
            "after_search": rerank.after_search,
            "top_k": rerank.top_k,
            "weights": list(rerank.weights),
            "prompts": rerank.prompts,
            "seed": rerank.seed,
            "file": "",
        },
    }


def _placeholder_prompts(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with its prompts file replaced by inline placeholders (the file is empty until
    the user fills it; everything else is checked now)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    prompts = out.get("prompts", {})
    count = prompts.get("count", 1)
    prompts.pop("file", None)
    prompts["items"] = [f"placeholder prompt {i}" for i in range(count)]
    return out


def _validated(data: dict[str, Any]) -> ExperimentConfig:
    from crdiff_search.validation import import_plugins

    import_plugins(data)
    return ExperimentConfig.from_dict(_placeholder_prompts(data))


# ------------------------------------------------------------------------------- TOML writing
def _value(value: Any) -> str:
    """One TOML value on one line (inline tables and arrays included)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        import tomli_w

        return tomli_w.dumps({"v": value})[len("v = ") :].strip()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as TOML")


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else _value(name)


def _line(key: str, value: Any, comment: str = "") -> str:
    text = f"{key} = {_value(value)}"
    return f"{text:<24} # {comment}" if comment else text


def _comment(text: str, width: int = 96) -> list[str]:
    return textwrap.wrap(
        text,
        width - 2,
        initial_indent="# ",
        subsequent_indent="# ",
        break_long_words=False,
        break_on_hyphens=False,
    )


def _render(
    data: dict[str, Any],
    *,
    info,
    groups: Sequence[str],
    criterion: str,
    command: str,
    trained_at: tuple[int, int] | None,
) -> str:
    from crdiff_search.samplers import SAMPLER_NAMES

    m, p, o = data["model"], data["prompts"], data["objective"]
    part, r, s = data["partition"], data["ratios"], data["search"]
    res, rr, tr = data["resources"], data["rerank"], data["tracking"]
    sampling = pipeline_defaults(info.pipeline_class)
    f = info.spatial_factor
    trained = f", trained at {format_resolution(*trained_at)}" if trained_at else ""
    testbed = m["source"] == "testbed"
    out: list[str] = []
    out += _comment(
        f"Written by `{command}`. The model: {info.pipeline_class or 'a pipeline'} with a "
        f"{info.denoiser_class}{trained}; image sides must be multiples of {f}."
    )
    out += _comment(
        f"Before searching, fill the prompts file {p['file']!r} (see [prompts]); then "
        "`crdiff search THIS_FILE --dry-run` checks everything and prints the plan, and "
        "`crdiff search THIS_FILE` runs it."
    )
    out += [
        _line("version", data["version"]),
        _line("study", data["study"], "names the output folder runs/<study> and the MLflow runs"),
        _line("resolution", data["resolution"], f"WIDTHxHEIGHT, sides multiples of {f}"),
        _line("plugins", data["plugins"], "modules imported first (custom scorers, samplers)"),
        "",
        "[model]",
        _line("source", m["source"], "'testbed', a save_pretrained folder, or a hub id"),
        _line("dtype", m["dtype"], " | ".join(DTYPES)),
        _line(
            "scheduler",
            m["scheduler"],
            "default (the pipeline's own) | " + " | ".join(n for n in SCHEDULERS if n != "default"),
        ),  # fmt: skip
        _line("steps", m["steps"], f"denoising steps ({sampling.note})"),
        _line("guidance", m["guidance"], "classifier-free guidance scale"),
        _line("device", m["device"], " | ".join(DEVICES) + " | cuda:N (auto: CUDA when present)"),
        "",
        "[prompts]",
    ]
    out += _comment(
        f"{p['file']!r} (next to this file, one prompt a line, '#' starts a comment) is written "
        "without prompts: fill it before searching; `crdiff search` refuses it while it is "
        f"empty. The search scores the first `count` prompts, image i from seed `seeds` + i."
    )
    if testbed:
        out += _comment(
            "The scene objective scores captions of the testbed's grammar, e.g. 'two red "
            "circles and a blue square' (crdiff_search.testbed.scenes.sample_captions). Or "
            "delete `file` and the testbed draws `count` captions itself (with search.seed)."
        )
    else:
        out += _comment(
            f"The held-out verdict ([rerank]) uses the lines after the first {p['count']}: "
            f"write at least {p['count'] + 1}, ideally {p['count'] + rr['prompts']}."
        )
    if info.pipeline_class == "DiTPipeline":
        out += _comment("DiT is class-conditional: each prompt is one of its class labels.")
    out += [
        _line("file", p["file"]),
        _line("count", p["count"], "prompts per candidate"),
        _line("seeds", p["seeds"], "image i uses seed 0 + i (or a list, one per prompt)"),
        _line(
            "chunk_size", p["chunk_size"], "prompts per report, the unit of early stopping; 0: all"
        ),  # fmt: skip
        _line("batch_size", p["batch_size"], "prompts per pipeline call; 0: a whole chunk"),
        "",
        "[objective]",
    ]
    hint, example = OBJECTIVE_WEIGHTS.get(
        o["name"], ("see the scorer's own documentation (its options)", "")
    )
    out += _comment(f"One name, or several with `weights`. Weights of {o['name']!r}: {hint}.")
    if o["name"] not in ("scene", "composite"):
        out += _comment(_MISSING_WEIGHTS)
    out.append(_line("name", o["name"]))
    if "options" in o:
        out.append(_line("options", o["options"]))
    elif example:
        out.append(f"# options = {example}")
    out += [
        "# relative = [...]      # names scored as score(image) - score(dense image)",
        "# failed_image_score = -2.0   # a failed image scores this inside the mean",
        "",
        "[partition]",
    ]
    plural = "s" if len(groups) != 1 else ""
    out.append(
        f"# The {part['granularity']!r} partition of this {info.denoiser_class}: "
        f"{len(groups)} group{plural}, one ratio each:"
    )
    out += _comment("groups: " + ", ".join(groups))
    out.append(_line("granularity", part["granularity"], " | ".join(GRANULARITIES)))
    if "include" in part:
        out.append(_line("include", part["include"], "weights selected by structure"))
    if "n_groups" in part:
        out.append(_line("n_groups", part["n_groups"], "runs of consecutive blocks"))
    what = "a threshold per tensor" if criterion == "magnitude-tensor" else "one per group"
    out += [
        _line("criterion", part["criterion"], f"here: {criterion} ({what})"),
        "",
        "[ratios]",
        _line("low", r["low"], "every group's ratio is searched in [low, high]"),
        _line("high", r["high"]),
        f"# [ratios.groups]  {_key(groups[0])} = [0.0, 0.5]   # per-group bounds",
        "",
        "[search]",
        _line("sampler", s["sampler"], " | ".join(SAMPLER_NAMES)),
        _line("trials", s["trials"], "the budget, the dense trial 0 included"),
        _line("concurrency", s["concurrency"], "trials at once (each holds [resources])"),
        _line("seed", s["seed"], "sampler seed" + (" and caption seed" if testbed else "")),
        _line("early_stopping", s["early_stopping"], "ASHA over prompt chunks"),
        _line("retries", s["retries"], "a raising trial is retried, then recorded as failed"),
        "",
        "[resources]",
        _line("cpu", res["cpu"], "per trial worker"),
        _line("gpu", res["gpu"], "per trial worker"),
        "",
        "[tracking]",
        _line("enabled", tr["enabled"], "MLflow runs for the study and each trial"),
        _line("uri", tr["uri"], "empty: sqlite:///<working folder>/mlflow.db"),
        _line("experiment", tr["experiment"], "empty: the study name"),
        "",
        "[rerank]",
        "# The held-out verdict right after the search: the best trials, with and without POA,",
        "# against the dense model on prompts the search never saw (`crdiff rerank`).",
        _line("after_search", rr["after_search"]),
        _line("top_k", rr["top_k"], "best search trials re-scored"),
        _line("weights", rr["weights"], "POA weights; 1.0 is the candidate without POA"),
        _line("prompts", rr["prompts"], "held-out prompts (at most)"),
        _line("seed", rr["seed"], f"image i uses seed {rr['seed']} + i"),
        _line(
            "file",
            rr["file"],
            "empty: testbed captions drawn with `seed`"
            if testbed
            else "empty: the prompts file's lines after `count`",
        ),
    ]
    return "\n".join(out) + "\n"


def _prompts_header(data: dict[str, Any], info) -> str:
    p, source = data["prompts"], data["model"]["source"]
    lines = _comment(
        f"Prompts of the study {data['study']!r} ({source} at {data['resolution']}): one a "
        "line; '#' starts a comment, blank lines are skipped."
    )
    if source == "testbed":
        lines += _comment(
            f"The search uses the first {p['count']}: captions of the testbed's scene grammar, "
            "such as 'two red circles and a blue square'."
        )
    else:
        lines += _comment(
            f"The search uses the first {p['count']} (prompts.count); the held-out verdict the "
            f"lines after them (up to {data['rerank']['prompts']})."
        )
    if info.pipeline_class == "DiTPipeline":
        lines += _comment("DiT is class-conditional: write class labels, one a line.")
    return "\n".join(lines) + "\n"


def _self_check(text: str, config: ExperimentConfig) -> None:
    """The written text loads back, through the same validation, to the planned config."""
    loaded = _validated(tomllib.loads(text))
    if loaded != config:
        raise CrdiffError("internal error: the experiment text does not read back as planned")


def write_experiment(
    model: str,
    resolution: str,
    *,
    out: str | os.PathLike | None = None,
    objective: str | None = None,
    granularity: str = "paper",
    include: Sequence[str] = (),
    n_groups: int = 0,
    study: str | None = None,
    prompts: str | None = None,
    force: bool = False,
    command: str | None = None,
) -> InitResult:
    """Check ``model`` at ``resolution`` as ``crdiff search`` would and write its experiment
    file (default ``<study>.toml`` in the working folder) and, when it does not exist, its
    prompts file (``prompts``, relative to the experiment file; default
    ``<experiment name>.prompts.txt`` next to it), empty: an existing one is kept.

    Raises :class:`UsageError` (an existing file without ``force``, a resolution that is not a
    multiple of the model's spatial factor, naming the nearest valid ones, a bad name) or
    :class:`ModelSourceError` (a model whose config files are not on this machine)."""
    from crdiff_search.model_info import (
        check_model,
        group_names,
        study_criterion,
        training_resolution,
    )

    res = format_resolution(*parse_resolution(resolution))
    source, info = resolve_source(model)
    study = study or _study_name(source, res)
    path = Path(out) if out else Path(f"{study}.toml")
    if path.is_dir():
        raise UsageError(f"--out {str(path)!r} is a folder; give the experiment file's name")
    if path.exists() and not force:
        raise UsageError(f"{str(path)!r} already exists; pass --force to overwrite it")
    if prompts is None:
        prompts = f"{path.stem}.prompts.txt"
    if not prompts.strip():
        raise UsageError("--prompts is empty; give the prompts file's name, e.g. prompts.txt")
    data = _plan(
        source,
        info,
        res,
        study=study,
        objective=objective or default_objective(source),
        granularity=granularity,
        include=tuple(include),
        n_groups=n_groups,
        prompts_file=prompts,
    )
    config = _validated(data)
    checked = check_model(config)  # the resolution, against the spatial factor; ratio groups
    info = checked or info
    groups = group_names(config, info)
    if not groups:
        raise UsageError(f"the {granularity!r} partition of {source!r} has no groups")
    criterion = study_criterion(config, info)
    text = _render(
        data,
        info=info,
        groups=groups,
        criterion=criterion,
        command=command or f"crdiff init {model} --resolution {res}",
        trained_at=training_resolution(source),
    )
    _self_check(text, config)

    prompts_path = Path(prompts).expanduser()
    if not prompts_path.is_absolute():
        prompts_path = path.parent / prompts_path
    if prompts_path.is_dir():
        raise UsageError(f"prompts file {str(prompts_path)!r} is a folder")
    written = not prompts_path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    if written:
        prompts_path.parent.mkdir(parents=True, exist_ok=True)
        prompts_path.write_text(_prompts_header(data, info), encoding="utf-8")
        n_prompts = 0
    else:
        try:
            n_prompts = len(read_prompt_file(prompts_path))
        except UsageError:
            n_prompts = 0
    return InitResult(
        path=path,
        prompts_path=prompts_path,
        prompts_written=written,
        prompts_in_file=n_prompts,
        config=config,
        groups=tuple(groups),
        criterion=criterion,
        spatial_factor=info.spatial_factor,
        pipeline_class=info.pipeline_class,
        denoiser_class=info.denoiser_class,
        text=text,
    )
