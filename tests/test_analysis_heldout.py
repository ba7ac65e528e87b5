"""The held-out scoring helper every measurement script shares: the dense model is the
neutral candidate, candidates are scored once each (memoised by rounded ratios, POA weight and
scaling), and the paired differences use the right reference."""

from __future__ import annotations

import numpy as np
import pytest

from crdiff_search.analysis.heldout import HeldOut


@pytest.fixture
def held(monkeypatch):
    """A held-out set of 4 testbed prompts whose scoring is replaced by a deterministic fake
    that records every call (the real one is exercised in the last test)."""
    calls = []

    def fake(spec, candidate, weights):
        calls.append((candidate, tuple(weights)))
        if candidate is None:
            values = np.array([0.5, 0.5, 0.25, 1.0])
        else:
            shift = sum(candidate["ratios"].values()) * weights[0]
            shift += 0.1 if candidate["attention_scaling"] == "entropy" else 0.0
            values = np.array([0.5, 0.5, 0.25, 1.0]) + shift
        return [{"score": float(values.mean()), "image_scores": values.tolist()}]

    monkeypatch.setattr("crdiff_search.rerank.evaluate_candidate", fake)
    out = HeldOut.at("24x24", n_prompts=4)
    out.calls = calls
    return out


def test_the_default_set_is_the_studys_rerank_set(held):
    from crdiff_search.config import load_experiment
    from crdiff_search.rerank import heldout_prompts

    prompts, seeds = heldout_prompts(load_experiment(None, resolution="24x24"), n=4)
    assert held.prompts == prompts and held.seeds == seeds
    assert held.groups == ("down", "mid", "up")
    assert held.config.resolution == "24x24"


def test_neutral_candidates_are_the_dense_model_scored_once(held):
    dense = held.dense
    assert held.scores({"down": 0.0, "mid": 0.0, "up": 0.0}) is dense
    assert held.scores(None, w=1.0, attention_scaling=None) is dense
    assert held.calls == [(None, (1.0,))]
    assert held.score(None) == pytest.approx(0.5625)


def test_candidates_are_memoised_by_rounded_ratios_weight_and_scaling(held):
    a = held.scores({"down": 0.5, "mid": 0.1, "up": 0.0})
    assert held.scores({"down": 0.5 + 1e-9, "mid": 0.1, "up": 0.0}) is a
    assert held.scores({"down": 0.5, "mid": 0.1}) is a  # a missing group is 0
    b = held.scores({"down": 0.5, "mid": 0.1, "up": 0.0}, w=1.5)
    c = held.scores({"down": 0.5, "mid": 0.1, "up": 0.0}, attention_scaling="entropy")
    entropy_only = held.scores(None, attention_scaling="entropy")
    assert len(held.calls) == 4  # a, b, c and the scaling alone: not dense, never twice
    assert b[0] == pytest.approx(0.5 + 0.6 * 1.5) and c[0] == pytest.approx(0.5 + 0.7)
    assert entropy_only[0] == pytest.approx(0.6)
    sent = held.calls[2][0]
    assert sent["ratios"] == {"down": 0.5, "mid": 0.1, "up": 0.0}
    assert sent["attention_scaling"] == "entropy"


def test_differences_are_paired_against_dense_or_a_given_reference(held):
    ratios = {"down": 0.25, "mid": 0.0, "up": 0.0}
    d = held.versus(ratios)
    assert d["delta"] == pytest.approx(0.25) and d["wins"] == 4 and d["ties"] == 0
    same = held.versus(ratios, reference=held.scores(ratios))
    assert same["delta"] == 0.0 and same["ties"] == 4
    worse = held.versus(None, reference=held.scores(ratios))
    assert worse["delta"] == pytest.approx(-0.25) and worse["losses"] == 4


def test_unknown_groups_are_refused_by_name(held):
    with pytest.raises(ValueError, match=r"unknown ratio groups \['middle'\]"):
        held.scores({"middle": 0.3})


def test_real_scores_are_those_of_a_rerank_task():
    """No fake: 2 held-out images at 24x24, scored as the re-rank scores a candidate."""
    from crdiff_search.rerank import evaluate_candidate, task_spec

    held = HeldOut.at("24x24", n_prompts=2)
    ratios = {"down": 0.95, "mid": 0.9, "up": 0.9}
    spec = task_spec(held.config, held.prompts, held.seeds)
    candidate = {"trial_id": "x", "ratios": ratios, "attention_scaling": None}
    direct = evaluate_candidate(spec, candidate, (1.0,))[0]["image_scores"]
    assert np.array_equal(held.scores(ratios), np.asarray(direct))
    dense = evaluate_candidate(spec, None, (1.0,))[0]["image_scores"]
    assert np.array_equal(held.dense, np.asarray(dense))
    assert set(held.seconds) == {held.key(None), held.key(ratios)}
