"""What the terminal shows while long work runs: one place for every command.

Three forms, chosen once per process by :func:`configure` (the CLI calls it from its
``--quiet`` / ``--verbose`` flags):

- ``live``: stderr is a terminal. A study shows one bar (done / budget, elapsed, ETA, best so
  far and its gain over the dense model) with the running trials and their ratios under it,
  redrawn in place (``rich``); each finished trial leaves one short line above it.
- ``plain``: stderr is a file or a pipe (CI, logs): the same facts as one line per event,
  never wider than :data:`PLAIN_WIDTH` columns.
- ``quiet``: nothing.

Other libraries' INFO lines (Ray, Tune, MLflow, alembic, diffusers' loading bars) stay hidden
unless ``verbose``.

>>> configure(mode="plain")
>>> bar = StudyProgress("testbed 24x24", budget=4, groups=["down", "mid", "up"])
>>> bar.finished({"trial_index": 0, "state": "COMPLETE", "score": 0.51, "score_delta": 0.0,
...               "ratio.down": 0.0, "ratio.mid": 0.0, "ratio.up": 0.0})   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TextIO

Mode = Literal["auto", "live", "plain", "quiet"]
MODES = ("auto", "live", "plain", "quiet")
PLAIN_WIDTH = 100
QUIET_LOGGERS = (
    "ray",
    "ray.tune",
    "ray.train",
    "ray.data",
    "mlflow",
    "alembic",
    "urllib3",
    "filelock",
    "diffusers",
    "transformers",
    "huggingface_hub",
)

_state: dict[str, Any] = {"mode": "auto", "verbose": False}


def configure(*, mode: Mode = "auto", verbose: bool = False) -> None:
    """Set the form of every progress display in this process (``auto``: live on a
    terminal, plain otherwise) and hide other libraries' INFO lines unless ``verbose``."""
    if mode not in MODES:
        raise ValueError(f"progress mode must be one of {', '.join(MODES)}, got {mode!r}")
    _state["mode"] = mode
    _state["verbose"] = bool(verbose)
    quiet_libraries(not verbose)


def verbose() -> bool:
    return bool(_state["verbose"])


def resolve_mode(mode: Mode | bool | None = None, stream: TextIO | None = None) -> str:
    """``live``, ``plain`` or ``quiet``. ``mode`` False means quiet, True or None the
    configured form; ``auto`` decides by whether ``stream`` (stderr) is a terminal."""
    if mode is False:
        return "quiet"
    if mode is None or mode is True:
        mode = _state["mode"]
    if mode == "auto":
        stream = stream or sys.stderr
        term = os.environ.get("TERM", "")
        is_tty = bool(getattr(stream, "isatty", lambda: False)())
        return "live" if is_tty and term not in ("", "dumb") else "plain"
    return str(mode)


def quiet_libraries(quiet: bool = True) -> None:
    """Hide (or show again) the INFO chatter of Ray, Tune, MLflow and the model libraries.
    Errors and warnings still print."""
    level = logging.WARNING if quiet else logging.INFO
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(level)
    # Ray's own loggers are configured when ray.init runs; this reaches them there.
    os.environ["RAY_LOGGING_LEVEL"] = "warning" if quiet else "info"
    if quiet:
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    try:  # only when the library is already imported: importing it here would cost seconds
        if "diffusers" in sys.modules:
            from diffusers.utils import logging as dlog

            (dlog.disable_progress_bar if quiet else dlog.enable_progress_bar)()
            dlog.set_verbosity(level)
        if "transformers" in sys.modules:
            from transformers.utils import logging as tlog

            tlog.set_verbosity(level)
    except Exception:  # a logging setting must never stop a command
        pass


def model_libraries_quiet() -> None:
    """Call after importing diffusers: its loading bars follow the configured verbosity."""
    quiet_libraries(not verbose())


# ---- formatting
def duration(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``1h02m``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _num(x: Any, sign: bool = False) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "n/a"
    if not math.isfinite(v):
        return "n/a"
    return f"{v:+.4f}" if sign else f"{v:.4f}"


def compact_ratios(ratios: Mapping[str, float], width: int = 48) -> str:
    """Every ``group=ratio`` when it fits in ``width`` characters, else the count, the mean
    and the largest few: ``24 groups, mean 0.31; up.2=0.90 down.1=0.85 +22``."""
    if not ratios:
        return "dense"
    full = " ".join(f"{g}={float(r):.2f}" for g, r in ratios.items())
    if len(full) <= width:
        return full
    values = [float(r) for r in ratios.values()]
    head = f"{len(values)} groups, mean {sum(values) / len(values):.2f};"
    top = sorted(ratios.items(), key=lambda kv: -float(kv[1]))
    shown: list[str] = []
    for g, r in top:
        item = f"{g}={float(r):.2f}"
        rest = len(top) - len(shown) - 1
        if len(" ".join([head, *shown, item, f"+{rest}"])) > width and shown:
            break
        shown.append(item)
    more = len(top) - len(shown)
    return " ".join([head, *shown] + ([f"+{more}"] if more else []))


def ratios_of_row(row: Mapping[str, Any], groups: Sequence[str]) -> dict[str, float]:
    out = {}
    for g in groups:
        v = row.get(f"ratio.{g}")
        try:
            out[g] = float(v)
        except (TypeError, ValueError):
            out[g] = float("nan")
    return out


# ---- one line, one event
class Reporter:
    """Phase and event lines for a command, in the configured form (live and plain print
    lines alike; only :class:`StudyProgress` redraws in place)."""

    def __init__(self, name: str, *, mode: Mode | bool | None = None, stream=None):
        self.name = name
        self.stream = stream or sys.stderr
        self.mode = resolve_mode(mode, self.stream)
        self.t0 = time.monotonic()

    @property
    def enabled(self) -> bool:
        return self.mode != "quiet"

    def phase(self, text: str) -> None:
        """A start-up step (``starting Ray``, ``loading the model``): says what the silence
        that follows is."""
        self.line(f"{text} ...")

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        text = f"{self.name}: {text}" if self.name else text
        if self.mode == "plain" and len(text) > PLAIN_WIDTH:
            text = text[: PLAIN_WIDTH - 3] + "..."
        print(text, file=self.stream, flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0


# ---- a study
class StudyProgress:
    """The live bar of one study: done / budget, elapsed, ETA, best so far and its delta,
    the running trials. ``started`` and ``finished`` take trial-table rows."""

    def __init__(
        self,
        title: str,
        *,
        budget: int,
        groups: Sequence[str],
        mode: Mode | bool | None = None,
        stream: TextIO | None = None,
        maximize: bool = True,
        done: int = 0,
    ):
        self.title = title
        self.budget = int(budget)
        self.groups = list(groups)
        self.stream = stream or sys.stderr
        self.mode = resolve_mode(mode, self.stream)
        self.maximize = maximize
        self.t0 = time.monotonic()
        self.done = int(done)  # replayed from an earlier run of the driver
        self.done_here = 0
        self.running: dict[int, tuple[float, dict[str, float]]] = {}
        self.best: dict[str, Any] | None = None
        self.dense: float | None = None
        self._live = None
        self._console = None
        self._phase: str | None = None

    # -- events
    def phase(self, text: str) -> None:
        if self.mode == "quiet":
            return
        if self.mode == "live":
            self._ensure_live()
            self._phase = text
            self._refresh()
        else:
            self._print(f"{self.title}: {text} ...")

    def started(self, row: Mapping[str, Any]) -> None:
        index = int(row.get("trial_index") or 0)
        self.running[index] = (time.monotonic(), ratios_of_row(row, self.groups))
        self._phase = None
        if self.mode == "live":
            self._ensure_live()
            self._refresh()

    def finished(self, row: Mapping[str, Any], *, replayed: bool = False) -> None:
        """A trial ended (``replayed``: one an earlier run of the driver finished; counted,
        not printed)."""
        index = int(row.get("trial_index") or 0)
        started = self.running.pop(index, (None, {}))[0]
        self.done += 1
        if not replayed:
            self.done_here += 1
        state = str(row.get("state") or "").upper()
        score = row.get("score")
        if index == 0 and state == "COMPLETE" and _finite(score):
            self.dense = float(score)
        new_best = state == "COMPLETE" and _finite(score) and self._better(float(score))
        if new_best:
            self.best = dict(row)
        if self.mode == "quiet" or replayed:
            return
        took = duration(time.monotonic() - started) if started else ""
        if self.mode == "live":
            if state == "FAILED":
                what = f"[red]FAILED[/red] {row.get('error') or 'unknown error'}"
            else:
                what = (
                    f"{'' if state == 'COMPLETE' else state.lower() + ' '}{_num(score)} "
                    f"({_num(row.get('score_delta'), sign=True)})"
                    f"{'  (dense)' if index == 0 else '  [green]new best[/green]' if new_best else ''}"
                )
            ratios = compact_ratios(ratios_of_row(row, self.groups), 40)
            self._ensure_live()
            self._console.print(
                f"trial {index:>3} {what}  [dim]{ratios}  {took}[/dim]", highlight=False
            )
            self._refresh()
        else:
            self._print(self.plain_line(row, new_best))

    def _better(self, score: float) -> bool:
        if self.best is None:
            return True
        best = float(self.best["score"])
        return score > best if self.maximize else score < best

    def close(self) -> None:
        if self._live is not None:
            self._refresh()
            self._live.stop()
            self._live = None

    # -- the pieces
    def eta(self) -> float | None:
        left = self.budget - self.done
        if left <= 0:
            return 0.0
        if not self.done_here:
            return None
        return (time.monotonic() - self.t0) / self.done_here * left

    def _clock(self) -> str:
        return f"{duration(time.monotonic() - self.t0)} ETA {duration(self.eta())}"

    def best_text(self, width: int = 48) -> str:
        if self.best is None:
            return "best: none yet"
        ratios = compact_ratios(ratios_of_row(self.best, self.groups), width)
        delta = self.best.get("score_delta")
        return (
            f"best {_num(self.best.get('score'))} ({_num(delta, sign=True)} vs dense) "
            f"trial {self.best.get('trial_index')}: {ratios}"
        )

    def plain_line(self, row: Mapping[str, Any], new_best: bool = False) -> str:
        """``[done/budget elapsed ETA] trial i: score (delta) | best #j delta ratios`` (the
        deltas against the dense model), at most :data:`PLAIN_WIDTH` columns (the ratios shortened, then dropped)."""
        state = str(row.get("state") or "").upper()
        head = f"[{self.done}/{self.budget} {self._clock()}] trial {row.get('trial_index')}"
        if state == "FAILED":
            return f"{head} FAILED: {row.get('error') or 'unknown error'}"[:PLAIN_WIDTH]
        head += f": {'' if state == 'COMPLETE' else state.lower() + ' '}{_num(row.get('score'))}"
        head += f" ({_num(row.get('score_delta'), sign=True)})"
        if self.best is None:
            return head[:PLAIN_WIDTH]
        best = (
            "new best"
            if new_best
            else f"best #{self.best.get('trial_index')} "
            f"{_num(self.best.get('score_delta'), sign=True)}"
        )
        line = f"{head} | {best}"
        room = PLAIN_WIDTH - len(line) - 1
        ratios = compact_ratios(ratios_of_row(self.best, self.groups), room) if room > 12 else ""
        return (f"{line} {ratios}" if ratios and len(ratios) <= room else line)[:PLAIN_WIDTH]

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def _ensure_live(self) -> None:
        if self._live is not None:
            return
        from rich.console import Console
        from rich.live import Live

        self._console = Console(file=self.stream, highlight=False)
        self._live = Live(
            get_renderable=self._render,
            console=self._console,
            refresh_per_second=2,
            transient=True,
        )
        self._live.start()

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.refresh()

    def _render(self):
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        head = Table.grid(padding=(0, 1))
        head.add_row(
            Text(self.title, style="bold"),
            ProgressBar(total=max(1, self.budget), completed=self.done, width=30),
            Text(f"{self.done}/{self.budget}  {self._clock()}"),
        )
        lines = [head, Text(f"  {self.best_text()}", style="green", no_wrap=True)]
        if self._phase:
            lines.append(Text(f"  {self._phase} ...", style="yellow", no_wrap=True))
        now = time.monotonic()
        shown = sorted(self.running.items())[:8]
        for index, (t, ratios) in shown:
            lines.append(
                Text(
                    f"  running trial {index}: {compact_ratios(ratios, 56)}  {duration(now - t)}",
                    style="cyan",
                    no_wrap=True,
                )
            )
        if len(self.running) > len(shown):
            lines.append(Text(f"  ... and {len(self.running) - len(shown)} more running"))
        return Group(*lines)

    def __getstate__(self):  # carried inside Tune's callbacks: the display stays behind
        state = dict(self.__dict__)
        state["_live"] = None
        state["_console"] = None
        state["stream"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.stream = sys.stderr


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False
