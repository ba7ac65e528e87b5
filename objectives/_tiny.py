"""Random-weight checkpoints of every scorer, in the real files' formats: tiny ones for tests
and, with ``size="real"``, ones of the published architectures' true sizes for benchmarks.

Tests and benchmarks write them to a folder and load them through the same code paths as the
real weights (a state dict file, a config, a model folder). Nothing here touches the network.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

TINY_CLIP_NAME = "crdiff-tiny-clip"
TINY_CLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
# 64 px (4 x 4 patches) keeps tests fast; the real model and the parity test use 224.
TINY_IMAGEREWARD_VISION = {"width": 48, "depth": 2, "heads": 4, "patch": 16, "image_size": 64}
# ImageReward-v1.0: BLIP's ViT-L/16 at 224 px and its BERT-base "med" text encoder
REAL_IMAGEREWARD_VISION = {"width": 1024, "depth": 24, "heads": 16, "patch": 16, "image_size": 224}
TINY_MED_CONFIG = {
    "architectures": ["BertModel"],
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 32,
    "initializer_range": 0.02,
    "intermediate_size": 64,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 64,
    "model_type": "bert",
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "pad_token_id": 0,
    "type_vocab_size": 2,
    "vocab_size": 30524,
    "encoder_width": 48,
    "add_cross_attention": True,
}


REAL_MED_CONFIG = dict(
    TINY_MED_CONFIG,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=512,
    encoder_width=1024,
)
SIZES = ("tiny", "real")
# PickScore_v1: a CLIP-ViT-H-14 (transformers CLIPModel)
_PICKSCORE = {
    "tiny": {
        "text": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                 "num_attention_heads": 2},
        "vision": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                   "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        "projection_dim": 16,
    },
    "real": {
        "text": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                 "num_attention_heads": 16, "hidden_act": "gelu"},
        "vision": {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
                   "num_attention_heads": 16, "image_size": 224, "patch_size": 14,
                   "hidden_act": "gelu"},
        "projection_dim": 1024,
    },
}  # fmt: skip


def _check_size(size: str) -> None:
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")


def _randomise_(module: torch.nn.Module, seed: int, scale: float = 0.1) -> None:
    # Every tensor random (norms and biases too), so a wrongly mapped tensor changes scores.
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * scale)
            if "norm" in name.lower() and name.endswith("weight"):
                param.add_(1.0)


def write_tiny_open_clip(folder: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """(model config .json, checkpoint .safetensors) of a 1.7M-parameter open_clip CLIP."""
    import open_clip
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / f"{TINY_CLIP_NAME}.json"
    config.write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(config)
    torch.manual_seed(seed)
    model = open_clip.create_model(TINY_CLIP_NAME, pretrained=None)
    _randomise_(model, seed, scale=0.05)
    with torch.no_grad():
        model.logit_scale.fill_(4.6052)
    checkpoint = folder / f"{TINY_CLIP_NAME}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(checkpoint))
    return config, checkpoint


def write_open_clip(folder: str | Path, arch: str = "ViT-L-14", seed: int = 0) -> Path:
    """A checkpoint (.safetensors) of open_clip's built-in ``arch`` with random weights, for
    ``ClipScoreObjective(model=arch, pretrained=path)`` (and the aesthetic scorer's CLIP)."""
    import open_clip
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.create_model(arch, pretrained=None)
    with torch.no_grad():
        model.logit_scale.fill_(4.6052)
    checkpoint = folder / f"{arch}-random.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(checkpoint))
    return checkpoint


def write_tiny_aesthetic(
    folder: str | Path, in_features: int = 16, seed: int = 0, *, size: str = "tiny"
) -> Path:
    """The aesthetic MLP (real layout, ``layers.*``) over ``in_features``-d embeddings; with
    ``size="real"`` the LAION predictor's (1024, 128, 64, 16) hidden layers."""
    from crdiff_search.objectives._common import mlp_head

    _check_size(size)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    head = mlp_head(in_features, (64, 32, 16, 8) if size == "tiny" else (1024, 128, 64, 16))
    _randomise_(head, seed, scale=0.3)
    path = folder / "tiny-aesthetic.pth"
    torch.save({f"layers.{k}": v for k, v in head.state_dict().items()}, path)
    return path


def write_tiny_pickscore(folder: str | Path, seed: int = 0, *, size: str = "tiny") -> Path:
    """A folder with a transformers CLIPModel and its processor (complete CLIP tokenizer):
    tiny, or PickScore's CLIP-ViT-H-14 at its real size (``size="real"``)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from crdiff_search.tokenizers import clip_tokenizer

    _check_size(size)
    arch = _PICKSCORE[size]
    folder = Path(folder)
    config = CLIPConfig(
        text_config={
            "vocab_size": 49408,
            "max_position_embeddings": 77,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 49407,
            **arch["text"],
        },
        vision_config=arch["vision"],
        projection_dim=arch["projection_dim"],
    )
    image_size = arch["vision"]["image_size"]
    torch.manual_seed(seed)
    model = CLIPModel(config)
    if size == "tiny":  # the real size keeps transformers' own random init (faster to build)
        _randomise_(model, seed, scale=0.05)
    with torch.no_grad():
        model.logit_scale.fill_(4.6052)
    model.save_pretrained(folder)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        resample=3,
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=clip_tokenizer()).save_pretrained(
        folder
    )
    return folder


def write_synthetic_bert_vocab(path: str | Path) -> Path:
    """A 30,522-line vocab.txt with bert-base-uncased's special-token ids and a few hundred real
    word pieces (the rest are fillers): enough for tests, never for real scoring."""
    words = str.split(
        "a an the of on in with and at to is are one two three four red green blue yellow white "
        "black cube cubes sphere spheres circle circles square squares triangle table photo "
        "picture image cat dog house tree sky night day big small long many words prompt "
        "extremely repeated that must be truncated cafe"
    )
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-")
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += letters + [f"##{c}" for c in letters] + [w for w in words if w not in letters]
    tokens += [f"[filler{i}]" for i in range(30522 - len(tokens))]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


def _package_key(key: str) -> str:
    """Our ImageRewardModel key -> the ImageReward.pt key (inverse of map_state_dict)."""
    vision = {
        "embeddings.class_embedding": "cls_token",
        "embeddings.position_embedding": "pos_embed",
        "embeddings.patch_embedding.weight": "patch_embed.proj.weight",
        "embeddings.patch_embedding.bias": "patch_embed.proj.bias",
        "post_layernorm.weight": "norm.weight",
        "post_layernorm.bias": "norm.bias",
    }
    parts = {
        "layer_norm1": "norm1",
        "layer_norm2": "norm2",
        "self_attn.qkv": "attn.qkv",
        "self_attn.projection": "attn.proj",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
    }
    if key.startswith("vision."):
        rest = key[len("vision.") :]
        if rest in vision:
            return "blip.visual_encoder." + vision[rest]
        _, _, index, *name = rest.split(".")
        module, leaf = ".".join(name[:-1]), name[-1]
        return f"blip.visual_encoder.blocks.{index}.{parts[module]}.{leaf}"
    if key.startswith("text."):
        return "blip.text_encoder." + key[len("text.") :]
    return "mlp.layers." + key[len("head.") :]


def write_tiny_imagereward(
    folder: str | Path, seed: int = 0, *, size: str = "tiny"
) -> dict[str, Path]:
    """ImageReward.pt + med_config.json + a synthetic vocab.txt of a tiny ImageReward, or of
    one at ImageReward-v1.0's real size (``size="real"``: ViT-L/16 + BERT-base, 450M)."""
    from transformers import BlipTextConfig, BlipVisionConfig

    from crdiff_search.objectives.imagereward import HEAD_HIDDEN, ImageRewardModel

    _check_size(size)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    real = size == "real"
    v = REAL_IMAGEREWARD_VISION if real else TINY_IMAGEREWARD_VISION
    med = REAL_MED_CONFIG if real else TINY_MED_CONFIG
    vision = BlipVisionConfig(
        hidden_size=v["width"],
        intermediate_size=4 * v["width"],
        num_hidden_layers=v["depth"],
        num_attention_heads=v["heads"],
        image_size=v["image_size"],
        patch_size=v["patch"],
        layer_norm_eps=1e-6,
    )
    text = BlipTextConfig(
        vocab_size=med["vocab_size"],
        hidden_size=med["hidden_size"],
        intermediate_size=med["intermediate_size"],
        num_hidden_layers=med["num_hidden_layers"],
        num_attention_heads=med["num_attention_heads"],
        max_position_embeddings=med["max_position_embeddings"],
        encoder_hidden_size=v["width"],
        is_decoder=True,
    )
    torch.manual_seed(seed)
    model = ImageRewardModel(vision, text, HEAD_HIDDEN if real else (64, 32, 16, 8))
    if not real:  # the real size keeps transformers' own random init (faster to build)
        _randomise_(model, seed, scale=0.08)
    state = {_package_key(k): t for k, t in model.state_dict().items() if "position_ids" not in k}
    torch.save(state, folder / "ImageReward.pt")
    (folder / "med_config.json").write_text(json.dumps(med))
    vocab = write_synthetic_bert_vocab(folder / "vocab" / "vocab.txt")
    return {
        "checkpoint": folder / "ImageReward.pt",
        "med_config": folder / "med_config.json",
        "vocab": vocab,
    }
