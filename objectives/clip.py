"""CLIP score (Hessel et al., 2021, as used for text-to-image evaluation): 100 * max(cos, 0)
between the CLIP image embedding and the prompt's text embedding, with open_clip.

The architecture is an open_clip name (default ViT-L-14) or a model config .json; the weights
are an open_clip pretrained tag (default ``openai``, read from the Hugging Face cache) or a
local checkpoint (``pretrained=/path`` or ``$CRDIFF_CLIP_CHECKPOINT``). The image transform is
open_clip's evaluation transform for that model (bicubic resize of the shorter side, centre
crop, RGB, normalisation).

Example::

    clip = ClipScoreObjective(model="ViT-L-14", pretrained="openai")
    clip.score(images, prompts)   # e.g. array([31.2, 28.7])
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from crdiff_search.errors import UsageError
from crdiff_search.objectives._common import (
    batches,
    check_batch,
    load_open_clip,
    pick_device,
    pick_dtype,
    to_pil,
)
from crdiff_search.objectives.base import Objective

ENV_CHECKPOINT = "CRDIFF_CLIP_CHECKPOINT"


class ClipScoreObjective(Objective):
    """CLIP score of each (image, prompt) pair, in [0, 100]; higher is better."""

    name = "clip"

    def __init__(
        self,
        *,
        model: str | os.PathLike = "ViT-L-14",
        pretrained: str | os.PathLike | None = "openai",
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 32,
    ):
        if batch_size < 1:
            raise UsageError(f"batch_size must be >= 1, got {batch_size}")
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        self.batch_size = batch_size
        self.model, self.transform, self.tokenizer = load_open_clip(
            model, pretrained, env_var=ENV_CHECKPOINT, device=self.device, dtype=self.dtype
        )

    def preprocess(self, image: Any) -> torch.Tensor:
        return self.transform(to_pil(image))

    @torch.inference_mode()
    def embed(self, images: Sequence[Any], prompts: Sequence[str]):
        """L2-normalised (image, text) embeddings, fp32."""
        pixels = torch.stack([self.preprocess(im) for im in images]).to(self.device, self.dtype)
        tokens = self.tokenizer(list(prompts)).to(self.device)
        image = self.model.encode_image(pixels).float()
        text = self.model.encode_text(tokens).float()
        return (
            torch.nn.functional.normalize(image, dim=-1),
            torch.nn.functional.normalize(text, dim=-1),
        )

    def score(self, images: Sequence[Any], prompts: Sequence[str]) -> np.ndarray:
        check_batch(images, prompts)
        out = np.empty(len(images), dtype=np.float64)
        for part in batches(len(images), self.batch_size):
            image, text = self.embed(images[part], prompts[part])
            cos = (image * text).sum(-1)
            out[part] = (100.0 * cos.clamp(min=0)).double().cpu().numpy()
        return out
