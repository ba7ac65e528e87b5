"""The testbed model's architecture: configs and a builder for fresh, untrained components."""

from __future__ import annotations

from pathlib import Path

import torch

TEXT_MAX_LENGTH = 16  # the longest caption of the grammar is 10 tokens with BOS/EOS

# Cross-attention in the two lowest down blocks, the mid block and the two lowest up blocks, so
# that the "down", "mid" and "up" groups of every partition hold attention and feed-forward
# weights; the two top resolutions have none, which keeps sampling at 2x the training size cheap.
UNET_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": [
        "DownBlock2D",
        "DownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
    ],
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "up_block_types": [
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "UpBlock2D",
        "UpBlock2D",
    ],
    "block_out_channels": [32, 48, 64, 96],
    "layers_per_block": 1,
    "attention_head_dim": 8,
    "norm_num_groups": 8,
    "cross_attention_dim": 64,
}

TEXT_CONFIG = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": TEXT_MAX_LENGTH,
    "vocab_size": 49408,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 49407,
    "projection_dim": 64,
}

# The cosine schedule ends at alpha_bar ~ 2e-9: an epsilon model's first x0 estimates are noise
# amplified ~2e4 times, so pixel-space sampling needs them clipped to the image range
# (thresholding); without it, few-step DPM-Solver++ returns noise.
SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "prediction_type": "epsilon",
    "algorithm_type": "dpmsolver++",
    "solver_order": 2,
    "lower_order_final": True,
    "thresholding": True,
    "dynamic_thresholding_ratio": 0.995,
    "sample_max_value": 1.0,
}


def build_pipeline(resolution: int, *, seed: int = 0, tokenizer_dir: str | Path | None = None):
    """A fresh (random-init) :class:`ScenePipeline` for ``resolution`` x ``resolution`` images."""
    from diffusers import DPMSolverMultistepScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from crdiff_search.testbed.pipeline import ScenePipeline
    from crdiff_search.tokenizers import clip_tokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=resolution, **UNET_CONFIG)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
    tokenizer = clip_tokenizer(tokenizer_dir)
    tokenizer.model_max_length = TEXT_MAX_LENGTH
    scheduler = DPMSolverMultistepScheduler(**SCHEDULER_CONFIG)
    return ScenePipeline(tokenizer, text_encoder, unet, scheduler)
