"""LAION improved aesthetic predictor (Schuhmann, 2022): a linear MLP on the L2-normalised CLIP
ViT-L/14 image embedding, predicting a 1-10 rating. The prompt is not used.

Weights: the predictor's file (``sac+logos+ava1-l14-linearMSE.pth``, a plain state dict of
``layers.*``) from ``weights=/path`` or ``$CRDIFF_AESTHETIC_WEIGHTS``; the CLIP model as for
the ``clip`` scorer (``clip_model``, ``clip_pretrained``; OpenAI's ViT-L/14 by default).

Example::

    aesthetic = AestheticObjective(weights="sac+logos+ava1-l14-linearMSE.pth")
    aesthetic.score(images, prompts)   # e.g. array([5.8, 6.1])
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
    load_state_dict,
    mlp_head,
    mlp_head_sizes,
    pick_device,
    pick_dtype,
    resolve_file,
    to_pil,
)
from crdiff_search.objectives.base import Objective

ENV_WEIGHTS = "CRDIFF_AESTHETIC_WEIGHTS"
ENV_CLIP_CHECKPOINT = "CRDIFF_CLIP_CHECKPOINT"
_HOW = (
    "download sac+logos+ava1-l14-linearMSE.pth from the LAION improved-aesthetic-predictor "
    f"repository and pass weights=/path/to/it, or set ${ENV_WEIGHTS}"
)


class AestheticObjective(Objective):
    """LAION aesthetic score of each image (about 1-10); higher is better."""

    name = "aesthetic"

    def __init__(
        self,
        *,
        weights: str | os.PathLike | None = None,
        clip_model: str | os.PathLike = "ViT-L-14",
        clip_pretrained: str | os.PathLike | None = "openai",
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 32,
    ):
        if batch_size < 1:
            raise UsageError(f"batch_size must be >= 1, got {batch_size}")
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        self.batch_size = batch_size
        path = resolve_file(
            weights, what="aesthetic predictor weights", env_var=ENV_WEIGHTS, how=_HOW
        )
        state = load_state_dict(path)
        in_features, hidden = mlp_head_sizes(state, "layers.")
        self.head = mlp_head(in_features, hidden)
        self.head.load_state_dict({k[len("layers.") :]: v for k, v in state.items()}, strict=True)
        self.head.eval().requires_grad_(False).to(self.device, torch.float32)
        self.clip, self.transform, _ = load_open_clip(
            clip_model,
            clip_pretrained,
            env_var=ENV_CLIP_CHECKPOINT,
            device=self.device,
            dtype=self.dtype,
        )
        embed_dim = self.clip.visual.output_dim
        if embed_dim != in_features:
            raise UsageError(
                f"the aesthetic MLP takes {in_features}-d embeddings but CLIP {clip_model} "
                f"gives {embed_dim}-d ones: use the CLIP model it was trained on (ViT-L-14)"
            )

    def preprocess(self, image: Any) -> torch.Tensor:
        return self.transform(to_pil(image))

    @torch.inference_mode()
    def score(self, images: Sequence[Any], prompts: Sequence[str] | None = None) -> np.ndarray:
        check_batch(images, prompts)
        out = np.empty(len(images), dtype=np.float64)
        for part in batches(len(images), self.batch_size):
            pixels = torch.stack([self.preprocess(im) for im in images[part]])
            embedding = self.clip.encode_image(pixels.to(self.device, self.dtype)).float()
            embedding = torch.nn.functional.normalize(embedding, dim=-1)
            out[part] = self.head(embedding).squeeze(-1).double().cpu().numpy()
        return out
