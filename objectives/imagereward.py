"""ImageReward-v1.0 (Xu et al., 2023) on transformers' BLIP components.

The model: a BLIP ViT-L/16 image encoder; a BERT-base text encoder whose layers cross-attend to
the image tokens (BLIP's "med" text model); an MLP head on the first ([CLS]) text token; the
reward is standardised with the mean and standard deviation the authors measured. Prompts are
BERT-tokenised, padded and cut to 35 tokens.

What the model sees (``resize``):

- ``"reference"`` (default): the CR-Diff evaluation protocol. The image goes through a PNG
  round trip, is resized to 256x256 with bicubic resampling *without keeping its aspect
  ratio*, goes through PNG again, then through ImageReward's own transform (a no-op crop on a
  square); scored in fp32 unless ``dtype`` says otherwise. The whole image stays in view: on
  a 400x560 image nothing is cut (the crop below would hide 28.6 % of its height, where
  resolution failures such as duplicated subjects often sit), at the price of a squashed
  aspect ratio. Scores are comparable with the paper's.
- ``"crop"``: ImageReward's own transform on the original image (bicubic resize of the
  shorter side to 224, centre crop, RGB, CLIP normalisation): the model's training-time view,
  but blind to the cut margins of a non-square image.

Weights: the official ``ImageReward.pt`` state dict and its ``med_config.json``; the BERT
vocabulary is bert-base-uncased's ``vocab.txt``. Each comes from an explicit path, an
environment variable, or the Hugging Face cache (``THUDM/ImageReward``).

Example::

    reward = ImageRewardObjective(checkpoint="ImageReward.pt", med_config="med_config.json",
                                  vocab="bert-base-uncased/vocab.txt")
    reward.score([image], ["a red cube on a table"])   # array([0.42])
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from crdiff_search.errors import UsageError
from crdiff_search.objectives._common import (
    CLIP_MEAN,
    CLIP_STD,
    batches,
    check_batch,
    load_state_dict,
    mlp_head,
    mlp_head_sizes,
    pick_device,
    pick_dtype,
    resolve_file,
    to_pil,
)
from crdiff_search.objectives.base import Objective
from crdiff_search.tokenizers import check_tokenizer

HUB_REPO = "THUDM/ImageReward"
# The authors' reward statistics (ImageReward.py), applied as (reward - mean) / std.
REWARD_MEAN = 0.16717362830052426
REWARD_STD = 1.0333394966054072
MAX_PROMPT_TOKENS = 35
BERT_VOCAB_SIZE = 30522
HEAD_HIDDEN = (1024, 128, 64, 16)
# Parts of the BLIP checkpoint that the reward does not use (contrastive projections, buffers).
_UNUSED_PREFIXES = (
    "blip.vision_proj.",
    "blip.text_proj.",
    "blip.text_encoder.embeddings.position_ids",
)

_HOW = (
    "download ImageReward.pt and med_config.json from the Hugging Face repo THUDM/ImageReward "
    "and pass checkpoint=/path/ImageReward.pt med_config=/path/med_config.json, or set "
    "$CRDIFF_IMAGEREWARD_CHECKPOINT and $CRDIFF_IMAGEREWARD_MED_CONFIG, or fill the Hugging Face "
    "cache with that repo while online"
)
_HOW_VOCAB = (
    "pass vocab=/path/to/vocab.txt (bert-base-uncased's, 30,522 tokens) or a folder holding it, "
    "or set $CRDIFF_BERT_VOCAB, or fill the Hugging Face cache with google-bert/bert-base-uncased"
)


class ImageRewardModel(nn.Module):
    """BLIP image encoder + cross-attending text encoder + reward head -> standardised reward."""

    def __init__(self, vision_config, text_config, head_hidden: Sequence[int] = HEAD_HIDDEN):
        super().__init__()
        from transformers import BlipTextModel, BlipVisionModel

        self.vision = BlipVisionModel(vision_config)
        self.text = BlipTextModel(text_config, add_pooling_layer=False)
        self.head = mlp_head(text_config.hidden_size, head_hidden)
        self.image_size = vision_config.image_size

    def forward(self, pixel_values, input_ids, attention_mask) -> torch.Tensor:
        image_embeds = self.vision(pixel_values=pixel_values).last_hidden_state
        image_mask = torch.ones(
            image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device
        )
        text = self.text(
            input_ids=input_ids,
            attention_mask=attention_mask,
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=image_mask,
            is_decoder=False,
        ).last_hidden_state
        # The head runs in fp32 whatever the encoders' dtype, as the reference does.
        features = text[:, 0, :].float()
        reward = self.head.float()(features).squeeze(-1)
        return (reward - REWARD_MEAN) / REWARD_STD


def configs_from_checkpoint(
    state: Mapping[str, torch.Tensor], med_config: Mapping[str, Any], *, vision_heads: int | None
):
    """transformers Blip{Vision,Text}Config matching the checkpoint tensors and med_config.

    The ViT's depth, width, patch and image size are read from the tensors; the number of heads
    is not visible in them and defaults to width / 64 (ViT-L/16: 1024 / 64 = 16).
    """
    from transformers import BlipTextConfig, BlipVisionConfig

    if not med_config.get("add_cross_attention", False):
        raise UsageError("med_config.json must set add_cross_attention: true (BLIP's text encoder)")
    vis = "blip.visual_encoder."
    width = state[f"{vis}cls_token"].shape[-1]
    patch = state[f"{vis}patch_embed.proj.weight"].shape[-1]
    n_pos = state[f"{vis}pos_embed"].shape[1] - 1
    grid = round(n_pos**0.5)
    depth = 1 + max(int(k.split(".")[3]) for k in state if k.startswith(f"{vis}blocks."))
    heads = vision_heads or max(1, width // 64)
    if width % heads:
        raise UsageError(f"vision_heads={heads} does not divide the ViT width {width}")
    vision_config = BlipVisionConfig(
        hidden_size=width,
        intermediate_size=state[f"{vis}blocks.0.mlp.fc1.weight"].shape[0],
        num_hidden_layers=depth,
        num_attention_heads=heads,
        image_size=grid * patch,
        patch_size=patch,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        attention_dropout=0.0,
    )
    text_config = BlipTextConfig(
        vocab_size=med_config["vocab_size"],
        hidden_size=med_config["hidden_size"],
        intermediate_size=med_config["intermediate_size"],
        num_hidden_layers=med_config["num_hidden_layers"],
        num_attention_heads=med_config["num_attention_heads"],
        max_position_embeddings=med_config["max_position_embeddings"],
        hidden_act=med_config.get("hidden_act", "gelu"),
        layer_norm_eps=med_config.get("layer_norm_eps", 1e-12),
        hidden_dropout_prob=med_config.get("hidden_dropout_prob", 0.1),
        attention_probs_dropout_prob=med_config.get("attention_probs_dropout_prob", 0.1),
        pad_token_id=med_config.get("pad_token_id", 0),
        # The image encoder's width, whatever med_config says (ImageReward overrides it too).
        encoder_hidden_size=width,
        # BlipTextModel builds its cross-attention layers only for decoder configs; the forward
        # pass still runs bidirectionally (is_decoder=False).
        is_decoder=True,
    )
    return vision_config, text_config


def map_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an ``ImageReward.pt`` state dict onto :class:`ImageRewardModel`.

    Raises :class:`~crdiff_search.errors.UsageError` on keys that belong to neither side, so a
    wrong file fails loudly instead of loading half a model.
    """
    vis = "blip.visual_encoder."
    renames = {
        "cls_token": "embeddings.class_embedding",
        "pos_embed": "embeddings.position_embedding",
        "patch_embed.proj.weight": "embeddings.patch_embedding.weight",
        "patch_embed.proj.bias": "embeddings.patch_embedding.bias",
        "norm.weight": "post_layernorm.weight",
        "norm.bias": "post_layernorm.bias",
    }
    block_parts = {
        "norm1": "layer_norm1",
        "norm2": "layer_norm2",
        "attn.qkv": "self_attn.qkv",
        "attn.proj": "self_attn.projection",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
    }
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        if key.startswith(_UNUSED_PREFIXES):
            continue
        if key.startswith(vis):
            rest = key[len(vis) :]
            if rest in renames:
                out[f"vision.{renames[rest]}"] = value
                continue
            if rest.startswith("blocks."):
                _, index, *name = rest.split(".")
                module, leaf = ".".join(name[:-1]), name[-1]
                if module in block_parts:
                    out[f"vision.encoder.layers.{index}.{block_parts[module]}.{leaf}"] = value
                    continue
        elif key.startswith("blip.text_encoder."):
            out["text." + key[len("blip.text_encoder.") :]] = value
            continue
        elif key.startswith("mlp.layers."):
            out["head." + key[len("mlp.layers.") :]] = value
            continue
        unknown.append(key)
    if unknown:
        raise UsageError(
            f"not an ImageReward checkpoint: {len(unknown)} unexpected keys, e.g. {unknown[:3]}"
        )
    return out


def _bert_tokenizer(vocab_file: Path):
    """bert-base-uncased's tokenizer from its vocab.txt alone, with ImageReward's added tokens."""
    from transformers import BertTokenizer

    folder = Path(tempfile.mkdtemp(prefix="crdiff-bert-vocab-"))
    try:
        shutil.copyfile(vocab_file, folder / "vocab.txt")
        config = {
            "do_lower_case": True,
            "model_max_length": 512,
            "tokenizer_class": "BertTokenizer",
        }
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
        tokenizer = BertTokenizer.from_pretrained(str(folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    check_tokenizer(tokenizer, min_vocab=BERT_VOCAB_SIZE, what=f"BERT tokenizer from {vocab_file}")
    # BLIP adds these two (ids 30522, 30523); they never appear in a plain prompt.
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tokenizer


def resolve_vocab(vocab: str | os.PathLike | None) -> Path:
    if vocab is not None and Path(vocab).expanduser().is_dir():
        vocab = Path(vocab).expanduser() / "vocab.txt"
    env = os.environ.get("CRDIFF_BERT_VOCAB")
    if vocab is None and env and Path(env).is_dir():
        vocab = Path(env) / "vocab.txt"
    return resolve_file(
        vocab,
        what="BERT vocabulary for ImageReward (bert-base-uncased vocab.txt)",
        env_var="CRDIFF_BERT_VOCAB",
        hub=[("google-bert/bert-base-uncased", "vocab.txt"), ("bert-base-uncased", "vocab.txt")],
        how=_HOW_VOCAB,
    )


# What the reward model sees of an image (the ``resize`` option).
RESIZE_MODES = ("reference", "crop")
REFERENCE_SIZE = 256


def reference_resize(image: Any, size: int = REFERENCE_SIZE):
    """The CR-Diff evaluation's step before ImageReward: the image saved as PNG, resized to
    ``size`` x ``size`` (bicubic, the aspect ratio NOT kept: the whole image stays in view),
    saved as PNG again. Returns the PIL image the reward model's own transform then gets."""
    import io

    from PIL import Image

    def png(im):
        buffer = io.BytesIO()
        im.save(buffer, format="PNG")
        buffer.seek(0)
        with Image.open(buffer) as again:
            return again.copy()

    return png(png(to_pil(image)).resize((size, size), Image.BICUBIC))


def preprocess(image: Any, size: int = 224) -> torch.Tensor:
    """ImageReward's transform: bicubic resize of the shorter side to ``size``, centre crop,
    RGB, [0, 1], CLIP normalisation. Returns a (3, size, size) float32 tensor."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as tf

    image = tf.resize(to_pil(image), size, interpolation=InterpolationMode.BICUBIC)
    image = tf.center_crop(image, size).convert("RGB")
    return tf.normalize(tf.to_tensor(image), CLIP_MEAN, CLIP_STD)


class ImageRewardObjective(Objective):
    """ImageReward-v1.0 reward of each (image, prompt) pair; higher is better."""

    name = "imagereward"

    def __init__(
        self,
        *,
        checkpoint: str | os.PathLike | None = None,
        med_config: str | os.PathLike | None = None,
        vocab: str | os.PathLike | None = None,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 16,
        vision_heads: int | None = None,
        resize: str = "reference",
    ):
        if batch_size < 1:
            raise UsageError(f"batch_size must be >= 1, got {batch_size}")
        if resize not in RESIZE_MODES:
            raise UsageError(
                f"imagereward resize {resize!r} is not valid; valid: {', '.join(RESIZE_MODES)}"
            )
        self.resize = resize
        self.device = pick_device(device)
        # The reference scores in fp32: "auto" keeps it for that protocol, on a GPU too.
        self.dtype = pick_dtype(self.device, dtype, half_ok=resize != "reference")
        self.batch_size = batch_size
        checkpoint_path = resolve_file(
            checkpoint,
            what="ImageReward checkpoint (ImageReward.pt)",
            env_var="CRDIFF_IMAGEREWARD_CHECKPOINT",
            hub=[(HUB_REPO, "ImageReward.pt")],
            how=_HOW,
        )
        med_config_path = resolve_file(
            med_config,
            what="ImageReward text-encoder config (med_config.json)",
            env_var="CRDIFF_IMAGEREWARD_MED_CONFIG",
            hub=[(HUB_REPO, "med_config.json")],
            how=_HOW,
        )
        self.tokenizer = _bert_tokenizer(resolve_vocab(vocab))
        state = load_state_dict(checkpoint_path)
        med = json.loads(Path(med_config_path).read_text())
        if med["vocab_size"] < len(self.tokenizer):
            raise UsageError(
                f"med_config vocab_size {med['vocab_size']} < tokenizer size {len(self.tokenizer)}"
            )
        vision_config, text_config = configs_from_checkpoint(state, med, vision_heads=vision_heads)
        in_features, hidden = mlp_head_sizes(state, "mlp.layers.")
        model = ImageRewardModel(vision_config, text_config, hidden)
        model.load_state_dict(map_state_dict(state), strict=True)
        if in_features != text_config.hidden_size:
            raise UsageError(
                f"reward head takes {in_features} features, text width is {text_config.hidden_size}"
            )
        model.eval().requires_grad_(False)
        model.vision.to(self.device, self.dtype)
        model.text.to(self.device, self.dtype)
        model.head.to(self.device, torch.float32)
        self.model = model

    def preprocess(self, image: Any) -> torch.Tensor:
        if self.resize == "reference":
            image = reference_resize(image)
        return preprocess(image, self.model.image_size)

    @torch.inference_mode()
    def score(self, images: Sequence[Any], prompts: Sequence[str]) -> np.ndarray:
        check_batch(images, prompts)
        out = np.empty(len(images), dtype=np.float64)
        for part in batches(len(images), self.batch_size):
            pixels = torch.stack([self.preprocess(im) for im in images[part]])
            tokens = self.tokenizer(
                list(prompts[part]),
                padding="max_length",
                truncation=True,
                max_length=MAX_PROMPT_TOKENS,
                return_tensors="pt",
            )
            reward = self.model(
                pixels.to(self.device, self.dtype),
                tokens.input_ids.to(self.device),
                tokens.attention_mask.to(self.device),
            )
            out[part] = reward.double().cpu().numpy()
        return out
