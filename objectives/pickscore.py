"""PickScore (Kirstain et al., 2023): a CLIP-H/14 fine-tuned on human preferences; the score of
an (image, prompt) pair is ``logit_scale.exp() * cos(image embedding, text embedding)``.

Loaded with transformers' ``CLIPModel`` and the processor of the base CLIP model, from local
folders or hub ids (``yuvalkirstain/PickScore_v1`` and
``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` by default; ``$CRDIFF_PICKSCORE_MODEL`` and
``$CRDIFF_PICKSCORE_PROCESSOR`` override them). Prompts are padded/cut to 77 tokens.

Example::

    pick = PickScoreObjective(model="/models/PickScore_v1", processor="/models/CLIP-ViT-H-14")
    pick.score(images, prompts)   # e.g. array([21.7, 22.3])
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
    missing_weights,
    pick_device,
    pick_dtype,
    resolve_model_dir,
    to_pil,
)
from crdiff_search.objectives.base import Objective
from crdiff_search.tokenizers import CLIP_VOCAB_SIZE, check_tokenizer

DEFAULT_MODEL = "yuvalkirstain/PickScore_v1"
DEFAULT_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
ENV_MODEL = "CRDIFF_PICKSCORE_MODEL"
ENV_PROCESSOR = "CRDIFF_PICKSCORE_PROCESSOR"
MAX_TOKENS = 77


def _features(output) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output holds the projected features.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class PickScoreObjective(Objective):
    """PickScore of each (image, prompt) pair (about 18-24 for real images); higher is better."""

    name = "pickscore"

    def __init__(
        self,
        *,
        model: str | os.PathLike | None = None,
        processor: str | os.PathLike | None = None,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 16,
    ):
        from transformers import AutoProcessor, CLIPModel

        if batch_size < 1:
            raise UsageError(f"batch_size must be >= 1, got {batch_size}")
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        self.batch_size = batch_size
        model_dir = resolve_model_dir(
            model,
            what="PickScore model",
            env_var=ENV_MODEL,
            default=DEFAULT_MODEL,
            allow_patterns=["*.json", "*.safetensors"],
        )
        processor_dir = resolve_model_dir(
            processor,
            what="PickScore processor (CLIP-ViT-H-14 tokenizer and image processor)",
            env_var=ENV_PROCESSOR,
            default=DEFAULT_PROCESSOR,
            allow_patterns=["*.json", "*.txt"],
        )
        try:
            self.processor = AutoProcessor.from_pretrained(processor_dir)
            self.model = CLIPModel.from_pretrained(model_dir, dtype=self.dtype)
        except OSError as err:
            raise missing_weights(
                "PickScore",
                tried=[f"{model_dir}, {processor_dir}: {err}"],
                how=f"pass model= and processor= local folders, or set ${ENV_MODEL}/${ENV_PROCESSOR}",
            ) from err
        check_tokenizer(
            self.processor.tokenizer, min_vocab=CLIP_VOCAB_SIZE, what="PickScore tokenizer"
        )
        self.model.eval().requires_grad_(False).to(self.device)

    def preprocess(self, images: Sequence[Any]) -> torch.Tensor:
        inputs = self.processor(
            images=[to_pil(im).convert("RGB") for im in images], return_tensors="pt"
        )
        return inputs["pixel_values"]

    @torch.inference_mode()
    def score(self, images: Sequence[Any], prompts: Sequence[str]) -> np.ndarray:
        check_batch(images, prompts)
        out = np.empty(len(images), dtype=np.float64)
        for part in batches(len(images), self.batch_size):
            pixels = self.preprocess(images[part]).to(self.device, self.dtype)
            text = self.processor(
                text=list(prompts[part]),
                padding="max_length",
                truncation=True,
                max_length=MAX_TOKENS,
                return_tensors="pt",
            ).to(self.device)
            image_emb = _features(self.model.get_image_features(pixel_values=pixels)).float()
            text_emb = _features(
                self.model.get_text_features(
                    input_ids=text["input_ids"], attention_mask=text["attention_mask"]
                )
            ).float()
            image_emb = torch.nn.functional.normalize(image_emb, dim=-1)
            text_emb = torch.nn.functional.normalize(text_emb, dim=-1)
            logit_scale = self.model.logit_scale.float().exp()
            out[part] = (logit_scale * (image_emb * text_emb).sum(-1)).double().cpu().numpy()
        return out
