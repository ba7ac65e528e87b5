"""Tiny random-init models built from configs, for tests and benchmarks.

Nothing here touches the network. The real-size configs (SD1.5, SD2.1, SDXL) are the published
``unet/config.json`` values; build them on the ``meta`` device when only the module tree matters.
"""

from __future__ import annotations

import copy

import torch

SD15_UNET_CONFIG = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "up_block_types": [
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ],
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}

SD21_UNET_CONFIG = dict(
    SD15_UNET_CONFIG,
    sample_size=96,
    cross_attention_dim=1024,
    attention_head_dim=[5, 10, 20, 20],
    use_linear_projection=True,
)

SDXL_UNET_CONFIG = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [320, 640, 1280],
    "layers_per_block": 2,
    "transformer_layers_per_block": [1, 2, 10],
    "attention_head_dim": [5, 10, 20],
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}

TINY_UNET_CONFIG = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [32, 64],
    "layers_per_block": 2,
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}


def sd15_unet_config() -> dict:
    return copy.deepcopy(SD15_UNET_CONFIG)


def sd21_unet_config() -> dict:
    return copy.deepcopy(SD21_UNET_CONFIG)


def sdxl_unet_config() -> dict:
    return copy.deepcopy(SDXL_UNET_CONFIG)


def tiny_unet_config() -> dict:
    return copy.deepcopy(TINY_UNET_CONFIG)


def unet_from_config(config: dict, *, seed: int = 0, device: str | torch.device = "cpu"):
    """A random-init ``UNet2DConditionModel``; ``device="meta"`` builds the module tree only."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    with torch.device(device):
        return UNet2DConditionModel(**config).eval()


def tiny_unet(seed: int = 0):
    return unet_from_config(tiny_unet_config(), seed=seed)


def tiny_dit(seed: int = 0, num_layers: int = 6):
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(seed)
    return DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=num_layers,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_zero",
    ).eval()


def tiny_pixart(seed: int = 0, num_layers: int = 6):
    from diffusers import PixArtTransformer2DModel

    torch.manual_seed(seed)
    return PixArtTransformer2DModel(
        sample_size=8,
        num_layers=num_layers,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=3,
        caption_channels=32,
        in_channels=4,
        cross_attention_dim=24,
        out_channels=8,
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
    ).eval()


def tiny_sd3(seed: int = 0, num_layers: int = 4, dual_attention_layers: tuple = (0,)):
    """A tiny SD3(.5)-style MMDiT: joint attention blocks, SD3.5's second attention in the
    ``dual_attention_layers``, the last block context-pre-only."""
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    return SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        num_layers=num_layers,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        caption_projection_dim=16,
        pooled_projection_dim=8,
        out_channels=4,
        dual_attention_layers=tuple(dual_attention_layers),
    ).eval()


def tiny_flux(seed: int = 0, num_layers: int = 2, num_single_layers: int = 3):
    """A tiny Flux transformer: double-stream blocks, then single-stream ones."""
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=num_layers,
        num_single_layers=num_single_layers,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        pooled_projection_dim=8,
        axes_dims_rope=(2, 2, 4),
    ).eval()


def tiny_sd_pipeline(seed: int = 0):
    """A complete ``StableDiffusionPipeline`` of tiny random-init parts (CPU, a few MB).

    The tokenizer is the full CLIP BPE (built offline), so prompts tokenize as with real models.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel

    from crdiff_search.tokenizers import clip_tokenizer

    unet = tiny_unet(seed)
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        norm_num_groups=32,
    ).eval()
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
            hidden_size=32,
            intermediate_size=37,
            layer_norm_eps=1e-05,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=49408,
        )
    ).eval()
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# -- whole pipelines at their real sizes (random weights), for benchmarks ---------------------

# The published vae/config.json of SD1.5 and SDXL (the same architecture; SDXL's scaling factor
# and its fp32 upcast differ) and their text encoders' config.json values.
_VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
}
_CLIP_L_TEXT = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}
_CLIP_BIGG_TEXT = {
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "hidden_act": "gelu",
    "projection_dim": 1280,
}
_TINY_TEXT = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "projection_dim": 32,
}
_TINY_VAE = dict(
    _VAE_CONFIG,
    down_block_types=["DownEncoderBlock2D"] * 2,
    up_block_types=["UpDecoderBlock2D"] * 2,
    block_out_channels=[32, 64],
    layers_per_block=1,
)
TINY_SDXL_UNET_CONFIG = dict(
    TINY_UNET_CONFIG,
    cross_attention_dim=64,  # the two text encoders' widths, concatenated
    addition_embed_type="text_time",
    addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=6 * 8 + 32,  # 6 time ids + the pooled text embedding
)  # fmt: skip
PIPELINE_ARCHES = ("sd15", "sdxl", "tiny-sd", "tiny-sdxl")


def _text_encoder(arch: dict, *, projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
        pad_token_id=49407, layer_norm_eps=1e-5, **arch,
    )  # fmt: skip
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return cls(config).eval()


def build_pipeline(
    arch: str,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
):
    """A complete text-to-image pipeline of ``arch`` with random weights, built on ``device``.

    ``sd15`` and ``sdxl`` are the published architectures at their real sizes (SD1.5: UNet 860M,
    VAE 84M, CLIP-L text 123M; SDXL: UNet 2.57B, VAE 84M, CLIP-L and OpenCLIP-bigG text 817M),
    ``tiny-sd`` and ``tiny-sdxl`` the same code paths at test size (SDXL's two text encoders and
    ``add_time_ids`` included). Modules are created directly on ``device`` (fast default init on
    a GPU) and cast to ``dtype``. The tokenizers are complete CLIP tokenizers built offline.
    """
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )

    from crdiff_search.tokenizers import clip_tokenizer

    if arch not in PIPELINE_ARCHES:
        raise ValueError(f"unknown pipeline architecture {arch!r}; valid: {PIPELINE_ARCHES}")
    xl = arch in ("sdxl", "tiny-sdxl")
    real = arch in ("sd15", "sdxl")
    unet_config = {
        "sd15": SD15_UNET_CONFIG,
        "sdxl": SDXL_UNET_CONFIG,
        "tiny-sd": TINY_UNET_CONFIG,
        "tiny-sdxl": TINY_SDXL_UNET_CONFIG,
    }[arch]
    vae_config = dict(_VAE_CONFIG if real else _TINY_VAE)
    vae_config["scaling_factor"] = 0.13025 if xl else 0.18215
    vae_config["force_upcast"] = xl
    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet2DConditionModel(**copy.deepcopy(unet_config)).eval()
        vae = AutoencoderKL(**vae_config).eval()
        text_encoder = _text_encoder(_CLIP_L_TEXT if real else _TINY_TEXT, projection=False)
        text_encoder_2 = (
            _text_encoder(_CLIP_BIGG_TEXT if real else _TINY_TEXT, projection=True) if xl else None
        )
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1,
    )  # fmt: skip
    tokenizer = clip_tokenizer()
    if xl:
        pipe = StableDiffusionXLPipeline(
            vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
            tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet, scheduler=scheduler,
        )  # fmt: skip
    else:
        pipe = StableDiffusionPipeline(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
            scheduler=scheduler, safety_checker=None, feature_extractor=None,
            requires_safety_checker=False,
        )  # fmt: skip
    pipe = pipe.to(dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe
