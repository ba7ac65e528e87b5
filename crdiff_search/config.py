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
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crdiff_search.errors import ConfigErrors as ConfigErrors  # re-exported
from crdiff_search.errors import UsageError
from crdiff_search.recipe import PartitionSpec
from crdiff_search.resolution import parse_resolution
from crdiff_search.testbed import DEFAULT_GUIDANCE, DEFAULT_STEPS

CONFIG_VERSION = 1
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
    # None: a trial whose generation or scoring fails is retried, then FAILED. A number: an
    # image that fails (or scores NaN) counts this value in every term, inside the trial's mean
    # (the reference scores a failed prompt -2.0); the trial goes on.
    failed_image_score: float | None = None

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
    # "auto": magnitude-tensor for a transformer's paper partition (the reference), else
    # magnitude (one threshold per group)
    criterion: str = "auto"

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
    # "prune" (the method), "prune+entropy" (pruning searched with attention-entropy scaling on
    # in every trial, trial 0 included), or "entropy" (the scaling alone: one trial)
    repair: str = "prune"
    # "none", or "registry": the first trials after the dense one are the registry's recipes
    # at neighbouring resolutions (interpolated, then nearest first), up to warm_start_points
    warm_start: str = "none"
    warm_start_points: int = 3

    @property
    def attention_scaling(self) -> str | None:
        """The training-free scaling every trial runs with (None for plain pruning)."""
        return "entropy" if "entropy" in self.repair.split("+") else None


@dataclass(frozen=True)
class Resources:
    """What one trial worker holds (a GPU for real models), and how its pruner spends memory:
    ``pruner_cache`` and ``pruner_backup`` are :class:`~crdiff_search.pruning.Pruner`'s
    ``cache`` and ``backup`` (``auto``: sorted scores and the backup in RAM on CPU; histogram
    selection on a GPU, with the dense backup on it while the selected weights are at most
    ``pruner_device_budget`` of the model, a share or a number of bytes, else in pinned host
    memory)."""

    cpu: float = 1.0
    gpu: float = 0.0
    pruner_cache: str = "auto"
    pruner_backup: str = "auto"
    pruner_device_budget: float = 0.25


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


EARLY_STOPPING_CHUNKS = 4


def early_stopping_chunk_size(count: int) -> int:
    """The chunk size that splits ``count`` prompts in (up to) :data:`EARLY_STOPPING_CHUNKS`
    chunks: what early stopping uses when ``prompts.chunk_size`` is not set."""
    return max(1, -(-count // EARLY_STOPPING_CHUNKS))


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
        """``[(start, stop), ...]`` prompt index ranges reported one at a time: chunks of
        ``prompts.chunk_size``; without one, all prompts at once, or with early stopping on,
        :data:`EARLY_STOPPING_CHUNKS` chunks (ASHA needs intermediate reports)."""
        n = self.prompts.count
        size = self.prompts.chunk_size or (
            early_stopping_chunk_size(n) if self.search.early_stopping else n
        )
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
            k: obj[k]
            for k in ("name", "weights", "mode", "options", "relative", "failed_image_score")
            if k in obj
        }
        if not out["objective"]["relative"]:
            del out["objective"]["relative"]
        if out["objective"].get("failed_image_score") is None:
            out["objective"].pop("failed_image_score", None)
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
def _from_dict(data: Mapping[str, Any], *, base_dir: Path | None) -> ExperimentConfig:
    """Import the experiment's plug-ins, then validate it (:mod:`crdiff_search.validation`)."""
    from crdiff_search.validation import import_plugins, validate

    import_plugins(data)
    return validate(data, base_dir=base_dir)


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
        # Without `study = ...` the file names the study; characters a folder name or an
        # MLflow run should not carry become "-" ("my exp.toml" -> "my-exp").
        data.setdefault("study", re.sub(r"[^A-Za-z0-9._-]+", "-", p.stem).strip("-.") or "study")
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
    if p.is_dir():
        raise UsageError(f"{what} {str(p)!r} is a folder, not a file")
    if not p.is_file():
        raise UsageError(f"{what} {str(p)!r} does not exist")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{what} {str(p)!r} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it "
            "as UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{what} {str(p)!r} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise UsageError(f"{what} {str(p)!r} cannot be read: {exc.strerror or exc}") from None


def read_prompt_file(path: str | os.PathLike, where: str = "prompts.file") -> list[str]:
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{where} {str(p)!r} is a folder; give a text file, one prompt per line")
    if not p.is_file():
        raise UsageError(f"{where} {str(p)!r} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{where} {str(p)!r} cannot be read as UTF-8 text: {exc}") from None
    lines = [line.strip() for line in text.splitlines()]
    prompts = [line for line in lines if line and not line.startswith("#")]
    if not prompts:
        raise UsageError(
            f"{where} {str(p)!r} holds no prompts yet: write the prompts in it, one per line "
            "('#' starts a comment)"
        )
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
