"""Validation of experiment files: every field's type, name and range, every problem of a file
reported at once (:class:`~crdiff_search.errors.ConfigErrors`).

Pure: it imports no plug-in (:func:`import_plugins` does that, as the loading step before it)
and builds nothing: names are checked against the registries, a sampler's option names
against its signature (their values when the driver builds the sampler, before Ray starts).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from crdiff_search.config import (
    _SECTIONS,
    _STUDY_NAME,
    _TOP_LEVEL,
    CONFIG_VERSION,
    EARLY_STOPPING_CHUNKS,
    MODES,
    ExperimentConfig,
    ModelSpec,
    ObjectiveSpec,
    PartitionSection,
    PromptSpec,
    RatioBounds,
    RerankSpec,
    Resources,
    SearchSpec,
    TrackingSpec,
    read_prompt_file,
    sampling_defaults,
)
from crdiff_search.errors import ConfigErrors, UsageError
from crdiff_search.names import DTYPES, GRANULARITIES, KINDS, REPAIRS, SCHEDULERS, WARM_STARTS
from crdiff_search.resolution import parse_resolution


def _type_name(value: Any) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "float",
        str: "string",
        list: "array",
        dict: "table",
    }.get(type(value), type(value).__name__)


def _expect(where: str, value: Any, kind: str) -> Any:
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
        "table": isinstance(value, Mapping),
        "list": isinstance(value, list | tuple),
    }[kind]
    if not ok:
        names = {
            "int": "an integer",
            "float": "a number",
            "str": "a string",
            "bool": "true or false",
            "table": "a table",
            "list": "an array",
        }
        raise UsageError(f"{where} must be {names[kind]}, got {_type_name(value)} {value!r}")
    if kind == "float":
        value = float(value)
        if not math.isfinite(value):
            raise UsageError(f"{where} must be a finite number, got {value!r}")
    return value


def _choice(where: str, value: Any, valid) -> str:
    _expect(where, value, "str")
    if value not in valid:
        raise UsageError(f"{where} = {value!r} is not valid; valid: {', '.join(valid)}")
    return value


def _at_least(where: str, value: int, low: int) -> int:
    if value < low:
        raise UsageError(f"{where} must be >= {low}, got {value}")
    return value


# [objective] spells its names as ``name`` (a string or a list), not as the spec's ``names``.
_OBJECTIVE_KEYS = ("name", "weights", "options", "mode", "relative", "failed_image_score")


def _section(data: Mapping, name: str, cls) -> dict[str, Any]:
    raw = data.get(name, {})
    _expect(f"[{name}]", raw, "table")
    known = [f.name for f in dataclasses.fields(cls)]
    if name == "objective":
        known = list(_OBJECTIVE_KEYS)
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise UsageError(
            f"[{name}] has unknown key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(known)}"
        )
    return dict(raw)


def _blamed_key(message: str, raw: Mapping[str, Any], section: str) -> str | None:
    """The key of ``raw`` that an error message names (``model.steps``, ``'steps'``)."""
    for key in sorted(raw, key=len, reverse=True):
        if f"{section}.{key}" in message or f"'{key}'" in message:
            return key
        if not section and message.startswith((f"{key} ", f"{key}[")):
            return key
    return None


class _SectionStop(UsageError):
    """A problem after which the rest of its section would only report consequences (a
    prompts file that is missing or empty: not "give items or file")."""


def _validated(problems: list[str], section: str, validate, raw: Mapping[str, Any], *extra):
    """Run a section's validator; on an error, note it, drop the field it names (its default
    applies) and run again, so that one run reports every bad field of the section. None when
    the section cannot be built."""
    raw = dict(raw)
    for _ in range(len(raw) + 1):
        try:
            return validate(raw, *extra)
        except UsageError as exc:
            problems.append(str(exc))
            if isinstance(exc, _SectionStop):
                return None
            key = _blamed_key(str(exc), raw, section)
            if key is None:
                return None
            raw.pop(key)
    return None


def _section_keys(problems: list[str], data: Mapping, name: str, cls) -> dict[str, Any]:
    try:
        return _section(data, name, cls)
    except UsageError as exc:
        problems.append(str(exc))
        raw = data.get(name, {})
        if not isinstance(raw, Mapping):
            return {}
        known = [f.name for f in dataclasses.fields(cls)]
        if name == "objective":
            known = list(_OBJECTIVE_KEYS)
        return {k: v for k, v in raw.items() if k in known}


def _top_level(raw: dict) -> dict[str, Any]:
    version = _expect("version", raw.get("version", CONFIG_VERSION), "int")
    if version != CONFIG_VERSION:
        raise UsageError(f"version = {version} is not supported; valid: {CONFIG_VERSION}")
    study = _expect("study", raw.get("study", "testbed"), "str")
    if not _STUDY_NAME.match(study):
        raise UsageError(
            f"study = {study!r}: use letters, digits, '.', '_' and '-' (it names folders and runs)"
        )
    resolution = _expect("resolution", raw.get("resolution", ExperimentConfig.resolution), "str")
    w, h = parse_resolution(resolution)
    return {
        "version": version,
        "study": study,
        "resolution": f"{w}x{h}",
        "output": _expect("output", raw.get("output", ""), "str"),
        "plugins": tuple(_plugins(raw.get("plugins", []))),
    }


def validate(data: Mapping[str, Any], *, base_dir: Path | None = None) -> ExperimentConfig:
    """Validate everything, reporting every problem of the file at once (:class:`ConfigErrors`).

    Pure: it imports no plug-in (:func:`import_plugins` does, before it) and builds nothing;
    names are checked against the registries, option names against signatures."""
    _expect("the experiment", data, "table")
    problems: list[str] = []
    unknown = sorted(set(data) - set(_TOP_LEVEL) - set(_SECTIONS))
    if unknown:
        valid = list(_TOP_LEVEL) + [f"[{s}]" for s in _SECTIONS]
        problems.append(
            f"unknown key(s) {', '.join(map(repr, unknown))} in the experiment; valid: {', '.join(valid)}"
        )
    top = _validated(problems, "", _top_level, {k: data[k] for k in _TOP_LEVEL if k in data})

    def section(name: str, cls, validate, *extra):
        return _validated(
            problems, name, validate, _section_keys(problems, data, name, cls), *extra
        )

    model = section("model", ModelSpec, _model)
    prompts = section("prompts", PromptSpec, _prompts, model or ModelSpec(), base_dir)
    built = {
        "model": model,
        "prompts": prompts,
        "objective": section("objective", ObjectiveSpec, _objective),
        "partition": section("partition", PartitionSection, _partition),
        "ratios": section("ratios", RatioBounds, _ratios),
        "search": section("search", SearchSpec, _search),
        "resources": section("resources", Resources, _resources),
        "tracking": section("tracking", TrackingSpec, _tracking),
        "rerank": section("rerank", RerankSpec, _rerank, base_dir),
    }
    search, prompts = built["search"], built["prompts"]
    if search is not None and prompts is not None and search.early_stopping:
        if prompts.count < 2:
            problems.append(
                f"search.early_stopping = true needs at least 2 prompts to stop a trial between "
                f"them (prompts.count = {prompts.count}); valid: prompts.count >= 2, or "
                "search.early_stopping = false"
            )
        elif prompts.chunk_size >= prompts.count:
            problems.append(
                f"search.early_stopping = true with prompts.chunk_size = {prompts.chunk_size} "
                f"(>= prompts.count = {prompts.count}): one chunk, so no trial could be stopped; "
                f"valid: prompts.chunk_size 1..{prompts.count - 1}, or 0 "
                f"({EARLY_STOPPING_CHUNKS} chunks)"
            )
    if problems:
        raise ConfigErrors(list(dict.fromkeys(problems)))
    return ExperimentConfig(**top, **built)


def _plugins(raw: Any) -> list[str]:
    _expect("plugins", raw, "list")
    for i, name in enumerate(raw):
        _expect(f"plugins[{i}]", name, "str")
    return list(raw)


def import_plugins(data: Mapping[str, Any]) -> None:
    """Import the experiment's ``plugins`` modules (they register objectives, samplers, ...
    at import), so that validation, which imports nothing, knows their names. The loading step
    before :func:`_from_dict`; a module that cannot be imported is a config error."""
    import importlib

    names = data.get("plugins", []) if isinstance(data, Mapping) else []
    if not isinstance(names, list | tuple):
        return  # validation reports the type
    problems = []
    for i, name in enumerate(names):
        if not isinstance(name, str):
            continue
        try:
            importlib.import_module(name)
        except ImportError as exc:
            problems.append(f"plugins[{i}] = {name!r} cannot be imported: {exc}")
    if problems:
        raise ConfigErrors(problems)


def _device(value: Any) -> str:
    from crdiff_search.names import check_device

    _expect("model.device", value, "str")
    try:
        return check_device(value)
    except UsageError as exc:
        raise UsageError(f"model.{exc}") from None


def _model(raw: dict) -> ModelSpec:
    source = _expect("model.source", raw.get("source", "testbed"), "str").strip()
    if not source:
        raise UsageError(
            "model.source is empty; valid: 'testbed', a local pipeline folder, or a hub id"
        )
    default_steps, default_guidance = sampling_defaults(source)
    steps = _at_least(
        "model.steps", _expect("model.steps", raw.get("steps", default_steps), "int"), 1
    )
    guidance = _expect("model.guidance", raw.get("guidance", default_guidance), "float")
    if guidance < 0:
        raise UsageError(f"model.guidance must be >= 0, got {guidance}")
    return ModelSpec(
        source=source,
        dtype=_choice("model.dtype", raw.get("dtype", "float32"), DTYPES),
        scheduler=_choice("model.scheduler", raw.get("scheduler", "default"), list(SCHEDULERS)),
        steps=steps,
        guidance=guidance,
        device=_device(raw.get("device", "auto")),
    )


def _prompts(raw: dict, model: ModelSpec, base_dir: Path | None) -> PromptSpec:
    items = _expect("prompts.items", raw.get("items", []), "list")
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item.strip():
            raise UsageError(f"prompts.items[{i}] must be a non-empty string, got {item!r}")
    file = _expect("prompts.file", raw.get("file", ""), "str")
    if items and file:
        raise UsageError("prompts: give either `items` or `file`, not both")
    if file:
        path = Path(file).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            n_file = len(read_prompt_file(path))
        except UsageError as exc:  # missing or empty: the one problem of [prompts] worth saying
            raise _SectionStop(str(exc)) from None
        file = str(path)
    elif not items and model.source != "testbed":
        raise UsageError(
            "prompts: give `items` (a list) or `file` (one prompt a line); only the testbed "
            "model samples its own captions"
        )
    available = len(items) if items else (n_file if file else None)
    count = _expect("prompts.count", raw.get("count", available or PromptSpec.count), "int")
    _at_least("prompts.count", count, 1)
    if available is not None and count > available:
        raise UsageError(
            f"prompts.count = {count} but only {available} prompts are given; valid: 1..{available}"
        )
    seeds = raw.get("seeds", 0)
    if isinstance(seeds, list | tuple):
        seeds = tuple(_expect(f"prompts.seeds[{i}]", s, "int") for i, s in enumerate(seeds))
        if len(seeds) != count:
            raise UsageError(
                f"prompts.seeds lists {len(seeds)} seeds for {count} prompts; give one per prompt "
                "or a single base seed (an integer)"
            )
    else:
        seeds = _expect("prompts.seeds", seeds, "int")
    chunk = _expect("prompts.chunk_size", raw.get("chunk_size", 0), "int")
    if not 0 <= chunk <= count:
        raise UsageError(f"prompts.chunk_size = {chunk}; valid: 0 (all at once) .. {count}")
    batch = _expect("prompts.batch_size", raw.get("batch_size", 0), "int")
    _at_least("prompts.batch_size", batch, 0)
    return PromptSpec(
        items=tuple(items), file=file, count=count, seeds=seeds, chunk_size=chunk, batch_size=batch
    )


def _objective(raw: dict) -> ObjectiveSpec:
    from crdiff_search.objectives import OBJECTIVE_NAMES, OBJECTIVES

    name = raw.get("name", "scene")
    names = [name] if isinstance(name, str) else name
    _expect("objective.name", names, "list")
    if not names:
        raise UsageError(f"objective.name is empty; valid: {', '.join(OBJECTIVE_NAMES)}")
    for i, n in enumerate(names):
        where = "objective.name" if isinstance(name, str) else f"objective.name[{i}]"
        _choice(where, n, list(OBJECTIVE_NAMES))
    if len(set(names)) != len(names):
        raise UsageError(f"objective.name lists a name twice: {names}")
    weights = _expect("objective.weights", raw.get("weights", [1.0] * len(names)), "list")
    weights = [_expect(f"objective.weights[{i}]", w, "float") for i, w in enumerate(weights)]
    if len(weights) != len(names):
        raise UsageError(
            f"objective.weights has {len(weights)} values for {len(names)} objectives; give one per name"
        )
    options = _expect("objective.options", raw.get("options", {}), "table")
    if len(names) == 1:
        per_name = {names[0]: dict(options)}
    else:
        extra = sorted(set(options) - set(names))
        if extra:
            raise UsageError(
                f"objective.options: with several objectives, options are one table per name; "
                f"unknown {', '.join(map(repr, extra))}; valid: {', '.join(names)}"
            )
        per_name = {
            n: dict(_expect(f"objective.options.{n}", options[n], "table")) for n in options
        }
    relative = _expect("objective.relative", raw.get("relative", []), "list")
    for i, n in enumerate(relative):
        _choice(f"objective.relative[{i}]", n, names)
        if OBJECTIVES.metadata(n).get("per_image") is False:
            raise UsageError(
                f"objective.relative[{i}] = {n!r} is a set metric: it has no per-image score "
                "to compare with the dense model's"
            )
    if names == ["composite"]:
        from crdiff_search.objectives.composite import parse_terms

        try:
            parse_terms(per_name.get("composite", {}).get("terms", []))
        except UsageError as exc:
            raise UsageError(f"objective.options.terms: {exc}") from None
    failed = raw.get("failed_image_score")
    if failed is not None:
        failed = _expect("objective.failed_image_score", failed, "float")
        set_metrics = [n for n in names if OBJECTIVES.metadata(n).get("per_image") is False]
        if set_metrics:
            raise UsageError(
                f"objective.failed_image_score: {', '.join(map(repr, set_metrics))} is a set "
                "metric (no per-image score to replace); leave failed_image_score out"
            )
    return ObjectiveSpec(
        names=tuple(names),
        weights=tuple(weights),
        options={n: o for n, o in per_name.items() if o},
        mode=_objective_mode(names, raw.get("mode")),
        relative=tuple(dict.fromkeys(relative)),
        failed_image_score=failed,
    )


def _objective_mode(names: list[str], mode: Any) -> str:
    """``objective.mode``: given, else the objective's own direction (``min`` for FID/KID);
    a given mode that contradicts a single objective's direction is an error here, before
    Ray starts."""
    from crdiff_search.objectives import higher_is_better

    direction = higher_is_better(names[0]) if len(names) == 1 else None
    if mode is None:
        return "min" if direction is False else "max"
    mode = _choice("objective.mode", mode, MODES)
    if direction is not None and mode != ("max" if direction else "min"):
        wanted = "max" if direction else "min"
        raise UsageError(
            f"objective {names[0]!r} is {'higher' if direction else 'lower'}-is-better but "
            f"objective.mode = {mode!r}; set objective.mode = {wanted!r} (or leave it out)"
        )
    return mode


def _partition(raw: dict) -> PartitionSection:
    include = _expect("partition.include", raw.get("include", []), "list")
    for i, kind in enumerate(include):
        _choice(f"partition.include[{i}]", kind, KINDS)
    n_groups = _expect("partition.n_groups", raw.get("n_groups", 0), "int")
    _at_least("partition.n_groups", n_groups, 0)
    criterion = _expect("partition.criterion", raw.get("criterion", "auto"), "str")
    if not criterion:
        raise UsageError("partition.criterion is empty; e.g. 'magnitude'")
    return PartitionSection(
        granularity=_choice(
            "partition.granularity", raw.get("granularity", "paper"), GRANULARITIES
        ),
        include=tuple(include),
        n_groups=n_groups,
        criterion=criterion,
    )


def _bounds(where: str, low: float, high: float) -> tuple[float, float]:
    if not 0.0 <= low < high < 1.0:
        raise UsageError(f"{where} = [{low}, {high}]: need 0 <= low < high < 1")
    return low, high


def _ratios(raw: dict) -> RatioBounds:
    low = _expect("ratios.low", raw.get("low", RatioBounds.low), "float")
    high = _expect("ratios.high", raw.get("high", RatioBounds.high), "float")
    _bounds("ratios [low, high]", low, high)
    groups = _expect("ratios.groups", raw.get("groups", {}), "table")
    parsed = {}
    for g, b in groups.items():
        where = f"ratios.groups.{g}"
        _expect(where, b, "list")
        if len(b) != 2:
            raise UsageError(f"{where} must be [low, high], got {b!r}")
        lo, hi = (_expect(f"{where}[{i}]", v, "float") for i, v in enumerate(b))
        parsed[str(g)] = _bounds(where, lo, hi)
    return RatioBounds(low=low, high=high, groups=parsed)


def _search(raw: dict) -> SearchSpec:
    from crdiff_search.samplers import SAMPLER_NAMES

    sampler = _choice("search.sampler", raw.get("sampler", "anneal"), list(SAMPLER_NAMES))
    options = dict(_expect("search.sampler_options", raw.get("sampler_options", {}), "table"))
    trials = _at_least(
        "search.trials", _expect("search.trials", raw.get("trials", SearchSpec.trials), "int"), 1
    )
    concurrency = _expect(
        "search.concurrency", raw.get("concurrency", SearchSpec.concurrency), "int"
    )
    _at_least("search.concurrency", concurrency, 1)
    retries = _at_least(
        "search.retries", _expect("search.retries", raw.get("retries", 1), "int"), 0
    )
    seed = _expect("search.seed", raw.get("seed", 0), "int")
    _check_sampler_options(sampler, options, seed)
    repair = _choice("search.repair", raw.get("repair", "prune"), list(REPAIRS))
    if repair == "entropy" and trials != 1:
        raise UsageError(
            f"search.repair = 'entropy' has nothing to search (no pruning): it is one trial, "
            f"the model with entropy scaling; set search.trials = 1, not {trials}"
        )
    return SearchSpec(
        sampler=sampler,
        sampler_options=options,
        trials=trials,
        concurrency=concurrency,
        seed=seed,
        early_stopping=_expect("search.early_stopping", raw.get("early_stopping", False), "bool"),
        retries=retries,
        repair=repair,
        warm_start=_choice("search.warm_start", raw.get("warm_start", "none"), list(WARM_STARTS)),
        warm_start_points=_at_least(
            "search.warm_start_points",
            _expect("search.warm_start_points", raw.get("warm_start_points", 3), "int"),
            1,
        ),
    )


def _check_sampler_options(sampler: str, options: dict, seed: int) -> None:
    """The option names the sampler takes (from its signature; nothing is built here: values
    are checked when the driver builds the sampler, before Ray starts)."""
    from crdiff_search.samplers import sampler_options
    from crdiff_search.samplers._registry import BAD_OPTIONS

    valid = sampler_options(sampler)
    bad = sorted(set(options) - set(valid))
    if bad:
        raise UsageError(
            "search.sampler_options: "
            + BAD_OPTIONS.format(name=sampler, bad=", ".join(bad), valid=", ".join(valid))
        )


def _resources(raw: dict) -> Resources:
    cpu = _expect("resources.cpu", raw.get("cpu", 1.0), "float")
    gpu = _expect("resources.gpu", raw.get("gpu", 0.0), "float")
    if cpu <= 0 or gpu < 0:
        raise UsageError(f"resources: need cpu > 0 and gpu >= 0, got cpu={cpu}, gpu={gpu}")
    from crdiff_search.names import PRUNER_BACKUP_MODES as BACKUP_MODES
    from crdiff_search.names import PRUNER_CACHE_MODES as CACHE_MODES

    layout = {}
    for key, valid in (("pruner_cache", CACHE_MODES), ("pruner_backup", BACKUP_MODES)):
        value = _expect(f"resources.{key}", raw.get(key, "auto"), "str")
        if value not in valid:
            raise UsageError(f"resources.{key} = {value!r} is not valid; valid: {', '.join(valid)}")
        layout[key] = value
    budget = _expect(
        "resources.pruner_device_budget", raw.get("pruner_device_budget", 0.25), "float"
    )
    if budget < 0:
        raise UsageError(
            f"resources.pruner_device_budget = {budget} must be >= 0 (a share of the model's "
            "bytes up to 1, or a number of bytes)"
        )
    return Resources(cpu=cpu, gpu=gpu, pruner_device_budget=budget, **layout)


def _tracking(raw: dict) -> TrackingSpec:
    return TrackingSpec(
        enabled=_expect("tracking.enabled", raw.get("enabled", True), "bool"),
        uri=_expect("tracking.uri", raw.get("uri", ""), "str"),
        experiment=_expect("tracking.experiment", raw.get("experiment", ""), "str"),
    )


def _rerank(raw: dict, base_dir: Path | None) -> RerankSpec:
    top_k = _at_least(
        "rerank.top_k", _expect("rerank.top_k", raw.get("top_k", RerankSpec.top_k), "int"), 1
    )
    weights = _expect("rerank.weights", raw.get("weights", list(RerankSpec.weights)), "list")
    weights = [_expect(f"rerank.weights[{i}]", w, "float") for i, w in enumerate(weights)]
    if not weights:
        raise UsageError("rerank.weights is empty; give POA weights such as [1.0, 1.5]")
    bad = [w for w in weights if w < 0]
    if bad:
        raise UsageError(f"rerank.weights: {bad[0]} is negative; valid: w >= 0 (1.0: no POA)")
    count = _at_least(
        "rerank.prompts",
        _expect("rerank.prompts", raw.get("prompts", RerankSpec.prompts), "int"),
        1,
    )
    file = _expect("rerank.file", raw.get("file", ""), "str")
    if file:
        path = Path(file).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        read_prompt_file(path, "rerank.file")  # raises when missing or empty
        file = str(path)
    return RerankSpec(
        after_search=_expect(
            "rerank.after_search", raw.get("after_search", RerankSpec.after_search), "bool"
        ),
        top_k=top_k,
        weights=tuple(dict.fromkeys(weights)),
        prompts=count,
        seed=_expect("rerank.seed", raw.get("seed", RerankSpec.seed), "int"),
        file=file,
    )
