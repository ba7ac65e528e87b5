"""Experiment settings: one (model, resolution) study as a typed, validated, versioned config.

An experiment file is TOML; every section maps to a frozen dataclass below and the whole
config round-trips through ``to_dict`` / ``from_dict`` and ``to_toml`` / ``from_toml``. The
same dict is what MLflow records for the study.

Example::

    from crdiff_search.config import load_experiment

    cfg = load_experiment("experiments/sd15-768x768.toml", trials=64, sampler="tpe")
    cfg.width, cfg.height            # (768, 768)
    cfg.prompt_list(), cfg.seed_list()

Every mistake a user can make in the file (unknown keys, wrong types, bad names, a resolution
the model cannot take, ratio bounds for groups the partition lacks, a missing prompts file)
raises :class:`~crdiff_search.errors.UsageError` naming the field and the valid values, before
Ray starts or any weights load: model-dependent checks read only the model's config files.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crdiff_search.errors import UsageError
from crdiff_search.names import DTYPES, GRANULARITIES, KINDS, SCHEDULERS
from crdiff_search.recipe import PartitionSpec
from crdiff_search.resolution import parse_resolution
from crdiff_search.testbed import DEFAULT_GUIDANCE, DEFAULT_STEPS

CONFIG_VERSION = 1
DEVICES = ("auto", "cpu", "cuda", "mps")
MODES = ("max", "min")
# Short names accepted by load_experiment(**overrides) and the CLI flags.
OVERRIDE_ALIASES = {
    "sampler": "search.sampler",
    "trials": "search.trials",
    "seed": "search.seed",
    "concurrency": "search.concurrency",
    "early_stopping": "search.early_stopping",
    "retries": "search.retries",
    "tracking_uri": "tracking.uri",
    "out": "output",
    "steps": "model.steps",
    "model": "model.source",
}
_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
REAL_SAMPLING = (30, 7.5)  # steps and guidance of a real model when nothing says otherwise


def sampling_defaults(source: str) -> tuple[int, float]:
    """Default (steps, guidance) for a model source: the testbed's own, else REAL_SAMPLING."""
    if source == "testbed":
        return DEFAULT_STEPS, DEFAULT_GUIDANCE
    return REAL_SAMPLING


# ------------------------------------------------------------------------------------ sections
@dataclass(frozen=True)
class ModelSpec:
    """What to prune and how to sample from it."""

    source: str = "testbed"  # "testbed", a local pipeline folder, or a hub id
    dtype: str = "float32"
    scheduler: str = "default"
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    device: str = "auto"


@dataclass(frozen=True)
class PromptSpec:
    """The prompt batch every candidate is scored on, with one fixed seed per image.

    ``items`` inline or ``file`` (one prompt a line, ``#`` comments); neither, with the testbed
    model, means ``count`` captions sampled from the testbed's scene grammar. ``seeds`` is a
    base seed (image i gets ``seeds + i``) or one seed per prompt. ``chunk_size`` prompts are
    scored per report (the unit of early stopping); 0 = all at once.
    """

    items: tuple[str, ...] = ()
    file: str = ""
    count: int = 64
    seeds: int | tuple[int, ...] = 0
    chunk_size: int = 0
    batch_size: int = 0


@dataclass(frozen=True)
class ObjectiveSpec:
    """The score of a candidate: one objective, or a weighted sum of several."""

    names: tuple[str, ...] = ("scene",)
    weights: tuple[float, ...] = (1.0,)
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # per name
    mode: str = "max"
    # names scored relative to the dense model: score(image) - score(dense image), same prompt
    # and seed
    relative: tuple[str, ...] = ()

    def options_for(self, name: str) -> dict[str, Any]:
        return dict(self.options.get(name, {}))


@dataclass(frozen=True)
class PartitionSection:
    """The experiment's ``[partition]`` table: how the denoiser's weights are grouped (as the
    file spells it: an empty ``include`` and ``n_groups = 0`` are unset) and how a group's
    weights are ranked. :attr:`spec` is the partition itself, as recipes hold it."""

    granularity: str = "paper"
    include: tuple[str, ...] = ()  # empty: the partition's default rule
    n_groups: int = 0  # 0: the granularity's own number of groups
    criterion: str = "magnitude"

    @property
    def spec(self) -> PartitionSpec:
        return PartitionSpec(self.granularity, tuple(self.include) or None, self.n_groups or None)


@dataclass(frozen=True)
class RatioBounds:
    """Search bounds for each group's pruning ratio: a default and per-group overrides."""

    low: float = 0.0
    high: float = 0.95
    groups: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def bounds(self, group: str) -> tuple[float, float]:
        return tuple(self.groups.get(group, (self.low, self.high)))


@dataclass(frozen=True)
class SearchSpec:
    """The sampler, the budget (trials, the dense trial included) and how trials run."""

    sampler: str = "anneal"
    sampler_options: Mapping[str, Any] = field(default_factory=dict)
    trials: int = 30
    concurrency: int = 2
    seed: int = 0
    early_stopping: bool = False
    retries: int = 1


@dataclass(frozen=True)
class Resources:
    """What one trial worker holds (a GPU for real models)."""

    cpu: float = 1.0
    gpu: float = 0.0


@dataclass(frozen=True)
class TrackingSpec:
    """MLflow: an empty ``uri`` is SQLite in the working folder; ``experiment`` defaults to
    the study name."""

    enabled: bool = True
    uri: str = ""
    experiment: str = ""


@dataclass(frozen=True)
class RerankSpec:
    """The held-out verdict: the search's ``top_k`` trials at each POA weight, next to the dense
    model, on prompts the search never saw (``crdiff rerank``; right after the search itself
    when ``after_search``).

    ``prompts`` held-out prompts: the lines of ``file``; without a file, the testbed's scene
    grammar sampled with ``seed`` (captions of the search set left out), or the study prompt
    file's lines after those the search used. Generation seeds are ``seed + i``.
    """

    after_search: bool = True
    top_k: int = 3
    weights: tuple[float, ...] = (1.0, 1.5)
    prompts: int = 128
    seed: int = 10_000
    file: str = ""


_SECTIONS = {
    "model": ModelSpec,
    "prompts": PromptSpec,
    "objective": ObjectiveSpec,
    "partition": PartitionSection,
    "ratios": RatioBounds,
    "search": SearchSpec,
    "resources": Resources,
    "tracking": TrackingSpec,
    "rerank": RerankSpec,
}
_TOP_LEVEL = ("version", "study", "resolution", "output", "plugins")


@dataclass(frozen=True)
class ExperimentConfig:
    """One study. The defaults are the testbed study (``crdiff search`` without a file)."""

    version: int = CONFIG_VERSION
    study: str = "testbed"
    resolution: str = "24x24"
    output: str = ""  # empty: runs/<study>
    # Modules imported by the driver and every worker before objectives are built: the place
    # for custom scorers that call objectives.register_objective at import.
    plugins: tuple[str, ...] = ()
    model: ModelSpec = field(default_factory=ModelSpec)
    prompts: PromptSpec = field(default_factory=PromptSpec)
    objective: ObjectiveSpec = field(default_factory=ObjectiveSpec)
    partition: PartitionSection = field(default_factory=PartitionSection)
    ratios: RatioBounds = field(default_factory=RatioBounds)
    search: SearchSpec = field(default_factory=SearchSpec)
    resources: Resources = field(default_factory=Resources)
    tracking: TrackingSpec = field(default_factory=TrackingSpec)
    rerank: RerankSpec = field(default_factory=RerankSpec)

    # ---- derived values
    @property
    def width(self) -> int:
        return parse_resolution(self.resolution)[0]

    @property
    def height(self) -> int:
        return parse_resolution(self.resolution)[1]

    @property
    def output_dir(self) -> Path:
        return Path(self.output or os.path.join("runs", self.study))

    @property
    def tracking_experiment(self) -> str:
        return self.tracking.experiment or self.study

    def prompt_list(self) -> list[str]:
        """The study's prompts, in order (``count`` of them)."""
        p = self.prompts
        if p.items:
            pool = list(p.items)
        elif p.file:
            pool = read_prompt_file(p.file)
        elif self.model.source == "testbed":
            from crdiff_search.testbed.scenes import sample_captions

            return list(sample_captions(p.count, self.search.seed))
        else:
            raise UsageError("prompts: give `items` or `file` (only the testbed samples its own)")
        if p.count > len(pool):
            where = f"file {p.file!r}" if p.file else "items"
            raise UsageError(
                f"prompts.count = {p.count} but the {where} hold(s) only {len(pool)} prompts; "
                f"valid: 1..{len(pool)}"
            )
        return pool[: p.count]

    def seed_list(self) -> list[int]:
        """One generation seed per prompt (common random numbers across candidates)."""
        s = self.prompts.seeds
        if isinstance(s, tuple):
            return list(s[: self.prompts.count])
        return [s + i for i in range(self.prompts.count)]

    def chunks(self) -> list[tuple[int, int]]:
        """``[(start, stop), ...]`` prompt index ranges reported one at a time."""
        n = self.prompts.count
        size = self.prompts.chunk_size or n
        return [(i, min(i + size, n)) for i in range(0, n, size)]

    # ---- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """A plain, TOML-ready dict (no None; tuples as lists)."""
        out: dict[str, Any] = {k: _plain(getattr(self, k)) for k in _TOP_LEVEL}
        for name in _SECTIONS:
            out[name] = _plain(dataclasses.asdict(getattr(self, name)))
        obj = out["objective"]
        if len(obj["names"]) == 1:
            only = obj["names"][0]
            obj["name"] = only
            obj["options"] = obj["options"].get(only, {})
        else:
            obj["name"] = obj["names"]
        del obj["names"]
        out["objective"] = {
            k: obj[k] for k in ("name", "weights", "mode", "options", "relative") if k in obj
        }
        if not out["objective"]["relative"]:
            del out["objective"]["relative"]
        out["ratios"]["groups"] = {g: list(b) for g, b in out["ratios"]["groups"].items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, base_dir: str | os.PathLike | None = None):
        """Build and validate (structure, types, names, ranges; no model checks)."""
        return _from_dict(data, base_dir=Path(base_dir) if base_dir else None)

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_dict())

    @classmethod
    def from_toml(cls, text: str, *, base_dir: str | os.PathLike | None = None):
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"experiment file is not valid TOML: {exc}") from None
        return cls.from_dict(data, base_dir=base_dir)

    def replace(self, **changes: Any) -> ExperimentConfig:
        """A copy with dotted-path changes (``{"search.trials": 8}``), validated again."""
        data = self.to_dict()
        for key, value in changes.items():
            _set_path(data, key, value)
        return _from_dict(data, base_dir=None)


# ------------------------------------------------------------------------------------ loading
def load_experiment(path: str | os.PathLike | None = None, **overrides: Any) -> ExperimentConfig:
    """Read an experiment file (None: the testbed study), apply overrides, validate everything.

    Overrides are short names (``sampler``, ``trials``, ``seed``, ``concurrency``,
    ``tracking_uri``, ``out``, ``steps``, ``early_stopping``, ``retries``, ``model``) or
    dotted paths (``**{"model.steps": 2}``, or ``model__steps=2``); None values are ignored.

    >>> cfg = load_experiment(None, trials=4, sampler="random")
    """
    if path is None:
        data: dict[str, Any] = ExperimentConfig().to_dict()
        base_dir = None
    else:
        p = Path(path)
        data = read_toml(p, "experiment file")
        data.setdefault("study", p.stem)
        base_dir = p.resolve().parent
    for key, value in overrides.items():
        if value is None:
            continue
        dotted = OVERRIDE_ALIASES.get(key, key.replace("__", "."))
        _set_path(data, dotted, value)
    config = _from_dict(data, base_dir=base_dir)
    from crdiff_search.model_info import check_model

    check_model(config)
    return config


def read_toml(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """The table in a TOML file; a missing or malformed file is a :class:`UsageError` naming
    ``what`` it is and the path."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{what} {str(p)!r} does not exist")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{what} {str(p)!r} is not valid TOML: {exc}") from None


def read_prompt_file(path: str | os.PathLike, where: str = "prompts.file") -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{where} {str(p)!r} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{where} {str(p)!r} cannot be read as UTF-8 text: {exc}") from None
    lines = [line.strip() for line in text.splitlines()]
    prompts = [line for line in lines if line and not line.startswith("#")]
    if not prompts:
        raise UsageError(f"{where} {str(p)!r} holds no prompts (one per line)")
    return prompts


def parse_assignments(items: list[str], *, flag: str = "--set") -> dict[str, Any]:
    """``["resources.cpu=2", "model.steps=4"]`` -> ``{"resources.cpu": 2, ...}``: each value is
    read as TOML (numbers, booleans, arrays, quoted strings), else kept as a plain string."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{flag} {item!r}: expected KEY=VALUE, e.g. resources.cpu=2")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        out[key.strip()] = value
    return out


def _set_path(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        if part not in _SECTIONS and node is data:
            raise UsageError(
                f"override {dotted!r}: unknown section {part!r}; valid: {', '.join(_SECTIONS)}"
            )
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UsageError(f"override {dotted!r}: {part!r} is not a table")
    if parts[-1] == "name" and parts[0] == "objective":
        node.pop("names", None)
    node[parts[-1]] = value


# ------------------------------------------------------------------------------ validation
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
_OBJECTIVE_KEYS = ("name", "weights", "options", "mode", "relative")


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


class ConfigErrors(UsageError):
    """Every problem found in an experiment, one per line (``problems``)."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        if len(problems) == 1:
            super().__init__(problems[0])
        else:
            lines = "\n".join(f"  - {p}" for p in problems)
            super().__init__(f"{len(problems)} problems in the experiment:\n{lines}")


def _blamed_key(message: str, raw: Mapping[str, Any], section: str) -> str | None:
    """The key of ``raw`` that an error message names (``model.steps``, ``'steps'``)."""
    for key in sorted(raw, key=len, reverse=True):
        if f"{section}.{key}" in message or f"'{key}'" in message:
            return key
        if not section and message.startswith((f"{key} ", f"{key}[")):
            return key
    return None


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


def _from_dict(data: Mapping[str, Any], *, base_dir: Path | None) -> ExperimentConfig:
    """Import the experiment's plug-ins, then validate it."""
    import_plugins(data)
    return validate(data, base_dir=base_dir)


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
        device=_choice("model.device", raw.get("device", "auto"), DEVICES),
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
        n_file = len(read_prompt_file(path))  # raises when missing or empty
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
        if len(seeds) < count:
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
    return ObjectiveSpec(
        names=tuple(names),
        weights=tuple(weights),
        options={n: o for n, o in per_name.items() if o},
        mode=_objective_mode(names, raw.get("mode")),
        relative=tuple(dict.fromkeys(relative)),
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
    criterion = _expect("partition.criterion", raw.get("criterion", "magnitude"), "str")
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
    return SearchSpec(
        sampler=sampler,
        sampler_options=options,
        trials=trials,
        concurrency=concurrency,
        seed=seed,
        early_stopping=_expect("search.early_stopping", raw.get("early_stopping", False), "bool"),
        retries=retries,
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
    return Resources(cpu=cpu, gpu=gpu)


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


def check_heldout(config: ExperimentConfig) -> None:
    """A verdict after the search (``rerank.after_search``) needs prompts the search does not
    use: raises before Ray starts when there are none. ``crdiff search`` and ``crdiff launch``
    call it; a study run from Python (``run_study``) does not re-rank and needs none."""
    prompts, model, rerank = config.prompts, config.model, config.rerank
    if not rerank.after_search or rerank.file or model.source == "testbed":
        return
    left = len(read_prompt_file(prompts.file)) - prompts.count if prompts.file else 0
    if left < 1:
        where = f"every prompt of {prompts.file!r}" if prompts.file else "inline prompts.items"
        raise UsageError(
            f"rerank.after_search = true but the search uses {where}, leaving no held-out "
            "prompts; set rerank.file to a held-out prompt file, lower prompts.count, or set "
            "rerank.after_search = false"
        )


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
