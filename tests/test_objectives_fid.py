"""FID/KID against a reference folder, with a tiny feature extractor standing in for Inception."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from crdiff_search.errors import UsageError
from crdiff_search.objectives._common import MissingWeightsError
from crdiff_search.objectives.fid import FidObjective, KidObjective, inception_extractor


class TinyExtractor(nn.Module):
    """uint8 (B, 3, H, W) -> (B, 8), like Inception's interface (it resizes internally)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dtype == torch.uint8
        self.calls += x.shape[0]
        x = nn.functional.interpolate(x.float() / 255, size=(16, 16), mode="bilinear")
        return torch.tanh(self.conv(x)).mean((2, 3))


def _noise(n: int, seed: int, size=(24, 24), low=0, high=256) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(low, high, (*size, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture()
def reference(tmp_path):
    folder = tmp_path / "reference"
    folder.mkdir()
    for i, image in enumerate(_noise(12, seed=1)):
        image.save(folder / f"{i:02d}.png")
    _noise(1, seed=9, size=(30, 20))[0].save(folder / "odd-size.png")
    return folder


def _fid(reference, tmp_path, extractor=None, **kw):
    return FidObjective(
        reference=reference,
        extractor=extractor or TinyExtractor(),
        cache_dir=tmp_path / "cache",
        kid_subsets=10,
        **kw,
    )


def test_fid_is_near_zero_for_the_reference_itself_and_grows_with_shift(reference, tmp_path):
    fid = _fid(reference, tmp_path)
    same = [Image.open(p).convert("RGB") for p in sorted(reference.glob("*.png"))]
    near = fid.compute(same)
    assert near["fid"] == pytest.approx(0.0, abs=1e-3)
    assert near["n_reference"] == 13 and near["n_images"] == 13
    darker = fid.compute(_noise(12, seed=2, high=128))
    other = fid.compute(_noise(12, seed=3))
    assert darker["fid"] > 10 * max(other["fid"], 1e-6)
    assert darker["kid_mean"] > other["kid_mean"]
    scores = fid.score(_noise(12, seed=2, high=128), [""] * 12)
    assert scores.shape == (12,) and np.all(scores == pytest.approx(darker["fid"]))
    assert fid.higher_is_better is False and fid.aggregate(scores) == pytest.approx(darker["fid"])


def test_reference_features_are_cached_once_and_invalidated_by_changes(reference, tmp_path):
    first = TinyExtractor()
    fid = _fid(reference, tmp_path, first)
    assert first.calls == 13
    files = list((tmp_path / "cache" / "fid").glob("*.npy"))
    assert len(files) == 1
    second = TinyExtractor()
    again = _fid(reference, tmp_path, second)
    assert second.calls == 0
    torch.testing.assert_close(again.reference_features, fid.reference_features)
    _noise(1, seed=5)[0].save(reference / "new.png")
    third = TinyExtractor()
    _fid(reference, tmp_path, third)
    assert third.calls == 14
    assert len(list((tmp_path / "cache" / "fid").glob("*.npy"))) == 2


def test_kid_objective_and_determinism(reference, tmp_path):
    kid = KidObjective(
        reference=reference, extractor=TinyExtractor(), cache_dir=tmp_path / "c", kid_subsets=10
    )
    images = _noise(6, seed=2, high=128)
    a, b = kid.score(images, [""] * 6), kid.score(images, [""] * 6)
    assert a[0] == b[0] == pytest.approx(kid.compute(images)["kid_mean"])
    assert kid.name == "kid" and a[0] > 0


def test_usage_errors(reference, tmp_path):
    fid = _fid(reference, tmp_path)
    with pytest.raises(UsageError, match="at least 2"):
        fid.compute(_noise(1, seed=0))
    with pytest.raises(UsageError, match="reference image folder"):
        FidObjective(reference=tmp_path / "missing", extractor=TinyExtractor())
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match="holds 0 images"):
        FidObjective(reference=empty, extractor=TinyExtractor())


def test_missing_inception_weights_say_how_to_provide_them(tmp_path, monkeypatch):
    monkeypatch.delenv("CRDIFF_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(MissingWeightsError, match="weights-inception-2015-12-05.*CRDIFF_INCEPTION"):
        inception_extractor()


def test_inception_extractor_loads_a_weights_file_safely(tmp_path, monkeypatch):
    """The default extractor: torchmetrics' InceptionV3, its file loaded with weights_only."""
    from unittest import mock

    from torchmetrics.image.fid import NoTrainInceptionV3

    with (
        mock.patch.object(nn.Module, "load_state_dict", lambda self, state, **kw: None),
        mock.patch.object(torch, "load", lambda *a, **k: {}),
    ):
        random_net = NoTrainInceptionV3("inception-v3-compat", ["2048"], "unused")
    path = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(random_net.state_dict(), path)
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(k) or real_load(*a, **k))
    net = inception_extractor(path)
    assert [k.get("weights_only") for k in loads] == [True]
    monkeypatch.setattr(torch, "load", real_load)
    assert net.features_list == ["2048"] and not net.training
    torch.testing.assert_close(
        net.state_dict()["Conv2d_1a_3x3.conv.weight"],
        random_net.state_dict()["Conv2d_1a_3x3.conv.weight"],
    )
