"""Contract tests for every model-based scorer, on tiny random-weight checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from crdiff_search import objectives
from crdiff_search.errors import UsageError
from crdiff_search.objectives import _tiny, clear_objective_cache, create_objective
from crdiff_search.objectives._common import (
    CLIP_MEAN,
    CLIP_STD,
    MissingWeightsError,
    pick_dtype,
    to_pil,
)
from crdiff_search.tokenizers import TokenizerError

SCORERS = ("clip", "aesthetic", "pickscore", "imagereward")
PROMPTS = ["a red cube", "two blue spheres", "a cat on a table", "a photo at night"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-scorers")
    config, checkpoint = _tiny.write_tiny_open_clip(root / "clip")
    ir = _tiny.write_tiny_imagereward(root / "imagereward")
    return {
        "clip": {"model": str(config), "pretrained": str(checkpoint), "device": "cpu"},
        "aesthetic": {
            "weights": str(_tiny.write_tiny_aesthetic(root / "aesthetic")),
            "clip_model": str(config),
            "clip_pretrained": str(checkpoint),
            "device": "cpu",
        },
        "pickscore": {
            "model": str(_tiny.write_tiny_pickscore(root / "pick")),
            "processor": str(root / "pick"),
            "device": "cpu",
        },
        "imagereward": {**{k: str(v) for k, v in ir.items()}, "vision_heads": 4, "device": "cpu"},
    }


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)),
        Image.fromarray(rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)),
        Image.fromarray(np.full((40, 40, 3), 200, dtype=np.uint8)),
        Image.fromarray(rng.integers(0, 256, (50, 50, 3), dtype=np.uint8)),
    ]


@pytest.fixture(scope="module")
def scorers(weights):
    return {name: create_objective(name, **weights[name]) for name in SCORERS}


@pytest.mark.parametrize("name", SCORERS)
def test_score_changes_with_the_image(scorers, images, name):
    scorer = scorers[name]
    base = scorer.score(images[:1], PROMPTS[:1])
    other = scorer.score(images[1:2], PROMPTS[:1])
    assert base.shape == (1,) and np.isfinite(base).all()
    assert abs(base[0] - other[0]) > 1e-6


@pytest.mark.parametrize("name", SCORERS)
def test_batch_equals_one_at_a_time(scorers, images, name):
    scorer = scorers[name]
    batched = scorer.score(images, PROMPTS)
    single = np.array([scorer.score([im], [p])[0] for im, p in zip(images, PROMPTS, strict=True)])
    assert batched.shape == (4,)
    np.testing.assert_allclose(batched, single, atol=1e-4, rtol=1e-5)
    assert np.ptp(batched) > 1e-6
    assert scorer.aggregate(batched) == pytest.approx(batched.mean())


@pytest.mark.parametrize("name", ["clip", "pickscore", "imagereward"])
def test_score_depends_on_the_prompt(scorers, images, name):
    scorer = scorers[name]
    a = scorer.score(images[:1], ["a red cube"])
    b = scorer.score(images[:1], ["two blue spheres at night"])
    assert abs(a[0] - b[0]) > 1e-6


@pytest.mark.parametrize("name", SCORERS)
def test_tensor_input_scores_like_the_pil_image(scorers, images, name):
    tensor = T.functional.to_tensor(images[0])
    assert to_pil(tensor).tobytes() == images[0].tobytes()
    np.testing.assert_allclose(
        scorers[name].score([tensor], PROMPTS[:1]), scorers[name].score(images[:1], PROMPTS[:1])
    )


def _documented(size: int):
    return T.Compose(
        [
            T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(size),
            T.Lambda(lambda im: im.convert("RGB")),
            T.ToTensor(),
            T.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )


@pytest.mark.parametrize("name, size", [("clip", 32), ("aesthetic", 32), ("imagereward", 64)])
def test_preprocessing_matches_the_documented_transform(scorers, images, name, size):
    for image in images[:2]:
        got = scorers[name].preprocess(image)
        assert got.shape == (3, size, size)
        if name == "imagereward":  # the reference protocol: the 256x256 squash first
            from crdiff_search.objectives.imagereward import reference_resize

            image = reference_resize(image)
        torch.testing.assert_close(got, _documented(size)(image), atol=1e-6, rtol=0)


def test_pickscore_preprocessing_matches_the_clip_transform(scorers, images):
    got = scorers["pickscore"].preprocess(images[:2])
    want = torch.stack([_documented(32)(im) for im in images[:2]])
    assert got.shape == want.shape
    # transformers' image processor resizes on its own backend: equal up to interpolation noise.
    assert (got - want).abs().mean() < 0.02


@pytest.mark.parametrize("name", SCORERS)
def test_the_cache_loads_each_model_once(weights, monkeypatch, name):
    module = __import__(f"crdiff_search.objectives.{name}", fromlist=["x"])
    cls = next(
        v for v in vars(module).values() if isinstance(v, type) and getattr(v, "name", "") == name
    )
    calls = []

    class Counting(cls):
        def __init__(self, **kw):
            calls.append(kw)
            super().__init__(**kw)

    monkeypatch.setattr(module, cls.__name__, Counting)
    clear_objective_cache()
    first = create_objective(name, **weights[name])
    assert create_objective(name, **weights[name]) is first
    assert create_objective(name, **dict(reversed(list(weights[name].items())))) is first
    assert len(calls) == 1
    clear_objective_cache()


def test_unknown_name_and_option_are_usage_errors():
    with pytest.raises(UsageError, match="valid names: .*imagereward.*pickscore"):
        create_objective("imagereword")
    with pytest.raises(UsageError, match="checkpont"):
        create_objective("imagereward", checkpont="x.pt")


def test_missing_weights_name_what_and_how(tmp_path, monkeypatch):
    for var in (
        "CRDIFF_IMAGEREWARD_CHECKPOINT",
        "CRDIFF_AESTHETIC_WEIGHTS",
        "CRDIFF_CLIP_CHECKPOINT",
        "CRDIFF_PICKSCORE_MODEL",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(
        MissingWeightsError, match=r"ImageReward\.pt.*CRDIFF_IMAGEREWARD_CHECKPOINT"
    ):
        create_objective("imagereward", checkpoint=str(tmp_path / "nope.pt"))
    with pytest.raises(MissingWeightsError, match="CRDIFF_AESTHETIC_WEIGHTS"):
        create_objective("aesthetic")
    with pytest.raises(MissingWeightsError, match="CRDIFF_CLIP_CHECKPOINT"):
        create_objective("clip", pretrained=None)
    with pytest.raises(MissingWeightsError, match=r"openai.*Tried|Tried.*openai"):
        create_objective("clip", model="ViT-B-32", pretrained="openai")
    with pytest.raises(MissingWeightsError, match="PickScore_v1"):
        create_objective("pickscore")
    with pytest.raises(UsageError, match="neither a file nor a tag"):
        create_objective("clip", model="ViT-B-32", pretrained="no-such-tag")


def test_an_incomplete_bert_vocab_is_refused(weights, tmp_path):
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n")
    options = dict(weights["imagereward"], vocab=str(tmp_path / "vocab.txt"))
    with pytest.raises(TokenizerError, match=r"only \d tokens"):
        objectives.imagereward.ImageRewardObjective(**options)


def test_wrong_checkpoint_is_refused(weights, tmp_path):
    torch.save({"something.else": torch.zeros(1)}, tmp_path / "bad.pt")
    options = dict(weights["aesthetic"], weights=str(tmp_path / "bad.pt"))
    with pytest.raises(UsageError, match="layers"):
        objectives.aesthetic.AestheticObjective(**options)


def test_dtype_choice():
    cpu = torch.device("cpu")
    assert pick_dtype(cpu) == torch.float32
    assert pick_dtype(cpu, "bfloat16") == torch.bfloat16
    with pytest.raises(UsageError, match="float16"):
        pick_dtype(cpu, "half")


def test_images_and_prompts_must_pair(scorers, images):
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        scorers["clip"].score(images[:2], PROMPTS[:1])
