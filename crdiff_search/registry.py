"""The recipe registry on MLflow's Model Registry.

Layout: one registered model per base model (``crdiff-<model>``, the original id or path in
the tag ``crdiff.base_model``), one model version per export (a small pyfunc whose artifact
``recipe.json`` is the recipe), and one alias per resolution (``64x48`` -> the version in use).
Versions keep their recipe's checksum, resolution, objective and scores as tags, so listing
needs no downloads; reading a recipe verifies its checksum against both the JSON and the tag.

Example::

    reg = Registry("sqlite:///mlflow.db")
    reg.export(recipe)                              # -> RegistryEntry(version=3, ...)
    recipe = reg.get("testbed", (64, 48))           # interpolated, with a warning, if absent
    reg.get("testbed", "96x96", strict=True)        # RecipeNotFoundError if absent

Exports are safe to run concurrently: MLflow numbers versions atomically, and the resolution
alias only ever moves forward to the highest version exported for that resolution.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import re
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crdiff_search.errors import CrdiffError, UsageError
from crdiff_search.recipe import Recipe, RecipeError, RecipeIntegrityError
from crdiff_search.resolution import format_resolution, parse_resolution

REGISTRY_EXPERIMENT = "crdiff-registry"
MODEL_PREFIX = "crdiff-"
BASE_MODEL_TAG = "crdiff.base_model"
TAGS = {
    "resolution": "crdiff.resolution",
    "checksum": "crdiff.checksum",
    "study_id": "crdiff.study_id",
    "objective": "crdiff.objective",
    "score": "crdiff.score",
    "dense_score": "crdiff.dense_score",
    "poa_w": "crdiff.poa_w",
    "created_at": "crdiff.created_at",
}
RECIPE_ARTIFACT = "recipe.json"
_RETRIES = 10


class RecipeNotFoundError(UsageError):
    """No recipe registered for the model, or (with ``strict``) for the resolution."""


class RegistryError(CrdiffError, RuntimeError):
    """MLflow failed while reading or writing the registry; names the URI."""


class NearestResolutionWarning(UserWarning):
    """``Registry.get`` returned the recipe of another (the nearest) registered resolution."""


class InterpolatedRecipeWarning(NearestResolutionWarning):
    """``Registry.get`` returned a recipe interpolated from other registered resolutions."""


@dataclass
class RegistryEntry:
    """One registered recipe version: where it is and what it scored."""

    model: str
    name: str
    resolution: tuple[int, int]
    version: int
    aliases: list[str] = field(default_factory=list)
    checksum: str | None = None
    study_id: str | None = None
    objective: str | None = None
    score: float | None = None
    dense_score: float | None = None
    poa_w: float | None = None
    created_at: str | None = None
    requested: tuple[int, int] | None = None
    recipe: Recipe | None = None

    @property
    def resolution_str(self) -> str:
        return format_resolution(*self.resolution)

    @property
    def is_fallback(self) -> bool:
        return self.requested is not None and self.requested != self.resolution

    def to_row(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "resolution": self.resolution_str,
            "version": self.version,
            "current": self.resolution_str in self.aliases,
            "objective": self.objective,
            "score": self.score,
            "dense_score": self.dense_score,
            "poa_w": self.poa_w,
            "study_id": self.study_id,
            "created_at": self.created_at,
        }


def model_key(model: str) -> str:
    """The canonical base-model string: an existing local folder becomes its absolute path."""
    if not isinstance(model, str) or not model.strip():
        raise UsageError(f"model {model!r} must be a non-empty id or path")
    path = Path(model).expanduser()
    if path.exists():
        return str(path.resolve())
    return model.strip()


def registered_name(model: str) -> str:
    """``crdiff-<model>``: ``/`` and ``:`` (not allowed by MLflow) become ``--``; a local path
    becomes its folder name plus a short hash of the full path."""
    key = model_key(model)
    if Path(key).is_absolute():
        digest = hashlib.sha1(key.encode()).hexdigest()[:8]
        slug = f"{Path(key).name or 'model'}-{digest}"
    else:
        slug = key
    slug = re.sub(r"[/:]+", "--", slug)
    slug = re.sub(r"[^A-Za-z0-9_.\-]+", "_", slug)
    return MODEL_PREFIX + slug


def resolution_distance(a: tuple[int, int], b: tuple[int, int]) -> float:
    """How far apart two resolutions are: aspect ratio first (weight 2), then area, in logs."""
    ar = abs(math.log((a[0] / a[1]) / (b[0] / b[1])))
    area = abs(math.log((a[0] * a[1]) / (b[0] * b[1])))
    return 2.0 * ar + area


def nearest_resolution(target, candidates) -> tuple[int, int]:
    target = parse_resolution(target)
    cands = [parse_resolution(c) for c in candidates]
    if not cands:
        raise ValueError("no candidate resolutions")
    return min(cands, key=lambda c: (resolution_distance(target, c), -c[0] * c[1], c))


class Registry:
    """Recipes per (base model, resolution) in MLflow's Model Registry at ``uri``.

    ``uri`` is a tracking/registry URI (default ``sqlite:///<cwd>/mlflow.db``, shared with the
    search's tracking); export runs go to the MLflow experiment ``experiment``.
    """

    def __init__(self, uri: str | None = None, *, experiment: str = REGISTRY_EXPERIMENT):
        from crdiff_search.tracking import configure_mlflow_env, resolve_tracking_uri

        configure_mlflow_env()
        self.uri = resolve_tracking_uri(uri)
        self.experiment = experiment
        from mlflow import MlflowClient

        if self.uri.startswith("sqlite:///"):
            Path(self.uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        self.client = self._call(
            "connect", MlflowClient, tracking_uri=self.uri, registry_uri=self.uri
        )
        self._experiment_id: str | None = None

    # -- plumbing ------------------------------------------------------------------------------
    def _call(self, what: str, fn, *args, **kwargs):
        from crdiff_search.tracking import call_mlflow

        def wrap(exc: Exception) -> Exception:
            return RegistryError(
                f"registry {what} failed (URI {self.uri}): {type(exc).__name__}: "
                f"{str(exc).strip()[:1000]}"
            )

        return call_mlflow(
            fn,
            args,
            kwargs,
            retries=_RETRIES,
            passthrough=(UsageError, RegistryError),
            wrap=wrap,
            keep=_not_found,
        )

    def _experiment_id_(self) -> str:
        if self._experiment_id is None:
            from crdiff_search.tracking import StudyTracker

            self._experiment_id = StudyTracker(self.uri, self.experiment).experiment_id
        return self._experiment_id

    def _registered(self, model: str):
        name = registered_name(model)
        try:
            return self._call("read model", self.client.get_registered_model, name)
        except Exception as exc:
            if _not_found(exc):
                return None
            raise

    # -- writing -------------------------------------------------------------------------------
    def export(self, recipe: Recipe, *, source_run_id: str | None = None) -> RegistryEntry:
        """Register ``recipe`` as a new version of its base model and point the resolution alias
        at it (unless a concurrent export registered a newer version meanwhile)."""
        import mlflow.pyfunc

        if not isinstance(recipe, Recipe):
            raise UsageError(f"export needs a Recipe, got {type(recipe).__name__}")
        key = model_key(recipe.model)
        name = registered_name(key)
        res = recipe.resolution_str
        exp_id = self._experiment_id_()
        run = self._call(
            "start export run",
            self.client.create_run,
            exp_id,
            run_name=f"export {name} {res}",
            tags={
                "crdiff.kind": "export",
                BASE_MODEL_TAG: key,
                TAGS["resolution"]: res,
                **({TAGS["study_id"]: recipe.study_id} if recipe.study_id else {}),
                **(
                    {"crdiff.source_run_id": source_run_id or recipe.run_id}
                    if (source_run_id or recipe.run_id)
                    else {}
                ),
            },
        )
        run_id = run.info.run_id
        try:
            self._call(
                "log recipe", self.client.log_text, run_id, recipe.to_json(), RECIPE_ARTIFACT
            )
            logged = self._call(
                "create logged model",
                self.client.create_logged_model,
                exp_id,
                name="recipe",
                source_run_id=run_id,
                tags={BASE_MODEL_TAG: key, TAGS["resolution"]: res},
            )
            with tempfile.TemporaryDirectory(prefix="crdiff-recipe-") as tmp:
                json_path = Path(tmp) / RECIPE_ARTIFACT
                json_path.write_text(recipe.to_json() + "\n", encoding="utf-8")
                model_dir = Path(tmp) / "model"
                mlflow.pyfunc.save_model(
                    str(model_dir),
                    python_model=str(Path(__file__).with_name("recipe_pyfunc.py")),
                    artifacts={"recipe": str(json_path)},
                    pip_requirements=["mlflow"],
                )
                self._call(
                    "upload model", self.client.log_model_artifacts, logged.model_id, str(model_dir)
                )
            self._call(
                "finalize model", self.client.finalize_logged_model, logged.model_id, "READY"
            )
            self._ensure_registered_model(name, key)
            version = self._call(
                "create version",
                self.client.create_model_version,
                name,
                # The artifact location, not models:/<id>: MLflow resolves the latter through
                # the process-global tracking URI, which need not be this registry's.
                logged.artifact_location,
                run_id=run_id,
                tags=_version_tags(recipe),
                description=_describe(recipe),
                await_creation_for=0,
                model_id=logged.model_id,
            )
            number = int(version.version)
            self._advance_alias(name, res, number)
            self._call("finish export run", self.client.set_terminated, run_id, "FINISHED")
            self._link_study_run(recipe, name, number)
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.set_terminated(run_id, "FAILED")
            raise
        entry = self._entry(
            name, key, self._call("read version", self.client.get_model_version, name, str(number))
        )
        entry.recipe = recipe
        return entry

    def _link_study_run(self, recipe: Recipe, name: str, number: int) -> None:
        """Tag the study's run with the version it became (``crdiff.registered_model``), when
        that run lives in this store; a study tracked elsewhere keeps no link."""
        if not recipe.run_id:
            return
        with contextlib.suppress(Exception):
            self.client.set_tag(
                recipe.run_id, "crdiff.registered_model", f"models:/{name}/{number}"
            )

    def _ensure_registered_model(self, name: str, key: str) -> None:
        if self._registered(key) is not None:
            return
        try:
            self._call(
                "create model",
                self.client.create_registered_model,
                name,
                tags={BASE_MODEL_TAG: key},
                description=f"crdiff-search recipes for {key} (one alias per resolution)",
            )
        except Exception as exc:
            # Another export created it first.
            if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(
                exc
            ):
                raise

    def _advance_alias(self, name: str, alias: str, number: int) -> None:
        # Compare-and-set until the alias points at a version >= ours: the alias ends at the
        # highest exported version whatever order concurrent exports finish in.
        for _ in range(20):
            current = self._alias_version(name, alias)
            if current is not None and current >= number:
                return
            self._call(
                "set alias", self.client.set_registered_model_alias, name, alias, str(number)
            )
            time.sleep(0.02)
            current = self._alias_version(name, alias)
            if current is not None and current >= number:
                return
        raise RegistryError(f"could not set alias {alias!r} of {name} (URI {self.uri})")

    def _alias_version(self, name: str, alias: str) -> int | None:
        try:
            mv = self._call("read alias", self.client.get_model_version_by_alias, name, alias)
        except Exception as exc:
            if _not_found(exc):
                return None
            raise
        return int(mv.version)

    # -- reading -------------------------------------------------------------------------------
    def resolve(self, model: str, resolution, *, strict: bool = False) -> RegistryEntry:
        """The registry entry to use for ``model`` at ``resolution`` (recipe not yet read)."""
        wanted = parse_resolution(resolution)
        key = model_key(model)
        registered = self._registered(key)
        if registered is None:
            known = ", ".join(sorted(e.model for e in self.list())) or "none"
            raise RecipeNotFoundError(
                f"no recipes registered for model {key!r} in {self.uri} (registered models: {known}); "
                "run `crdiff export STUDY` first"
            )
        aliases = {a: int(v) for a, v in (registered.aliases or {}).items() if _is_resolution(a)}
        if not aliases:
            raise RecipeNotFoundError(
                f"model {key!r} has no recipe for any resolution in {self.uri}"
            )
        exact = format_resolution(*wanted)
        if exact in aliases:
            alias = exact
        else:
            available = ", ".join(sorted(aliases, key=lambda a: parse_resolution(a)))
            if strict:
                raise RecipeNotFoundError(
                    f"no recipe for {key} at {exact} (strict); registered resolutions: {available}"
                )
            alias = format_resolution(*nearest_resolution(wanted, aliases))
            warnings.warn(
                f"no recipe for {key} at {exact}; using the nearest registered resolution {alias} "
                f"(version {aliases[alias]}; registered: {available})",
                NearestResolutionWarning,
                stacklevel=3,
            )
        mv = self._call(
            "read version", self.client.get_model_version, registered.name, str(aliases[alias])
        )
        entry = self._entry(registered.name, key, mv)
        entry.requested = wanted
        return entry

    def get(
        self, model: str, resolution, *, strict: bool = False, fallback: str = "interpolate"
    ) -> Recipe:
        """The recipe for ``model`` at ``resolution``. Where none is registered: one
        interpolated from the registered recipes and the training size
        (:meth:`interpolate`, ``fallback="interpolate"``, the default: it beat the nearest
        recipe held out, see docs/beyond-the-paper.md) with an
        :class:`InterpolatedRecipeWarning`, or the nearest registered resolution's (by aspect
        ratio, then area; ``"nearest"``) with a :class:`NearestResolutionWarning`, or
        :class:`RecipeNotFoundError` with ``strict``."""
        return self.lookup(model, resolution, strict=strict, fallback=fallback)[0]

    def lookup(
        self, model: str, resolution, *, strict: bool = False, fallback: str = "interpolate"
    ) -> tuple[Recipe, str]:
        """:meth:`get`'s recipe and where it came from, in words (the version read, or the
        resolutions interpolated from); warns as :meth:`get` does."""
        from crdiff_search.interpolate import check_fallback

        check_fallback(fallback)
        if fallback == "interpolate" and not strict:
            recipe, used = self.interpolate(model, resolution)
            if recipe.resolution == used[0].resolution and len(used) == 1:
                e = used[0]
                return recipe, f"registry {e.name} version {e.version} ({e.resolution_str})"
            warnings.warn(
                f"no recipe for {model_key(model)} at {format_resolution(*recipe.resolution)}"
                f"; interpolated from {recipe.trial_id.split(':', 1)[1]} (resolution=weight)",
                InterpolatedRecipeWarning,
                stacklevel=3,
            )
            names = ", ".join(e.resolution_str for e in used)
            return recipe, f"interpolated from the recipes registered at {names}"
        entry = self.resolve(model, resolution, strict=strict)
        source = f"registry {entry.name} version {entry.version} ({entry.resolution_str})"
        return self.read_recipe(entry), source

    def interpolate(self, model: str, resolution, *, training=None, k: int | None = None):
        """The recipe predicted at ``resolution`` from the registered recipes of ``model``
        (:func:`~crdiff_search.interpolate.interpolate_recipe`; the model's training size, from
        its config unless given, as a dense anchor), and the entries it read. A resolution
        that is registered gives its own recipe."""
        from crdiff_search.interpolate import DEFAULT_NEIGHBOURS, interpolate_recipe

        wanted = parse_resolution(resolution)
        key = model_key(model)
        entries = self.list(key)
        if not entries:
            raise RecipeNotFoundError(
                f"no recipes registered for model {key!r} in {self.uri}; run `crdiff export "
                "STUDY` first"
            )
        exact = [e for e in entries if e.resolution == wanted]
        if exact:
            return self.read_recipe(exact[0]), exact
        if training is None:
            from crdiff_search.model_info import training_resolution

            training = training_resolution(key)
        recipes = [self.read_recipe(e) for e in entries]
        recipe = interpolate_recipe(wanted, recipes, training=training, k=k or DEFAULT_NEIGHBOURS)
        return recipe, entries

    def read_recipe(self, entry: RegistryEntry) -> Recipe:
        import mlflow.artifacts

        mv = self._call(
            "read version", self.client.get_model_version, entry.name, str(entry.version)
        )
        source = mv.source
        if source.startswith("models:/"):
            logged = self._call(
                "read model", self.client.get_logged_model, source.rsplit("/", 1)[-1]
            )
            source = logged.artifact_location
        uri = source.rstrip("/") + "/artifacts/" + RECIPE_ARTIFACT
        with tempfile.TemporaryDirectory(prefix="crdiff-recipe-") as tmp:
            path = self._call(
                "download recipe",
                mlflow.artifacts.download_artifacts,
                artifact_uri=uri,
                dst_path=tmp,
                tracking_uri=self.uri,
            )
            text = Path(path).read_text(encoding="utf-8")
        where = f"{entry.name} version {entry.version}"
        try:
            recipe = Recipe.from_json(text)
        except RecipeError as exc:
            raise type(exc)(f"registry recipe {where}: {exc}") from None
        if entry.checksum and recipe.checksum != entry.checksum:
            raise RecipeIntegrityError(
                f"registry recipe {where}: checksum {recipe.checksum[:12]}... does not match the "
                f"registered {entry.checksum[:12]}...: the artifact was replaced after export"
            )
        entry.recipe = recipe
        return recipe

    def list(self, model: str | None = None, *, all_versions: bool = False) -> list[RegistryEntry]:
        """Registered recipes: the current version per (model, resolution), or every version."""
        entries: list[RegistryEntry] = []
        for registered in self._all_registered():
            key = (registered.tags or {}).get(BASE_MODEL_TAG, registered.name[len(MODEL_PREFIX) :])
            if model is not None and key != model_key(model):
                continue
            aliases = {
                a: int(v) for a, v in (registered.aliases or {}).items() if _is_resolution(a)
            }
            if all_versions:
                versions = self._call(
                    "list versions",
                    self.client.search_model_versions,
                    f"name = '{registered.name}'",
                )
                for mv in versions:
                    entry = self._entry(registered.name, key, mv)
                    # A searched version carries no aliases in MLflow's answer: the registered
                    # model's alias map says which one each resolution points at.
                    held = sorted(a for a, v in aliases.items() if v == entry.version)
                    entries.append(dataclasses.replace(entry, aliases=held or entry.aliases))
            else:
                for _alias, number in aliases.items():
                    mv = self._call(
                        "read version", self.client.get_model_version, registered.name, str(number)
                    )
                    entries.append(self._entry(registered.name, key, mv))
        entries.sort(
            key=lambda e: (e.model, e.resolution[0] * e.resolution[1], e.resolution, -e.version)
        )
        return entries

    def show(
        self, model: str, resolution=None, *, version: int | None = None, strict: bool = True
    ) -> RegistryEntry:
        """One entry with its recipe loaded: by resolution (exact unless ``strict=False``) or version."""
        key = model_key(model)
        if version is not None:
            registered = self._registered(key)
            if registered is None:
                raise RecipeNotFoundError(f"no recipes registered for model {key!r} in {self.uri}")
            try:
                mv = self._call(
                    "read version",
                    self.client.get_model_version,
                    registered.name,
                    str(int(version)),
                )
            except Exception as exc:
                if _not_found(exc):
                    raise RecipeNotFoundError(
                        f"model {key!r} has no registry version {version}"
                    ) from None
                raise
            entry = self._entry(registered.name, key, mv)
        else:
            if resolution is None:
                raise UsageError("show needs a resolution (WxH) or a version")
            entry = self.resolve(key, resolution, strict=strict)
        self.read_recipe(entry)
        return entry

    def _all_registered(self) -> list:
        out, token = [], None
        while True:
            page = self._call(
                "list models",
                self.client.search_registered_models,
                filter_string=f"name LIKE '{MODEL_PREFIX}%'",
                max_results=100,
                page_token=token,
            )
            out.extend(page)
            token = page.token
            if not token:
                return out

    def _entry(self, name: str, key: str, mv) -> RegistryEntry:
        tags = mv.tags or {}
        return RegistryEntry(
            model=key,
            name=name,
            resolution=parse_resolution(tags.get(TAGS["resolution"], "0x0"))
            if tags.get(TAGS["resolution"])
            else (0, 0),
            version=int(mv.version),
            aliases=sorted(mv.aliases or []),
            checksum=tags.get(TAGS["checksum"]),
            study_id=tags.get(TAGS["study_id"]),
            objective=tags.get(TAGS["objective"]),
            score=_float(tags.get(TAGS["score"])),
            dense_score=_float(tags.get(TAGS["dense_score"])),
            poa_w=_float(tags.get(TAGS["poa_w"])),
            created_at=tags.get(TAGS["created_at"]),
        )


def _version_tags(recipe: Recipe) -> dict[str, str]:
    tags = {
        TAGS["resolution"]: recipe.resolution_str,
        TAGS["checksum"]: recipe.checksum,
        TAGS["poa_w"]: repr(recipe.poa_w),
        BASE_MODEL_TAG: model_key(recipe.model),
        "crdiff.ratios": json.dumps(recipe.ratios, sort_keys=True),
    }
    if recipe.study_id:
        tags[TAGS["study_id"]] = recipe.study_id
    if recipe.objective:
        tags[TAGS["objective"]] = recipe.objective
    if "recipe" in recipe.scores:
        tags[TAGS["score"]] = repr(recipe.scores["recipe"])
    if "dense" in recipe.scores:
        tags[TAGS["dense_score"]] = repr(recipe.scores["dense"])
    if recipe.created_at:
        tags[TAGS["created_at"]] = recipe.created_at
    return tags


def _describe(recipe: Recipe) -> str:
    ratios = ", ".join(f"{g}={r:.3f}" for g, r in recipe.ratios.items())
    scores = ", ".join(f"{k}={v:.4f}" for k, v in recipe.scores.items())
    return (
        f"{recipe.model} at {recipe.resolution_str}: {recipe.partition.granularity} partition, "
        f"{recipe.criterion} pruning ({ratios}), POA w={recipe.poa_w}"
        + (f"; {recipe.objective}: {scores}" if scores else "")
    )


def _is_resolution(alias: str) -> bool:
    return re.fullmatch(r"\d+x\d+", alias) is not None


def _float(value) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _not_found(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "")
    return code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(exc).lower()
