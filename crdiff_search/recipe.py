"""The recipe: everything needed to reproduce a pruned (and amplified) model at one resolution.

A recipe is a typed, validated, versioned record. It round-trips through a plain dict and JSON;
the same dict is what the registry stores and MLflow records. ``checksum`` is the SHA-256 of the
canonical JSON of every other field, so a recipe edited after export is rejected on load.

Example::

    recipe = Recipe(model="testbed", width=64, height=64, ratios={"down": 0.3, "mid": 0.2, "up": 0.4},
                    poa_w=1.5, objective="scene", scores={"dense": 0.41, "pruned": 0.52, "recipe": 0.55})
    text = recipe.to_json()
    assert Recipe.from_json(text) == recipe
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crdiff_search.errors import IntegrityError, UsageError
from crdiff_search.names import ATTENTION_SCALINGS, GRANULARITIES, KINDS
from crdiff_search.registries import CRITERIA
from crdiff_search.resolution import format_resolution

RECIPE_VERSION = 1


class RecipeError(UsageError):
    """A recipe that is malformed, from an unknown schema version, or altered after export."""


class RecipeIntegrityError(IntegrityError, RecipeError):
    """A recipe whose checksum does not match its content (exit code 3, not 2)."""


@dataclass(frozen=True)
class PoaWindow:
    """Where POA applies, as diffusion time normalised to [0, 1] (``timestep / T``, T = the
    scheduler's ``num_train_timesteps``): 1 is pure noise, 0 the clean image.

    Outside the window the step uses the pruned network alone (as ``w = 1``).
    ``PoaWindow(0.5, 1.0)`` amplifies only the first, noisiest half of sampling.
    """

    lo: float = 0.0
    hi: float = 1.0

    def __post_init__(self):
        for name, value in (("lo", self.lo), ("hi", self.hi)):
            if (
                not isinstance(value, int | float)
                or not math.isfinite(value)
                or not 0 <= value <= 1
            ):
                raise UsageError(f"POA window {name}={value!r} must be a number in [0, 1]")
        if self.lo > self.hi:
            raise UsageError(f"POA window ({self.lo}, {self.hi}) is empty: lo must be <= hi")

    def contains(self, t: float) -> bool:
        return self.lo <= t <= self.hi

    @classmethod
    def parse(cls, value) -> PoaWindow | None:
        """``None``, ``(lo, hi)``, ``[lo, hi]``, ``"lo,hi"`` or a ``PoaWindow``."""
        if value is None or isinstance(value, PoaWindow):
            return value
        parts = value.split(",") if isinstance(value, str) else list(value)
        if len(parts) != 2:
            raise UsageError(f"POA window {value!r} must be two numbers 'lo,hi' in [0, 1]")
        try:
            lo, hi = (float(p) for p in parts)
        except (TypeError, ValueError):
            raise UsageError(
                f"POA window {value!r} must be two numbers 'lo,hi' in [0, 1]"
            ) from None
        return cls(lo, hi)

    def to_list(self) -> list[float]:
        return [float(self.lo), float(self.hi)]


def check_weight(w) -> float:
    if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w):
        raise UsageError(f"POA weight w={w!r} must be a finite number (1.0 = no POA; paper: 1.5)")
    return float(w)


@dataclass(frozen=True)
class PartitionSpec:
    """How to rebuild the partition: the arguments of ``search_spaces.build_partition``."""

    granularity: str = "paper"
    include: tuple[str, ...] | None = None
    n_groups: int | None = None

    def __post_init__(self):
        if self.granularity not in GRANULARITIES:
            raise RecipeError(
                f"partition granularity {self.granularity!r} is unknown; valid: {', '.join(GRANULARITIES)}"
            )
        if self.include is not None:
            include = tuple(self.include)
            bad = [k for k in include if k not in KINDS]
            if bad or not include:
                raise RecipeError(
                    f"partition include {list(include)!r} is invalid; valid kinds: {', '.join(KINDS)}"
                )
            object.__setattr__(self, "include", include)
        if self.n_groups is not None and (
            isinstance(self.n_groups, bool)
            or not isinstance(self.n_groups, int)
            or self.n_groups < 1
        ):
            raise RecipeError(f"partition n_groups {self.n_groups!r} must be a positive integer")

    def build(self, model):
        """The :class:`~crdiff_search.search_spaces.Partition` of ``model``'s denoiser."""
        from crdiff_search.search_spaces import build_partition

        return build_partition(
            model, self.granularity, include=self.include, n_groups=self.n_groups
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "granularity": self.granularity,
            "include": list(self.include) if self.include is not None else None,
            "n_groups": self.n_groups,
        }

    @classmethod
    def from_dict(cls, data) -> PartitionSpec:
        if isinstance(data, PartitionSpec):
            return data
        if not isinstance(data, dict):
            raise RecipeError(
                f"recipe field 'partition' must be an object, got {type(data).__name__}"
            )
        unknown = sorted(set(data) - {"granularity", "include", "n_groups"})
        if unknown:
            raise RecipeError(f"recipe partition has unknown keys {unknown}")
        return cls(
            granularity=data.get("granularity", "paper"),
            include=tuple(data["include"]) if data.get("include") is not None else None,
            n_groups=data.get("n_groups"),
        )


@dataclass(frozen=True)
class Recipe:
    """A registry entry: (model, resolution) -> partition, criterion, ratios, POA, provenance.

    ``scores`` holds the objective's values on the held-out prompts, at least ``"dense"`` and
    ``"recipe"`` (this recipe's score) when it comes from a re-ranking. ``poa_window`` is
    ``None`` (every step) or ``(lo, hi)`` in normalised diffusion time (see
    :class:`PoaWindow`). ``attention_scaling`` is ``None`` or ``"entropy"``
    (:mod:`crdiff_search.attention_scaling`, applied with the pruning); a recipe of entropy
    scaling alone has every ratio 0.
    """

    model: str
    width: int
    height: int
    ratios: dict[str, float]
    model_revision: str | None = None
    partition: PartitionSpec = field(default_factory=PartitionSpec)
    criterion: str = "magnitude"
    poa_w: float = 1.0
    poa_window: tuple[float, float] | None = None
    # a training-free peer of pruning applied with it: None, or "entropy" (attention-entropy
    # scaling of the self-attention logits, see crdiff_search.attention_scaling)
    attention_scaling: str | None = None
    objective: str | None = None
    higher_is_better: bool = True
    scores: dict[str, float] = field(default_factory=dict)
    steps: int | None = None
    guidance: float | None = None
    study_id: str | None = None
    run_id: str | None = None
    trial_id: str | None = None
    code_version: str | None = None
    created_at: str | None = None
    schema_version: int = RECIPE_VERSION

    def __post_init__(self):
        _check_str("model", self.model, required=True)
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise RecipeError(
                    f"recipe field {name!r} must be a positive integer, got {value!r}"
                )
        if not isinstance(self.partition, PartitionSpec):
            object.__setattr__(self, "partition", PartitionSpec.from_dict(self.partition))
        if self.criterion != "auto" and self.criterion not in CRITERIA:
            raise RecipeError(
                f"recipe criterion {self.criterion!r} is unknown; valid: auto, "
                f"{', '.join(CRITERIA)}"
            )
        if not isinstance(self.ratios, dict) or not self.ratios:
            raise RecipeError("recipe field 'ratios' must be a non-empty object {group: ratio}")
        ratios = {}
        for group, ratio in self.ratios.items():
            if not isinstance(group, str) or not group:
                raise RecipeError(f"recipe ratio group {group!r} must be a non-empty string")
            if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio < 1:
                raise RecipeError(
                    f"recipe ratio for group {group!r} is {ratio!r}; valid ratios are in [0, 1)"
                )
            ratios[group] = float(ratio)
        object.__setattr__(self, "ratios", ratios)
        if (
            isinstance(self.poa_w, bool)
            or not isinstance(self.poa_w, int | float)
            or not math.isfinite(self.poa_w)
        ):
            raise RecipeError(f"recipe poa_w {self.poa_w!r} must be a finite number (1.0 = no POA)")
        object.__setattr__(self, "poa_w", float(self.poa_w))
        if self.poa_window is not None:
            try:
                window = PoaWindow.parse(self.poa_window)
            except UsageError as exc:
                raise RecipeError(f"recipe poa_window: {exc}") from None
            object.__setattr__(self, "poa_window", (window.lo, window.hi))
        if self.attention_scaling is not None and self.attention_scaling not in ATTENTION_SCALINGS:
            raise RecipeError(
                f"recipe attention_scaling {self.attention_scaling!r} is unknown; valid: "
                f"null, {', '.join(map(repr, ATTENTION_SCALINGS))}"
            )
        if not isinstance(self.scores, dict):
            raise RecipeError("recipe field 'scores' must be an object {name: number}")
        scores = {}
        for key, value in self.scores.items():
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                raise RecipeError(
                    f"recipe score {key!r} is {value!r}; scores must be finite numbers"
                )
            scores[str(key)] = float(value)
        object.__setattr__(self, "scores", scores)
        if not isinstance(self.higher_is_better, bool):
            raise RecipeError(
                f"recipe higher_is_better must be true or false, got {self.higher_is_better!r}"
            )
        if self.steps is not None and (
            isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1
        ):
            raise RecipeError(f"recipe steps {self.steps!r} must be a positive integer")
        if self.guidance is not None:
            if (
                isinstance(self.guidance, bool)
                or not isinstance(self.guidance, int | float)
                or not math.isfinite(self.guidance)
            ):
                raise RecipeError(f"recipe guidance {self.guidance!r} must be a finite number")
            object.__setattr__(self, "guidance", float(self.guidance))
        for name in (
            "model_revision",
            "objective",
            "study_id",
            "run_id",
            "trial_id",
            "code_version",
            "created_at",
        ):
            _check_str(name, getattr(self, name))
        if self.schema_version != RECIPE_VERSION:
            raise RecipeError(
                f"recipe schema_version {self.schema_version!r} is not supported by this version of "
                f"crdiff-search (supported: {RECIPE_VERSION})"
            )

    # -- identity ------------------------------------------------------------------------------
    @property
    def resolution(self) -> tuple[int, int]:
        return (self.width, self.height)

    @property
    def resolution_str(self) -> str:
        return format_resolution(self.width, self.height)

    @property
    def checksum(self) -> str:
        return _checksum(self._payload())

    def replace(self, **changes) -> Recipe:
        return replace(self, **changes)

    # -- serialisation -------------------------------------------------------------------------
    def _payload(self) -> dict[str, Any]:
        data = asdict(self)
        data["partition"] = self.partition.to_dict()
        data["poa_window"] = list(self.poa_window) if self.poa_window is not None else None
        data["ratios"] = dict(self.ratios)
        if self.attention_scaling is None:
            # recipes written before the field existed keep their checksum
            del data["attention_scaling"]
        return data

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, with ``checksum`` over every other field."""
        data = self._payload()
        data["checksum"] = _checksum(data)
        return data

    def to_json(self, *, indent: int | None = 2) -> str:
        # allow_nan=False: a recipe is never written with NaN or infinity in it
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True, allow_nan=False)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, data, *, verify: bool = True) -> Recipe:
        """Validate and build a recipe. With ``verify`` (default) the ``checksum`` must be present
        and match; pass ``verify=False`` only for a hand-written recipe."""
        if not isinstance(data, dict):
            raise RecipeError(f"a recipe must be a JSON object, got {type(data).__name__}")
        data = dict(data)
        checksum = data.pop("checksum", None)
        version = data.get("schema_version", RECIPE_VERSION)
        if isinstance(version, bool) or version != RECIPE_VERSION:
            raise RecipeError(
                f"recipe schema_version {version!r} is not supported by this version of "
                f"crdiff-search (supported: {RECIPE_VERSION})"
            )
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise RecipeError(
                f"recipe has unknown fields {unknown}; valid: {', '.join(sorted(names))}"
            )
        missing = [n for n in ("model", "width", "height", "ratios") if n not in data]
        if missing:
            raise RecipeError(f"recipe is missing required fields {missing}")
        if data.get("poa_window") is not None:
            if not isinstance(data["poa_window"], list | tuple):
                raise RecipeError(
                    f"recipe poa_window must be null or [lo, hi], got {data['poa_window']!r}"
                )
            data["poa_window"] = tuple(data["poa_window"])
        if "partition" in data:
            data["partition"] = PartitionSpec.from_dict(data["partition"])
        try:
            recipe = cls(**data)
        except TypeError as exc:
            raise RecipeError(f"malformed recipe: {exc}") from None
        if verify:
            if checksum is None:
                raise RecipeError(
                    "recipe has no checksum: it was not written by `crdiff export` or Recipe.save; "
                    "load a hand-written recipe with verify=False"
                )
            if checksum != recipe.checksum:
                raise RecipeIntegrityError(
                    f"recipe checksum mismatch (stored {checksum}, computed "
                    f"{recipe.checksum}): the recipe was modified after export"
                )
        return recipe

    @classmethod
    def from_json(cls, text: str, *, verify: bool = True) -> Recipe:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RecipeError(f"recipe is not valid JSON: {exc}") from None
        return cls.from_dict(data, verify=verify)

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = True) -> Recipe:
        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"recipe file {str(path)!r} does not exist")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise RecipeError(
                f"recipe file {str(path)!r} is not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from None
        try:
            return cls.from_json(text, verify=verify)
        except RecipeError as exc:
            raise type(exc)(f"{path}: {exc}") from None


def _check_str(name: str, value, *, required: bool = False) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str) or not value.strip():
        raise RecipeError(f"recipe field {name!r} must be a non-empty string, got {value!r}")


def _checksum(payload: dict[str, Any]) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def utc_now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


REVISION_PREFIX = "weights-fp16-sha256:"


def model_revision(denoiser) -> str:
    """The revision of a loaded denoiser's (dense) weights, the one definition recipes store
    and :func:`~crdiff_search.apply.apply_recipe` compares: ``weights-fp16-sha256:<hex>`` over
    every tensor's name, shape and values cast to float16, so one checkpoint loaded in float32
    or float16 has one revision (a bfloat16 load rounds differently and has its own)."""
    return REVISION_PREFIX + state_dict_digest(denoiser, dtype="float16")


def state_dict_digest(module, *, dtype: str | None = None) -> str:
    """sha256 of a module's state dict (names, shapes, values); ``dtype`` casts floating
    tensors first (``None``: as stored, the dtype is part of the digest)."""
    import torch

    cast = getattr(torch, dtype) if dtype else None
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach()
        if cast is not None and t.is_floating_point():
            t = t.to(cast)
        digest.update(name.encode())
        digest.update(str(t.dtype).encode())
        digest.update(str(tuple(t.shape)).encode())
        t = t.to("cpu").contiguous()
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()
