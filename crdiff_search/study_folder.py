"""A study folder and every file name in it, owned here (``crdiff search --out DIR``).

>>> folder = StudyFolder("runs/testbed")
>>> folder.table.name, folder.rerank_json.name
('trials.parquet', 'rerank.json')

Every path is relative to the folder, so a folder can be moved or copied as a whole.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crdiff_search.errors import UsageError

TABLE_FILE = "trials.parquet"  # one row per trial, kept current while the study runs
CONFIG_FILE = "experiment.toml"  # the resolved experiment the study started with
STUDY_FILE = "study.json"  # the study id
RESULTS_FOLDER = "ray"  # Ray Tune's own results: ray/<study>
RERANK_TABLE = "rerank.parquet"  # the held-out re-ranking, ranked
RERANK_CSV = "rerank.csv"
RERANK_FILE = "rerank.json"  # winner, verdict, held-out set
RERANK_GRID = "rerank_compare.png"  # dense | pruned | POA for the winner
RERANK_IMAGES = "rerank_images.parquet"  # one row per (row, prompt): the paired scores
OPTUNA_DB = "optuna.db"  # the finished trials as an Optuna study, for Optuna's tools
STOP_FILE = "sampler_stopped.json"  # written when the sampler ended the search (its stop rule)
WARM_START_FILE = "warm_start.json"  # the registry points a warm-started study began with


@dataclass(frozen=True)
class StudyFolder:
    """Paths of one study folder's files."""

    path: Path

    def __init__(self, path: str | os.PathLike) -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def table(self) -> Path:
        return self.path / TABLE_FILE

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def study_file(self) -> Path:
        return self.path / STUDY_FILE

    def results(self, study: str) -> Path:
        """Ray Tune's experiment folder of the study named ``study``."""
        return self.path / RESULTS_FOLDER / study

    @property
    def optuna_db(self) -> Path:
        return self.path / OPTUNA_DB

    @property
    def stop_file(self) -> Path:
        return self.path / STOP_FILE

    @property
    def warm_start(self) -> Path:
        return self.path / WARM_START_FILE

    @property
    def rerank_json(self) -> Path:
        return self.path / RERANK_FILE

    @property
    def rerank_table(self) -> Path:
        return self.path / RERANK_TABLE

    # ---- reading, with one clear error per kind of damage
    def read_study(self) -> dict[str, Any]:
        """``study.json``: ``{"study_id", "study", "folder"}`` (``folder``: where it was made)."""
        data = read_json(self.study_file, "study file")
        if not isinstance(data, dict) or not isinstance(data.get("study_id"), str):
            raise UsageError(
                f"study file {str(self.study_file)!r} has no study id: it is not the file "
                "`crdiff search` wrote"
            )
        return data

    def read_config(self):
        """The experiment the study started with (``experiment.toml``), validated; relative
        paths in it are read against this folder."""
        from crdiff_search.config import ExperimentConfig, read_toml
        from crdiff_search.errors import ConfigErrors

        data = read_toml(self.config, "the study's experiment file")
        try:
            return ExperimentConfig.from_dict(data, base_dir=self.path)
        except ConfigErrors as exc:
            raise ConfigErrors([f"{self.config}: {p}" for p in exc.problems]) from None
        except UsageError as exc:
            raise UsageError(f"{self.config}: {exc}") from None

    def read_table(self, columns: list[str] | None = None):
        """``trials.parquet`` as a DataFrame; a truncated or foreign file is a usage error."""
        return read_parquet(self.table, "trial table", columns=columns)


def read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise UsageError(f"{what} {str(path)!r} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what} {str(path)!r} is not UTF-8 text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{what} {str(path)!r} is not valid JSON: {exc}") from None
    except OSError as exc:
        raise UsageError(f"{what} {str(path)!r} cannot be read: {exc.strerror or exc}") from None


def read_parquet(path: Path, what: str, *, columns: list[str] | None = None):
    import pandas as pd

    if not path.is_file():
        raise UsageError(f"{what} {str(path)!r} does not exist")
    try:
        return pd.read_parquet(path, columns=columns)
    except Exception as exc:  # pyarrow's ArrowInvalid, OSError, ...: the file is damaged
        raise UsageError(
            f"{what} {str(path)!r} is damaged or not a Parquet file ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
