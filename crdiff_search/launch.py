"""Launching a grid: one Ray job per (model, resolution) study on a Ray cluster (``crdiff launch``).

A grid file (TOML) lists studies, each an experiment file plus overrides::

    version = 1
    out = "runs"                  # study outputs go to <out>/<study> (relative: working folder)
    command = "crdiff"            # how a job calls the CLI on the cluster; "{python}" stands
                                  # for the launching interpreter (a local head on this machine:
                                  # command = "{python} -m crdiff_search")
    tracking_uri = ""             # optional: every study logs to this MLflow URI (default: the
                                  # experiment's, else sqlite:///<out>/mlflow.db)
    [env]                         # optional environment variables for every job
    HF_HUB_OFFLINE = "1"
    [defaults]                    # optional overrides applied to every study
    trials = 32

    [[study]]
    experiment = "sd15.toml"      # relative to the grid file
    resolution = "768x768"        # any other key overrides the experiment (short names such as
    name = "sd15-768"             # trials, sampler, seed, or dotted paths such as "model.steps")

Every study is loaded and validated (``load_experiment``) before Ray is contacted; its fully
resolved experiment is written to ``<out>/_launch/<study>.toml`` and the job runs
``<command> search <that file> --out <out>/<study> --address auto``. The submission id is
``crdiff-<study>-<hash of the resolved experiment>``, so launching the same grid again finds
its jobs: SUCCEEDED ones (and studies whose ``trials.parquet`` already holds the whole budget)
are skipped, running ones are followed, failed or stopped ones are submitted again (id
suffix ``-r2``, ``-r3``, ...) with ``--resume`` when the earlier attempt left a study to resume.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crdiff_search import records
from crdiff_search.errors import UsageError
from crdiff_search.study_folder import StudyFolder

GRID_VERSION = 1
GRID_KEYS = ("version", "out", "command", "tracking_uri", "env", "defaults", "study")
STUDY_KEYS_RESERVED = ("experiment", "name")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
LAUNCH_DIR = "_launch"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# ---------------------------------------------------------------------------------- grid file


@dataclass(frozen=True)
class GridStudy:
    """One entry of a grid: an experiment file, an optional name and overrides."""

    experiment: Path
    name: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Grid:
    """A validated grid file."""

    path: Path
    out: Path
    studies: tuple[GridStudy, ...]
    command: str = "crdiff"
    tracking_uri: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    version: int = GRID_VERSION


def _grid_error(path: Path, message: str) -> UsageError:
    return UsageError(f"grid {str(path)!r}: {message}")


def _check_overrides(path: Path, where: str, table: Any) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise _grid_error(path, f"{where} must be a table, got {type(table).__name__}")
    for key, value in table.items():
        if isinstance(value, dict):
            raise _grid_error(
                path, f"{where}.{key}: nested tables are not overrides; use a dotted key "
                f'such as "{key}.<field>" = ...'
            )  # fmt: skip
    return dict(table)


def load_grid(path: str | os.PathLike, *, cwd: str | os.PathLike | None = None) -> Grid:
    """Read and validate a grid file (structure only; studies are checked by :func:`plan_grid`).

    Experiment paths are relative to the grid file; ``out`` (default ``runs``) is relative to
    ``cwd`` (the working folder), like the output of ``crdiff search``.
    """
    from crdiff_search.config import read_toml

    path = Path(path)
    data = read_toml(path, "grid file")
    unknown = sorted(set(data) - set(GRID_KEYS))
    if unknown:
        raise _grid_error(path, f"unknown key(s) {unknown}; valid: {', '.join(GRID_KEYS)}")
    version = data.get("version", GRID_VERSION)
    if isinstance(version, bool) or version != GRID_VERSION:
        raise _grid_error(path, f"version = {version!r}; valid: {GRID_VERSION}")
    out = data.get("out", "runs")
    command = data.get("command", "crdiff")
    tracking_uri = data.get("tracking_uri", "")
    for key, value in (("out", out), ("command", command), ("tracking_uri", tracking_uri)):
        if not isinstance(value, str):
            raise _grid_error(path, f"{key} must be a string, got {type(value).__name__}")
    if not out.strip() or not command.strip():
        raise _grid_error(path, "out and command must not be empty")
    env = data.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise _grid_error(path, 'env must be a table of strings, e.g. [env] HF_HOME = "/data/hf"')
    defaults = _check_overrides(path, "defaults", data.get("defaults", {}))
    entries = data.get("study")
    if not isinstance(entries, list) or not entries:
        raise _grid_error(path, 'needs at least one [[study]] table with experiment = "FILE"')
    base = path.resolve().parent
    studies = []
    for i, entry in enumerate(entries):
        where = f"study #{i + 1}"
        overrides = _check_overrides(path, where, entry)
        experiment = overrides.pop("experiment", None)
        if not isinstance(experiment, str) or not experiment.strip():
            raise _grid_error(path, f'{where} needs experiment = "FILE.toml" (a string)')
        exp_path = (base / experiment).resolve()
        if not exp_path.is_file():
            raise _grid_error(path, f"{where}: experiment file {str(exp_path)!r} does not exist")
        name = overrides.pop("name", None)
        if name is not None and (not isinstance(name, str) or not _NAME.match(name)):
            raise _grid_error(
                path, f"{where}: name {name!r} is not valid; use letters, digits, '.', '_', '-'"
            )
        studies.append(GridStudy(exp_path, name, overrides))
    return Grid(
        path=path.resolve(),
        out=(Path(cwd or os.getcwd()) / out).resolve(),
        studies=tuple(studies),
        command=command.strip(),
        tracking_uri=tracking_uri,
        env=dict(env),
        defaults=defaults,
        version=version,
    )


# ------------------------------------------------------------------------------------ planning


@dataclass(frozen=True)
class StudyPlan:
    """A study ready to submit: its resolved experiment and where its results go."""

    name: str
    resolution: str
    model: str
    trials: int  # the most trials the study runs (runner.study.study_budget)
    experiment: Path  # the grid entry's experiment file
    study_file: Path  # the resolved experiment written for the job
    study_toml: str
    out_dir: Path
    submission_id: str
    entrypoint: str
    mode: str = "max"  # objective.mode: which end of the scores is best

    def trials_done(self) -> int:
        """Trials in a terminal state in ``out_dir/trials.parquet`` (0 when absent)."""
        table = StudyFolder(self.out_dir).table
        if not table.is_file():
            return 0
        try:
            import pyarrow.parquet as pq

            states = pq.read_table(table, columns=["state"]).column("state").to_pylist()
        except Exception:
            return 0
        return sum(1 for s in states if str(s).upper() in records.DONE_STATES)

    def table_complete(self) -> bool:
        """The budget is used up, or the sampler ended the search (``sampler_stopped.json``)."""
        return StudyFolder(self.out_dir).stop_file.is_file() or self.trials_done() >= self.trials

    def has_state(self) -> bool:
        """Whether an earlier attempt left a study to resume (``crdiff search --resume``
        needs the stored experiment and Ray's results folder of the study)."""
        folder = StudyFolder(self.out_dir)
        return folder.config.is_file() and folder.results(self.name).is_dir()

    def best(self) -> tuple[float, int] | None:
        """(best score, completed trials) from ``trials.parquet``, or None."""
        table = StudyFolder(self.out_dir).table
        if not table.is_file():
            return None
        try:
            import pandas as pd

            df = pd.read_parquet(table)
        except Exception:
            return None
        ranked = records.ranked_completed(df, self.mode)
        if ranked.empty:
            return None
        return float(ranked["score"].iloc[0]), len(ranked)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "study"


def plan_grid(grid: Grid) -> list[StudyPlan]:
    """Load and validate every study of the grid (no Ray involved) and derive its job."""
    from crdiff_search.config import check_heldout, load_experiment
    from crdiff_search.model_info import check_class_labels, model_info
    from crdiff_search.runner.study import build_sampler, study_budget

    plans: list[StudyPlan] = []
    seen: dict[str, int] = {}
    for i, study in enumerate(grid.studies):
        where = f"study #{i + 1} ({study.experiment.name})"
        overrides = {**grid.defaults, **study.overrides}
        try:
            cfg = load_experiment(study.experiment, **overrides)
            name = study.name
            if name is None:
                name = cfg.study
                if "resolution" in overrides:
                    name = f"{cfg.study}-{cfg.width}x{cfg.height}"
            changes: dict[str, Any] = {"study": name}
            if not any(k in overrides for k in ("out", "output")):
                changes["output"] = str(grid.out / name)
            else:
                changes["output"] = str(Path(cfg.output).resolve())
            if not any(k in overrides for k in ("tracking_uri", "tracking.uri")):
                if grid.tracking_uri:
                    changes["tracking.uri"] = grid.tracking_uri
                elif not cfg.tracking.uri:
                    # A job's working folder is Ray's choice: keep the grid's runs in one
                    # SQLite store next to its outputs instead.
                    changes["tracking.uri"] = f"sqlite:///{grid.out / 'mlflow.db'}"
            cfg = cfg.replace(**changes)
            check_heldout(cfg)
            build_sampler(cfg)  # option values, before any job is submitted
            info = model_info(cfg.model.source)
            if info is not None:
                check_class_labels(cfg, info)  # a DiT's prompts are its class names
        except UsageError as exc:
            raise _grid_error(grid.path, f"{where}: {exc}") from None
        if name in seen:
            raise _grid_error(
                grid.path, f"studies #{seen[name] + 1} and #{i + 1} are both named {name!r}; "
                "give one a distinct name = \"...\""
            )  # fmt: skip
        seen[name] = i
        text = cfg.to_toml()
        digest = hashlib.sha256(text.encode()).hexdigest()[:10]
        study_file = grid.out / LAUNCH_DIR / f"{name}.toml"
        out_dir = Path(cfg.output)
        entrypoint = " ".join(
            [
                grid.command.replace("{python}", shlex.quote(sys.executable)),
                "search",
                shlex.quote(str(study_file)),
                "--out",
                shlex.quote(str(out_dir)),
                # join the job's cluster (RAY_ADDRESS) instead of starting a Ray of its own
                "--address",
                "auto",
            ]
        )
        plans.append(
            StudyPlan(
                name=name,
                resolution=f"{cfg.width}x{cfg.height}",
                model=cfg.model.source,
                trials=study_budget(cfg),  # anneal-paper: dense + start + iterations + restarts
                experiment=study.experiment,
                study_file=study_file,
                study_toml=text,
                out_dir=out_dir,
                submission_id=f"crdiff-{_safe(name)}-{digest}",
                entrypoint=entrypoint,
                mode=cfg.objective.mode,
            )
        )
    return plans


# ------------------------------------------------------------------------------------ launching


@dataclass
class JobState:
    plan: StudyPlan
    submission_id: str
    action: str  # submitted | resubmitted | attached | skipped
    status: str  # PENDING | RUNNING | SUCCEEDED | FAILED | STOPPED | DONE (table complete)
    message: str = ""
    seconds: float | None = None  # the job's run time, from Ray's job info
    ended: float | None = None


def connect(address: str | None):
    """A ``JobSubmissionClient`` for ``address`` (None: ``RAY_ADDRESS`` or the local head)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as exc:
        raise RuntimeError(
            f"the Ray Jobs API needs ray[default] installed ({exc})"
        ) from exc  # fmt: skip
    try:
        return JobSubmissionClient(address)
    except Exception as exc:
        shown = address or os.environ.get("RAY_ADDRESS") or "the local Ray cluster"
        raise ConnectionError(
            f"cannot reach the Ray Jobs API at {shown}: {type(exc).__name__}: {exc}. "
            "Start a head with `ray start --head` (dashboard included) or pass "
            "--address http://HEAD:8265"
        ) from exc


def submit_grid(
    client,
    plans: list[StudyPlan],
    *,
    env: Mapping[str, str] | None = None,
    out=None,
) -> list[JobState]:
    """Submit the studies that are not finished; follow the ones already running."""
    out = out or sys.stderr
    jobs = [j for j in client.list_jobs() if j.submission_id]
    states: list[JobState] = []
    for plan in plans:
        attempt, job = latest_attempt(plan.submission_id, jobs)
        status = _status_name(job.status) if job else None
        if status == "SUCCEEDED":
            states.append(
                JobState(
                    plan,
                    job.submission_id,
                    "skipped",
                    "SUCCEEDED",
                    "already succeeded",
                    seconds=_job_seconds(job),
                    ended=0.0,
                )
            )
            continue
        if plan.table_complete():
            message = f"trials.parquet holds {plan.trials} trials"
            states.append(JobState(plan, plan.submission_id, "skipped", "DONE", message, ended=0.0))
            continue
        if status in ("PENDING", "RUNNING"):
            states.append(JobState(plan, job.submission_id, "attached", status))
            continue
        # A failed or stopped study gets a new attempt id: Ray keeps the old job's logs, and a
        # reused id could race with the old job's final status update.
        submission_id = (
            plan.submission_id if job is None else f"{plan.submission_id}-r{attempt + 1}"
        )
        action = "submitted" if job is None else "resubmitted"
        entrypoint = plan.entrypoint + (" --resume" if plan.has_state() else "")
        plan.study_file.parent.mkdir(parents=True, exist_ok=True)
        plan.study_file.write_text(plan.study_toml, encoding="utf-8")
        runtime_env = {"env_vars": dict(env)} if env else None
        client.submit_job(
            entrypoint=entrypoint,
            submission_id=submission_id,
            runtime_env=runtime_env,
            metadata={"crdiff.study": plan.name, "crdiff.resolution": plan.resolution},
        )
        print(f"launch: {action} {submission_id}: {entrypoint}", file=out)
        states.append(JobState(plan, submission_id, action, "PENDING"))
    return states


def _status_name(status) -> str:
    return str(getattr(status, "value", status))


def _job_seconds(info) -> float | None:
    start, end = getattr(info, "start_time", None), getattr(info, "end_time", None)
    return (end - start) / 1000.0 if start and end else None


def latest_attempt(base_id: str, jobs) -> tuple[int, Any]:
    """``(attempt, job)`` of the newest job for a study: ``base_id`` is attempt 1,
    ``base_id-rN`` attempt N; ``(0, None)`` when the study was never submitted."""
    best: tuple[int, Any] = (0, None)
    for job in jobs:
        sid = job.submission_id
        if sid == base_id:
            n = 1
        elif sid.startswith(f"{base_id}-r") and sid[len(base_id) + 2 :].isdigit():
            n = int(sid[len(base_id) + 2 :])
        else:
            continue
        if n > best[0]:
            best = (n, job)
    return best


def _status_line(states: list[JobState], elapsed: float) -> str:
    counts: dict[str, int] = {}
    for s in states:
        counts[s.status] = counts.get(s.status, 0) + 1
    done = sum(1 for s in states if s.status in (*TERMINAL, "DONE"))
    parts = [f"{done}/{len(states)} finished"]
    parts += [f"{k.lower()} {v}" for k, v in sorted(counts.items())]
    running = [
        f"{s.plan.name} {s.plan.trials_done()}/{s.plan.trials}"
        for s in states
        if s.status == "RUNNING"
    ]
    if running:
        parts.append("running: " + ", ".join(running))
    return f"launch: {' · '.join(parts)} · {elapsed:.0f}s"


def wait_for(
    client, states: list[JobState], *, poll_interval: float, out=None, max_errors: int = 5
) -> None:
    """Poll the jobs until all are terminal, with a live status line (rewritten in place on
    a terminal, one line per change otherwise)."""
    out = out or sys.stderr
    live = hasattr(out, "isatty") and out.isatty()
    start = time.monotonic()
    last = ""
    errors = 0
    while True:
        try:
            for s in states:
                if s.status in (*TERMINAL, "DONE"):
                    continue
                s.status = _status_name(client.get_job_status(s.submission_id))
                if s.status in TERMINAL:
                    s.ended = time.monotonic()
                    info = client.get_job_info(s.submission_id)
                    s.seconds = _job_seconds(info)
                    if s.status != "SUCCEEDED":
                        lines = (info.message or "").strip().splitlines()
                        s.message = lines[-1] if lines else ""
            errors = 0
        except Exception as exc:  # the head restarting, a network blip
            errors += 1
            if errors >= max_errors:
                raise ConnectionError(
                    f"lost the Ray Jobs API ({type(exc).__name__}: {exc}); the jobs may still "
                    "run: launch the grid again to follow them"
                ) from exc
        line = _status_line(states, time.monotonic() - start)
        if errors:
            line += f" · Ray unreachable ({errors})"
        if live:
            out.write("\r\033[K" + line)
            out.flush()
        elif line.split(" · ")[:-1] != last.split(" · ")[:-1]:
            print(line, file=out)
        last = line
        if all(s.status in (*TERMINAL, "DONE") for s in states):
            if live:
                out.write("\n")
            return
        time.sleep(poll_interval)


def summary_table(states: list[JobState]) -> str:
    """A plain-text table: study, resolution, action, status, time, best score, output."""
    rows = [("study", "resolution", "job", "action", "status", "time", "best", "output")]
    for s in states:
        took = "-" if s.seconds is None else f"{s.seconds:.0f}s"
        best = s.plan.best()
        rows.append(
            (
                s.plan.name,
                s.plan.resolution,
                s.submission_id,
                s.action,
                s.status,
                took,
                "-" if best is None else f"{best[0]:.4g} ({best[1]} trials)",
                str(s.plan.out_dir),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for s in states:
        if s.status in ("FAILED", "STOPPED"):
            lines.append(f"{s.plan.name}: {s.message or s.status.lower()}")
            lines.append(f"  logs: ray job logs {s.submission_id}")
    return "\n".join(lines)


def launch(
    grid_path: str | os.PathLike,
    *,
    address: str | None = None,
    poll_interval: float = 5.0,
    wait: bool = True,
    dry_run: bool = False,
    out=None,
) -> tuple[list[JobState], int]:
    """Validate the grid, submit its unfinished studies, wait. Returns (states, exit code)."""
    out = out or sys.stderr
    if not (isinstance(poll_interval, int | float) and poll_interval > 0):
        raise UsageError(
            f"--poll-interval must be a positive number of seconds, got {poll_interval!r}"
        )
    if address and address.startswith("ray://"):
        raise UsageError(
            f"--address {address!r} is a Ray Client address; the Jobs API is served by the "
            "dashboard: --address http://HEAD:8265"
        )
    grid = load_grid(grid_path)
    plans = plan_grid(grid)
    if dry_run:
        for plan in plans:
            done = plan.trials_done()
            print(
                f"{plan.submission_id}: {plan.entrypoint}  [{done}/{plan.trials} trials on disk]",
                file=out,
            )
        return [], 0
    client = connect(address)
    states = submit_grid(client, plans, env=grid.env, out=out)
    if wait:
        try:
            wait_for(client, states, poll_interval=poll_interval, out=out)
        except KeyboardInterrupt:
            print(
                "\nlaunch: stopped following; the jobs keep running (launch again to follow)",
                file=out,
            )
            print(summary_table(states), file=out)
            return states, 130
    print(summary_table(states), file=out)
    failed = [s for s in states if s.status in ("FAILED", "STOPPED")]
    return states, 1 if failed else 0
