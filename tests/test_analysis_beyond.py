"""The beyond-the-paper measurements' bookkeeping (no model): verdicts of the repair-methods
table, and the leave-one-out registry of a map (repaired rows only, the left-out resolution
never used to predict itself)."""

from __future__ import annotations

import pandas as pd
import pytest

from crdiff_search.analysis.interpolation_loo import map_recipes, predictions
from crdiff_search.analysis.repair_methods import format_markdown, verdict


def _row(method, low, high, p, delta=0.01):
    return pd.Series(
        {"resolution": "24x24", "method": method, "score": 0.5, "delta": delta,
         "delta_low": low, "delta_high": high, "p": p, "wins": 1, "ties": 2, "losses": 0}
    )  # fmt: skip


@pytest.mark.parametrize(
    "low, high, p, expected",
    [
        (0.01, 0.05, 0.001, "helps"),
        (-0.05, -0.01, 0.01, "hurts"),
        (0.001, 0.02, 0.2, "suggestive"),
        (-0.01, 0.02, 0.5, "no difference"),
    ],
)
def test_verdicts_need_the_interval_and_the_test(low, high, p, expected):
    assert verdict(_row("entropy", low, high, p)) == expected
    assert verdict(_row("dense", 0, 0, 1)) == ""


def test_markdown_has_a_row_per_method():
    table = pd.DataFrame([_row("dense", 0, 0, 1), _row("entropy", 0.01, 0.05, 0.001)])
    text = format_markdown(table)
    assert "| 24x24 | entropy | 0.500 | +0.010 [+0.010, +0.050] | 0.001 | 1 / 2 / 0 |" in text
    assert text.count("\n") == 4


MAP = [
    {"resolution": "24x24", "verdict": "repaired", "down": 0.9, "mid": 0.6, "up": 0.2, "winner_w": 1.5},
    {"resolution": "32x24", "verdict": "repaired", "down": 0.8, "mid": 0.6, "up": 0.4, "winner_w": 1.5},
    {"resolution": "24x32", "verdict": "repaired", "down": 0.0, "mid": 0.0, "up": 0.1, "winner_w": 1.0},
    {"resolution": "48x48", "verdict": "null", "down": 0.3, "mid": 0.0, "up": 0.0, "winner_w": 1.5},
]  # fmt: skip


def test_map_registry_holds_repaired_resolutions_only():
    registered = map_recipes(MAP)
    assert sorted(registered) == ["24x24", "24x32", "32x24"]
    assert registered["24x24"].poa_w == 1.5 and registered["24x24"].ratios["down"] == 0.9


def test_a_left_out_resolution_never_predicts_itself():
    registered = map_recipes(MAP)
    got = predictions("24x24", registered, "32x32")
    assert got["nearest"].ratios != registered["24x24"].ratios
    assert got["nearest"].resolution == (24, 24)
    assert "24x24=" not in got["interpolated"].trial_id.split(":", 1)[1]
    far = predictions("48x48", registered, "32x32")  # a null resolution: all three registered
    assert "32x32=" in far["interpolated"].trial_id  # the dense anchor is the nearest point
