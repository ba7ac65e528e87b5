"""MLflow tracking for searches: one parent run per study, one child run per trial.

The parent run holds the experiment file (artifact ``experiment.toml``), the code version
(package version and git commit) and the dense baseline; each child run holds one trial's
ratios, achieved sparsity, metrics and timings. Image grids (PNG, captioned) go under
``images/`` of a run.

Every call is idempotent: runs are found again by their tags ``crdiff.study_id`` and
``crdiff.trial_id``, so a driver that restarts and replays its trials never creates a second
parent or a second child for the same trial; a trial logged twice is updated in place. When
two processes race to create the same run, both keep the oldest one and delete the other.

The default store is SQLite in the working folder (``sqlite:///<abs cwd>/mlflow.db``); a
tracking server URI (``http://host:port``) works the same way. Relative SQLite paths are made
absolute, so Ray workers that run in another folder still write to the same database.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from crdiff_search import records
from crdiff_search.errors import CrdiffError, UsageError
from crdiff_search.version import code_info

log = logging.getLogger(__name__)

# MLflow must never reach out to the network on its own (usage telemetry), and an unreachable
# tracking server must fail in seconds rather than retry for minutes. Set before mlflow loads;
# values already in the environment win.
MLFLOW_ENV_DEFAULTS = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}

STUDY_TAG = "crdiff.study_id"
TRIAL_TAG = "crdiff.trial_id"
KIND_TAG = "crdiff.kind"
PARENT_TAG = "mlflow.parentRunId"
DEFAULT_EXPERIMENT = "crdiff-search"
# MLflow 3 opens an experiment in its GenAI view (traces) unless told it holds model runs
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
TRIAL_INDEX_TAG = "crdiff.trial_index"
CONFIG_ARTIFACT = "experiment.toml"

URI_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "file", "databricks")
TRIAL_STATES = {
    "COMPLETE": "FINISHED",
    "FINISHED": "FINISHED",
    "FAILED": "FAILED",
    "ERROR": "FAILED",
    "PRUNED": "KILLED",
    "KILLED": "KILLED",
    "TERMINATED": "FINISHED",
    "RUNNING": "RUNNING",
}
STUDY_STATES = {k: v for k, v in TRIAL_STATES.items() if v != "RUNNING"}

_MAX_PARAM_LEN = 6000
_BATCH = 100
_LOCK_RETRIES = 8


def configure_mlflow_env() -> None:
    """Put :data:`MLFLOW_ENV_DEFAULTS` into the environment (without overriding set values)."""
    for key, value in MLFLOW_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


configure_mlflow_env()


@contextlib.contextmanager
def _file_lock(path: Path | None):
    """An exclusive advisory lock on ``path`` (no-op for None or without fcntl)."""
    if path is None:
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class TrackingError(CrdiffError, RuntimeError):
    """MLflow failed; the message names the tracking URI and what was being done."""


def default_tracking_uri(cwd: str | os.PathLike | None = None) -> str:
    """``sqlite:///<abs cwd>/mlflow.db``."""
    folder = Path(cwd or os.getcwd()).resolve()
    return f"sqlite:///{folder / 'mlflow.db'}"


def resolve_tracking_uri(uri: str | os.PathLike | None) -> str:
    """Normalise a tracking URI.

    ``None`` or ``""`` gives :func:`default_tracking_uri`; a bare path ending in ``.db`` means
    SQLite there; relative SQLite paths become absolute. Unknown schemes raise UsageError.
    """
    if uri is None or str(uri).strip() == "":
        return default_tracking_uri()
    text = str(uri).strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        if text.endswith(".db"):
            return f"sqlite:///{Path(text).expanduser().resolve()}"
        raise UsageError(
            f"tracking URI {text!r} has no scheme; use sqlite:///PATH/mlflow.db, "
            f"http://HOST:PORT or a path ending in .db (schemes: {', '.join(URI_SCHEMES)})"
        )
    base = scheme.split("+", 1)[0].lower()
    if base not in URI_SCHEMES:
        raise UsageError(
            f"tracking URI {text!r} has unknown scheme {scheme!r}; valid: {', '.join(URI_SCHEMES)}"
        )
    if base == "sqlite":
        # sqlite:///relative.db -> rest "/relative.db"; sqlite:////abs.db -> rest "//abs.db"
        path = rest[1:] if rest.startswith("/") else rest
        if path and path != ":memory:" and not path.startswith("/"):
            return f"{scheme}:///{Path(path).expanduser().resolve()}"
    return text


CHECK_TIMEOUT_S = 3.0  # how long the start-up check waits for a tracking server


def check_tracking_uri(uri: str, *, timeout: float = CHECK_TIMEOUT_S) -> str:
    """Check, in a few seconds and before any Ray work, that MLflow can use ``uri``; returns
    the resolved URI. A SQLite store needs a folder it can write in; an HTTP server must
    accept a connection and answer ``/health``. Anything else raises a one-line
    :class:`UsageError` naming the URI (the CLI exits with 2)."""
    resolved = resolve_tracking_uri(uri)
    scheme, _, rest = resolved.partition("://")
    base = scheme.split("+", 1)[0].lower()
    if base == "sqlite":
        path = rest[1:] if rest.startswith("/") else rest
        if path in ("", ":memory:"):
            return resolved
        folder = Path("/" + path.lstrip("/")).parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent  # MLflow creates missing folders below an existing one
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise UsageError(
                f"tracking URI {resolved}: cannot write in {folder} (pass --tracking-uri or "
                "tracking.uri with a writable location, or --no-tracking)"
            )
        return resolved
    if base in ("http", "https"):
        import socket
        import urllib.error
        import urllib.parse
        import urllib.request

        parts = urllib.parse.urlsplit(resolved)
        host = parts.hostname or ""
        port = parts.port or (443 if base == "https" else 80)
        try:
            with socket.create_connection((host, port), timeout=timeout):
                pass
        except OSError as exc:
            raise UsageError(
                f"tracking server {resolved} is not reachable ({exc.strerror or exc}); start it, "
                "pass another --tracking-uri, or run with --no-tracking"
            ) from None
        health = urllib.parse.urlunsplit(
            (parts.scheme, parts.netloc, parts.path.rstrip("/") + "/health", "", "")
        )
        try:
            with urllib.request.urlopen(health, timeout=timeout):  # noqa: S310 (http(s) only)
                pass
        except urllib.error.HTTPError:
            pass  # it answered (a proxy path, an auth wall): MLflow's own calls will tell
        except (OSError, TimeoutError) as exc:
            raise UsageError(
                f"tracking server {resolved} accepted a connection but did not answer within "
                f"{timeout:g} s ({exc}); check the server, or run with --no-tracking"
            ) from None
    return resolved


def _to_pil(image):
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    import numpy as np

    array = image
    if hasattr(array, "detach"):  # torch tensor, C,H,W or H,W,C, floats in [0, 1]
        array = array.detach().float().cpu().numpy()
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return Image.fromarray(array).convert("RGB")


def image_grid(
    images: Sequence[Any],
    captions: Sequence[str] | None = None,
    *,
    ncols: int | None = None,
    title: str | None = None,
    min_tile: int = 128,
):
    """Tile images (PIL, HxWxC/CxHxW arrays or tensors in [0, 1]) into one captioned PIL image.

    Small images are enlarged (nearest neighbour) to at least ``min_tile`` pixels wide so the
    captions stay readable; each caption is wrapped under its tile; ``title`` goes on top.
    """
    import textwrap

    from PIL import Image, ImageDraw

    tiles = [_to_pil(im) for im in images]
    if not tiles:
        raise ValueError("image_grid needs at least one image")
    if captions is not None and len(captions) != len(tiles):
        raise ValueError(f"{len(captions)} captions for {len(tiles)} images")
    w, h = tiles[0].size
    scale = max(1, math.ceil(min_tile / w))
    tw, th = w * scale, h * scale
    tiles = [t.resize((tw, th), Image.NEAREST) if t.size != (tw, th) else t for t in tiles]
    ncols = ncols or math.ceil(math.sqrt(len(tiles)))
    nrows = math.ceil(len(tiles) / ncols)
    from crdiff_search.images import legible_font

    font = legible_font(13)
    line_h = 16
    chars = max(8, tw // 7)
    wrapped = [textwrap.wrap(str(c), chars)[:4] for c in captions] if captions else []
    cap_h = (max(len(lines) for lines in wrapped) * line_h + 4) if wrapped else 0
    title_lines = textwrap.wrap(title, max(8, (tw * ncols) // 7)) if title else []
    top = len(title_lines) * line_h + (4 if title_lines else 0)
    pad = 2
    grid = Image.new(
        "RGB",
        (ncols * (tw + pad) + pad, top + nrows * (th + cap_h + pad) + pad),
        "white",
    )
    draw = ImageDraw.Draw(grid)
    for i, line in enumerate(title_lines):
        draw.text((pad, 2 + i * line_h), line, fill="black", font=font)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, ncols)
        x = pad + c * (tw + pad)
        y = top + pad + r * (th + cap_h + pad)
        grid.paste(tile, (x, y))
        for j, line in enumerate(wrapped[i] if wrapped else []):
            draw.text((x, y + th + 2 + j * line_h), line, fill="black", font=font)
    return grid


# ----------------------------------------------------------------------------- tracker


def _quote(value: str) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _param_value(value: Any) -> str:
    if isinstance(value, float):
        text = repr(value)
    elif isinstance(value, (list, tuple, dict)):
        import json

        text = json.dumps(value, sort_keys=True, default=str)
    else:
        text = str(value)
    return text[:_MAX_PARAM_LEN]


def _metric_items(metrics: Mapping[str, Any] | None) -> Iterable[tuple[str, float]]:
    for key, value in (metrics or {}).items():
        if value is None or isinstance(value, str):
            continue
        try:
            yield str(key), float(value)
        except (TypeError, ValueError):
            continue


def _timing_key(key: str) -> str:
    return key if key.startswith("t_") else f"t_{key}"


def call_mlflow(
    fn,
    args: tuple = (),
    kwargs: dict | None = None,
    *,
    retries: int,
    passthrough: tuple[type[BaseException], ...] = (),
    wrap,
    keep=lambda exc: False,
):
    """``fn(*args, **kwargs)``, retried with a doubling back-off (0.05 s to 2 s) while SQLite
    reports "database is locked" (several processes writing one store); ``passthrough``
    exceptions and those ``keep(exc)`` accepts propagate as they are, any other becomes
    ``wrap(exc)``."""
    delay = 0.05
    for attempt in range(retries + 1):
        try:
            return fn(*args, **(kwargs or {}))
        except passthrough:
            raise
        except Exception as exc:
            if "database is locked" in str(exc) and attempt < retries:
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            if keep(exc):
                raise
            raise wrap(exc) from exc
    raise AssertionError("unreachable")  # pragma: no cover


class StudyTracker:
    """Parent/child MLflow runs for one experiment (a set of studies), found again by tags.

    ``tracking_uri`` defaults to ``sqlite:///<abs cwd>/mlflow.db``. The experiment is created
    on first use. All MLflow failures raise :class:`TrackingError` naming the URI.
    """

    def __init__(self, tracking_uri: str | None = None, experiment_name: str = DEFAULT_EXPERIMENT):
        if not experiment_name or not str(experiment_name).strip():
            raise UsageError("MLflow experiment name must be a non-empty string")
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.experiment_name = str(experiment_name)
        configure_mlflow_env()
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as exc:  # pragma: no cover - mlflow is a dependency
            raise TrackingError(f"mlflow is not importable: {exc}") from exc
        db = None
        if self.tracking_uri.startswith("sqlite:///"):
            db = Path(self.tracking_uri[len("sqlite:///") :])
            db.parent.mkdir(parents=True, exist_ok=True)
        # Processes that open a new SQLite store at once would all create its tables (and all
        # but one fail): the first use of a store is serialised with a lock file next to it.
        with _file_lock(db.with_name(db.name + ".lock") if db else None):
            self._client = self._call("connect", MlflowClient, tracking_uri=self.tracking_uri)
            self.experiment_id = self._ensure_experiment()
        self._children: dict[str, dict[str, str]] = {}
        self._study_of: dict[str, str] = {}
        self._statuses: dict[str, dict[str, str]] = {}
        self._executor = None
        self._pending: list = []
        # Background writes that failed so far, and the last error (shown by the driver).
        self.failures = 0
        self.last_failure = ""

    # -- plumbing -------------------------------------------------------------------------

    @property
    def client(self):
        """The underlying ``MlflowClient`` (for reading runs back)."""
        return self._client

    def _call(self, what: str, fn, *args, **kwargs):
        """Run an MLflow call; retry SQLite lock contention; re-raise naming the URI."""

        def wrap(exc: Exception) -> Exception:
            return TrackingError(
                f"MLflow {what} failed (tracking URI {self.tracking_uri}): "
                f"{type(exc).__name__}: {str(exc).strip()[:2000]}"
            )

        return call_mlflow(
            fn,
            args,
            kwargs,
            retries=_LOCK_RETRIES,
            passthrough=(UsageError, TrackingError),
            wrap=wrap,
        )

    def _ensure_experiment(self) -> str:
        exp = self._call(
            "get experiment", self._client.get_experiment_by_name, self.experiment_name
        )
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                self._call("restore experiment", self._client.restore_experiment, exp.experiment_id)
            if (exp.tags or {}).get(EXPERIMENT_KIND_TAG) is None:
                self._call(
                    "tag experiment",
                    self._client.set_experiment_tag,
                    exp.experiment_id,
                    EXPERIMENT_KIND_TAG,
                    EXPERIMENT_KIND,
                )
            return exp.experiment_id
        location = None
        if self.tracking_uri.startswith("sqlite:///"):
            db = Path(self.tracking_uri[len("sqlite:///") :])
            safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.experiment_name)
            location = str(db.parent / "mlruns" / safe)
        try:
            return self._client.create_experiment(
                self.experiment_name,
                artifact_location=location,
                tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
            )
        except Exception as exc:
            # Another process may have created it meanwhile.
            exp = self._call(
                "get experiment", self._client.get_experiment_by_name, self.experiment_name
            )
            if exp is not None:
                return exp.experiment_id
            raise TrackingError(
                f"MLflow create experiment {self.experiment_name!r} failed "
                f"(tracking URI {self.tracking_uri}): {type(exc).__name__}: {exc}"
            ) from exc

    def _search(self, filter_string: str) -> list:
        runs: list = []
        token = None
        while True:
            page = self._call(
                "search runs",
                self._client.search_runs,
                [self.experiment_id],
                filter_string=filter_string,
                max_results=1000,
                page_token=token,
            )
            runs.extend(page)
            token = getattr(page, "token", None)
            if not token:
                return runs

    def _dedupe(self, runs: list, what: str):
        """Keep the oldest run (then smallest id); delete the others. Returns the keeper."""
        runs = sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))
        for extra in runs[1:]:
            with contextlib.suppress(Exception):  # another process may have deleted it first
                self._client.delete_run(extra.info.run_id)
        if len(runs) > 1:
            warnings.warn(
                f"removed {len(runs) - 1} duplicate MLflow run(s) for {what}", stacklevel=3
            )
        return runs[0]

    def _new_params(self, run_id: str, params: Mapping[str, Any] | None, fresh: bool) -> list:
        """Params new to the run; a changed value keeps the first (MLflow params are
        immutable) and warns. ``fresh``: the run was just created, nothing to compare."""
        if not params:
            return []
        from mlflow.entities import Param

        existing = {} if fresh else self._call("get run", self._client.get_run, run_id).data.params
        new = []
        for key, value in params.items():
            text = _param_value(value)
            if key in existing:
                if existing[key] != text:
                    warnings.warn(
                        f"MLflow param {key!r} of run {run_id} stays {existing[key]!r}; "
                        f"ignored new value {text!r}",
                        stacklevel=4,
                    )
                continue
            new.append(Param(str(key), text))
        return new

    def _log_batch(
        self,
        run_id: str,
        *,
        params: Mapping[str, Any] | None = None,
        metrics: Iterable[tuple[str, float]] = (),
        tags: Mapping[str, Any] | None = None,
        step: int = 0,
        fresh: bool = False,
    ) -> None:
        """Params, metrics and tags in as few requests as MLflow's batch limits allow."""
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        p = self._new_params(run_id, params, fresh)
        m = [Metric(k, v, now, int(step)) for k, v in metrics]
        t = [RunTag(str(k), _param_value(v)) for k, v in (tags or {}).items()]
        while p or m or t:
            chunk_p, p = p[:_BATCH], p[_BATCH:]
            chunk_t, t = t[:_BATCH], t[_BATCH:]
            room = 1000 - len(chunk_p) - len(chunk_t)
            chunk_m, m = m[:room], m[room:]
            self._call(
                "log batch",
                self._client.log_batch,
                run_id,
                metrics=chunk_m,
                params=chunk_p,
                tags=chunk_t,
            )

    # -- studies --------------------------------------------------------------------------

    def find_study(self, study_id: str) -> str | None:
        """The parent run id of ``study_id`` in this experiment, or None."""
        runs = self._search(
            f"tags.`{STUDY_TAG}` = {_quote(study_id)} and tags.`{KIND_TAG}` = 'study'"
        )
        if not runs:
            return None
        return self._dedupe(runs, f"study {study_id}").info.run_id

    def start_study(
        self,
        study_id: str,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        config_text: str | None = None,
        *,
        run_name: str | None = None,
    ) -> str:
        """Create (or find again) the parent run of a study and mark it RUNNING.

        Logs ``params``, ``tags``, the code version (tags ``crdiff.version``,
        ``crdiff.git_commit``, ``mlflow.source.git.commit``) and ``config_text`` as the artifact
        ``experiment.toml``. Calling it again for the same ``study_id`` returns the same run
        (counting resumes in the tag ``crdiff.resumes``) and logs only params it lacked.
        """
        if not study_id or not str(study_id).strip():
            raise UsageError("study_id must be a non-empty string")
        study_id = str(study_id)
        run_id = self.find_study(study_id)
        version = code_info()
        base_tags = {
            STUDY_TAG: study_id,
            KIND_TAG: "study",
            "crdiff.version": version["version"],
        }
        if "git_commit" in version:
            base_tags["crdiff.git_commit"] = version["git_commit"]
            base_tags["crdiff.git_dirty"] = version["git_dirty"]
            base_tags["mlflow.source.git.commit"] = version["git_commit"]
        if run_id is None:
            run = self._call(
                "create study run",
                self._client.create_run,
                self.experiment_id,
                tags=base_tags,
                run_name=run_name or study_id,
            )
            run_id = self.find_study(study_id) or run.info.run_id
            if run_id != run.info.run_id:  # lost a creation race; ours was deleted
                self._call("update run", self._client.update_run, run_id, status="RUNNING")
        else:
            current = self._call("get run", self._client.get_run, run_id)
            resumes = int(current.data.tags.get("crdiff.resumes", "0")) + 1
            base_tags["crdiff.resumes"] = str(resumes)
            self._call("update run", self._client.update_run, run_id, status="RUNNING")
        self._log_batch(run_id, params=params, tags={**base_tags, **dict(tags or {})})
        if config_text is not None:
            self._call(
                "log experiment file", self._client.log_text, run_id, config_text, CONFIG_ARTIFACT
            )
        return run_id

    def finish_study(self, parent_run_id: str, status: str = "FINISHED") -> None:
        """Mark the study run ended: FINISHED (or COMPLETE), FAILED or KILLED."""
        self._call(
            "end study run",
            self._client.set_terminated,
            parent_run_id,
            _status(status, STUDY_STATES),
        )

    def log_study_metrics(
        self, parent_run_id: str, metrics: Mapping[str, Any], *, step: int = 0
    ) -> None:
        """Log metrics on the study run (e.g. ``best_score``, ``n_trials``)."""
        self._log_batch(parent_run_id, metrics=_metric_items(metrics), step=step)

    def log_dense_baseline(
        self,
        parent_run_id: str,
        metrics: Mapping[str, Any],
        images: Sequence[Any] | None = None,
        captions: Sequence[str] | None = None,
    ) -> None:
        """Record the dense model's metrics on the study run as ``dense.<name>`` and its images
        as ``images/dense.png``."""
        items = [(f"dense.{k}", v) for k, v in _metric_items(metrics)]
        self._log_batch(parent_run_id, metrics=items)
        if images:
            self.log_images(parent_run_id, "dense", images, captions, title="dense baseline")

    def log_best(
        self,
        parent_run_id: str,
        trial_id: str,
        score: float,
        ratios: Mapping[str, float] | None = None,
        images: Sequence[Any] | None = None,
        captions: Sequence[str] | None = None,
        *,
        rank: int = 1,
    ) -> None:
        """Record a best trial on the study run: tags ``crdiff.best<rank>.*``, metric
        ``best<rank>.score``, and its images as ``images/best<rank>.png`` (also on the trial's
        own run when it exists)."""
        prefix = f"best{int(rank)}"
        tags = {f"crdiff.{prefix}.trial_id": trial_id}
        if ratios:
            tags[f"crdiff.{prefix}.ratios"] = dict(ratios)
        self._log_batch(parent_run_id, metrics=[(f"{prefix}.score", float(score))], tags=tags)
        child = self.find_trial(parent_run_id, trial_id)
        if images:
            label = ", ".join(f"{g}={r:.2f}" for g, r in (ratios or {}).items())
            title = f"{prefix}: trial {trial_id} score {float(score):.4g} {label}".strip()
            self.log_images(parent_run_id, prefix, images, captions, title=title)
            if child is not None:
                self.log_images(child, "samples", images, captions, title=title)
        elif child is not None:
            self._copy_samples(child, parent_run_id, f"images/{prefix}.png")

    def _copy_samples(self, child: str, parent: str, artifact: str) -> bool:
        """Copy the trial run's ``images/samples.png`` (if any) to ``artifact`` of ``parent``."""
        import shutil
        import tempfile

        names = {
            a.path
            for a in self._call("list artifacts", self._client.list_artifacts, child, "images")
        }
        if "images/samples.png" not in names:
            return False
        with tempfile.TemporaryDirectory(prefix="crdiff-mlflow-") as tmp:
            local = self._call(
                "download artifact",
                self._client.download_artifacts,
                child,
                "images/samples.png",
                tmp,
            )
            target = Path(tmp) / Path(artifact).name
            shutil.copyfile(local, target)
            parent_dir = str(Path(artifact).parent)
            self._call("log artifact", self._client.log_artifact, parent, str(target), parent_dir)
        return True

    # -- trials ---------------------------------------------------------------------------

    def _trial_keepers(self, parent_run_id: str) -> dict[str, Any]:
        """``{trial_id: run}`` under the study run, duplicates collapsed to the oldest."""
        runs = self._search(
            f"tags.`{PARENT_TAG}` = {_quote(parent_run_id)} and tags.`{KIND_TAG}` = 'trial'"
        )
        by_trial: dict[str, list] = {}
        for run in runs:
            by_trial.setdefault(run.data.tags.get(TRIAL_TAG, ""), []).append(run)
        return {tid: self._dedupe(group, f"trial {tid}") for tid, group in by_trial.items()}

    def trial_runs(self, parent_run_id: str) -> dict[str, str]:
        """``{trial_id: run_id}`` for every trial run under the study run."""
        keepers = self._trial_keepers(parent_run_id)
        found = {tid: run.info.run_id for tid, run in keepers.items()}
        self._children[parent_run_id] = found  # log_trial's cache, kept current
        self._statuses[parent_run_id] = {tid: run.info.status for tid, run in keepers.items()}
        return dict(found)

    def finished_trial_results(self, parent_run_id: str) -> dict[str, dict[str, dict]]:
        """``{trial_id: {"params", "metrics"}}`` of the trial runs that finished complete
        under the study run (what a resumed study can replay instead of running again)."""
        out = {}
        for tid, run in self._trial_keepers(parent_run_id).items():
            if run.info.status == "FINISHED" and run.data.tags.get("crdiff.state") == "COMPLETE":
                out[tid] = {"params": dict(run.data.params), "metrics": dict(run.data.metrics)}
        return out

    def trial_statuses(self, parent_run_id: str) -> dict[str, str]:
        """``{trial_id: MLflow run status}`` (FINISHED, FAILED, KILLED, RUNNING) under the
        study run, read afresh."""
        self.trial_runs(parent_run_id)
        return dict(self._statuses[parent_run_id])

    def find_trial(self, parent_run_id: str, trial_id: str) -> str | None:
        """The run id of ``trial_id`` under the study run, or None."""
        runs = self._search(
            f"tags.`{PARENT_TAG}` = {_quote(parent_run_id)} and "
            f"tags.`{TRIAL_TAG}` = {_quote(trial_id)} and tags.`{KIND_TAG}` = 'trial'"
        )
        if not runs:
            return None
        return self._dedupe(runs, f"trial {trial_id}").info.run_id

    def log_trial(
        self,
        parent_run_id: str,
        trial_id: str,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        timings: Mapping[str, Any] | None = None,
        images: Sequence[Any] | None = None,
        *,
        captions: Sequence[str] | None = None,
        state: str = "COMPLETE",
        error: str | None = None,
        step: int = 0,
        tags: Mapping[str, Any] | None = None,
        run_name: str | None = None,
        index: int | None = None,
    ) -> str:
        """Create or update the child run of ``trial_id`` under the study run.

        ``params`` (e.g. the ratios), ``metrics`` (score, score_delta, sparsity, ...) and
        ``timings`` (seconds; logged as metrics ``t_<name>``) are recorded; ``images`` become
        ``images/samples.png``. ``state`` (COMPLETE, FAILED, PRUNED or RUNNING) sets the run
        status; ``error`` is kept as the tag ``crdiff.error``. ``index`` (the trial's 0-based
        index; ignored when negative) names a new run ``trial-0003``, as the terminal does, and
        is kept as the tag ``crdiff.trial_index``. Logging the same trial again updates that
        run: it never creates a second one.
        """
        trial_id = str(trial_id)
        named = index is not None and index >= 0
        if named:
            run_name = run_name or records.trial_run_name(index)
        run_status = _status(state, TRIAL_STATES)
        if parent_run_id not in self._children:
            self.trial_runs(parent_run_id)
        known = self._children[parent_run_id]
        # Not in the listing: create it, then look again. A run another process made since
        # the listing shows up in that second look, and the older of the two is kept.
        run_id = known.get(trial_id)
        fresh = False
        if run_id is None:
            if parent_run_id not in self._study_of:
                tags_of_parent = self._call(
                    "get run", self._client.get_run, parent_run_id
                ).data.tags
                self._study_of[parent_run_id] = tags_of_parent.get(STUDY_TAG, "")
            new_tags = {
                PARENT_TAG: parent_run_id,
                KIND_TAG: "trial",
                TRIAL_TAG: trial_id,
                STUDY_TAG: self._study_of[parent_run_id],
            }
            run = self._call(
                "create trial run",
                self._client.create_run,
                self.experiment_id,
                tags=new_tags,
                run_name=run_name or f"trial-{trial_id}",
            )
            run_id = self.find_trial(parent_run_id, trial_id) or run.info.run_id
            fresh = run_id == run.info.run_id
        known[trial_id] = run_id
        extra_tags = {"crdiff.state": str(state).upper(), **dict(tags or {})}
        if named:
            extra_tags[TRIAL_INDEX_TAG] = int(index)
        if error:
            extra_tags["crdiff.error"] = str(error)
        items = list(_metric_items(metrics))
        items += [(_timing_key(k), v) for k, v in _metric_items(timings)]
        self._log_batch(
            run_id, params=params, metrics=items, tags=extra_tags, step=step, fresh=fresh
        )
        if images:
            self.log_images(run_id, "samples", images, captions, title=f"trial {trial_id}")
        if run_status == "RUNNING":
            self._call("update run", self._client.update_run, run_id, status="RUNNING")
        else:
            self._call("end trial run", self._client.set_terminated, run_id, run_status)
        return run_id

    # -- background logging ---------------------------------------------------------------

    def log_trial_async(self, *args, **kwargs):
        """:meth:`log_trial` on a background thread (one, so calls keep their order); returns
        a ``concurrent.futures.Future`` of the run id. A trial worker can start its next trial
        while MLflow writes; call :meth:`flush` before the process ends (pending writes also
        drain at a normal interpreter exit)."""
        return self.submit(self.log_trial, *args, **kwargs)

    def submit(self, fn, *args, **kwargs):
        """Run ``fn(*args, **kwargs)`` (normally one of this tracker's methods) on the
        tracker's background thread, after every write submitted before it; returns its
        ``Future``. A failure is logged as a warning when it happens and returned by
        :meth:`flush`."""
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crdiff-mlflow")
        future = self._executor.submit(fn, *args, **kwargs)
        what = getattr(fn, "__name__", "write")
        future.add_done_callback(lambda f, what=what: self._note_failure(f, what))
        self._pending = [f for f in self._pending if not f.done()] + [future]
        return future

    def _note_failure(self, future, what: str) -> None:
        if not future.cancelled() and future.exception() is not None:
            self.failures += 1
            self.last_failure = f"{type(future.exception()).__name__}: {future.exception()}"
        _warn_failed(future, what)

    def flush(self, timeout: float | None = None) -> list[BaseException]:
        """Wait for background writes; returns their errors (empty when all succeeded)."""
        from concurrent.futures import wait

        pending, self._pending = self._pending, []
        done, not_done = wait(pending, timeout=timeout)
        errors = [f.exception() for f in done if f.exception() is not None]
        if not_done:
            errors.append(TimeoutError(f"{len(not_done)} MLflow writes still pending"))
            self._pending = list(not_done)
        return errors

    # -- re-ranks --------------------------------------------------------------------------

    def log_rerank(
        self,
        study_id: str,
        key: str,
        *,
        name: str,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        texts: Mapping[str, str] | None = None,
        dicts: Mapping[str, Any] | None = None,
        images: Mapping[str, Any] | None = None,
    ) -> str:
        """The re-rank run of ``study_id`` (a child of its study run when there is one) for the
        re-rank settings ``key``: created once, updated in place when the same re-rank is
        logged again (a retry, a second ``crdiff rerank``), with retries on a locked store."""
        parent = self.find_study(study_id)
        found = self._search(
            f"tags.`{STUDY_TAG}` = {_quote(study_id)} and tags.`{KIND_TAG}` = 'rerank' "
            f"and tags.`crdiff.rerank_key` = {_quote(key)}"
        )
        all_tags = {STUDY_TAG: study_id, KIND_TAG: "rerank", "crdiff.rerank_key": key}
        if parent:
            all_tags[PARENT_TAG] = parent
        all_tags.update(tags or {})
        fresh = not found
        if found:
            run_id = self._dedupe(found, f"re-rank {key} of {study_id}").info.run_id
        else:
            run = self._call(
                "create re-rank run",
                self._client.create_run,
                self.experiment_id,
                run_name=name,
                tags={k: _param_value(v) for k, v in all_tags.items()},
            )
            run_id = run.info.run_id
        self._log_batch(
            run_id, params=params, metrics=_metric_items(metrics), tags=all_tags, fresh=fresh
        )
        for artifact, text in (texts or {}).items():
            self._call("log text", self._client.log_text, run_id, text, artifact)
        for artifact, data in (dicts or {}).items():
            self._call("log dict", self._client.log_dict, run_id, data, artifact)
        for artifact, image in (images or {}).items():
            self._call("log image", self._client.log_image, run_id, image, artifact_file=artifact)
        self._call("end re-rank run", self._client.set_terminated, run_id, "FINISHED")
        return run_id

    def log_file(self, run_id: str, path: str | os.PathLike, artifact_path: str | None = None):
        """Upload a local file as an artifact of ``run_id`` (e.g. the study's trial table)."""
        self._call("log artifact", self._client.log_artifact, run_id, str(path), artifact_path)

    # -- images ---------------------------------------------------------------------------

    def log_images(
        self,
        run_id: str,
        name: str,
        images: Sequence[Any],
        captions: Sequence[str] | None = None,
        *,
        title: str | None = None,
    ) -> str:
        """Log ``images`` as one captioned PNG grid at ``images/<name>.png``; returns that path."""
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("_") or "images"
        artifact = f"images/{safe}.png"
        grid = image_grid(images, captions, title=title)
        self._call("log image", self._client.log_image, run_id, grid, artifact_file=artifact)
        return artifact


def _warn_failed(future, what: str) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("MLflow %s failed in the background: %s", what, future.exception())


def _status(state: str, table: Mapping[str, str]) -> str:
    key = str(state).upper()
    if key not in table:
        raise UsageError(f"unknown run state {state!r}; valid: {', '.join(table)}")
    return table[key]
