"""A study folder and every file name in it, owned here (``crdiff search --out DIR``).

>>> folder = StudyFolder("runs/testbed")
>>> folder.table.name, folder.rerank_json.name
('trials.parquet', 'rerank.json')

Every path is relative to the folder, so a folder can be moved or copied as a whole.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TABLE_FILE = "trials.parquet"  # one row per trial, kept current while the study runs
CONFIG_FILE = "experiment.toml"  # the resolved experiment the study started with
STUDY_FILE = "study.json"  # the study id
RESULTS_FOLDER = "ray"  # Ray Tune's own results: ray/<study>
RERANK_TABLE = "rerank.parquet"  # the held-out re-ranking, ranked
RERANK_CSV = "rerank.csv"
RERANK_FILE = "rerank.json"  # winner, verdict, held-out set
RERANK_GRID = "rerank_compare.png"  # dense | pruned | POA for the winner
RERANK_IMAGES = "rerank_images.parquet"  # one row per (row, prompt): the paired scores


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
    def rerank_json(self) -> Path:
        return self.path / RERANK_FILE

    @property
    def rerank_table(self) -> Path:
        return self.path / RERANK_TABLE
