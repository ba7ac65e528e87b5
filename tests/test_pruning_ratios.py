"""Parsing and validating ratio mappings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crdiff_search.errors import UsageError
from crdiff_search.pruning import expand_ratios, parse_ratios, validate_ratios

GROUPS = ("down", "mid", "up")


def test_validate_fills_missing_groups_and_accepts_numeric_scalars():
    out = validate_ratios({"up": np.float32(0.25), "mid": 0, "down": torch.tensor(0.5)}, GROUPS)
    assert out == {"down": 0.5, "mid": 0.0, "up": 0.25}
    assert all(type(v) is float for v in out.values())
    assert validate_ratios(None, GROUPS) == dict.fromkeys(GROUPS, 0.0)
    assert list(validate_ratios({"up": 0.1}, GROUPS)) == list(GROUPS)


def test_parse_ratios():
    assert parse_ratios("down=0.3, mid=0.2,up=0.5") == {"down": 0.3, "mid": 0.2, "up": 0.5}
    assert parse_ratios("0.4") == {"*": 0.4}
    assert expand_ratios(parse_ratios("0.4"), GROUPS) == dict.fromkeys(GROUPS, 0.4)
    assert expand_ratios(parse_ratios("up=0.4"), GROUPS) == {"down": 0.0, "mid": 0.0, "up": 0.4}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty ratios"),
        ("down=abc", "must be a number"),
        ("down", "must be a number"),
        ("down=0.3,down=0.4", "given twice"),
        ("=0.3", "bad ratio item"),
        ("up=1", r"must be in \[0, 1\)"),
        ("1.5", r"must be in \[0, 1\)"),
        ("up=nan", r"must be in \[0, 1\)"),
    ],
)
def test_parse_errors(text, message):
    with pytest.raises(UsageError, match=message):
        parse_ratios(text)


def test_unknown_group_lists_valid_ones():
    with pytest.raises(UsageError, match="'middle'; valid: down, mid, up"):
        expand_ratios(parse_ratios("middle=0.3"), GROUPS)
