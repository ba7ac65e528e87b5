"""A pixel-space text-to-image pipeline, called like ``StableDiffusionPipeline``.

There is no VAE: the UNet denoises RGB pixels directly, which is what makes a model small enough
to train on a laptop CPU. Everything else is the standard diffusers machinery (a CLIP tokenizer
and text encoder, a ``UNet2DConditionModel``, a multistep scheduler), saved and loaded with
``save_pretrained`` / ``from_pretrained``.

Example::

    pipe = ScenePipeline.from_pretrained(folder)
    images = pipe(prompt=["a red circle"], height=32, width=32, num_inference_steps=8,
                  guidance_scale=3.0, generator=[torch.Generator().manual_seed(0)]).images
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from crdiff_search.errors import UsageError

OUTPUT_TYPES = ("pil", "np", "pt")


class ScenePipeline(DiffusionPipeline):
    """Tokenizer -> CLIPTextModel -> pixel-space UNet2DConditionModel, with classifier-free guidance."""

    model_cpu_offload_seq = "text_encoder->unet"

    def __init__(self, tokenizer, text_encoder, unet, scheduler):
        super().__init__()
        self.register_modules(
            tokenizer=tokenizer, text_encoder=text_encoder, unet=unet, scheduler=scheduler
        )
        # Pixel space: one image pixel per UNet input pixel.
        self.vae_scale_factor = 1

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this (one halving per down block but the last)."""
        return 2 ** (len(self.unet.config.block_out_channels) - 1)

    def encode_prompt(self, prompts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        return self.text_encoder(tokens.input_ids.to(self.text_encoder.device))[0]

    def _check(self, prompts, height, width, steps, generator) -> None:
        m = self.size_multiple
        if height % m or width % m or height < m or width < m:
            raise UsageError(
                f"height and width must be positive multiples of {m}, got {width}x{height}"
            )
        if steps < 1:
            raise UsageError(f"num_inference_steps must be >= 1, got {steps}")
        if isinstance(generator, list) and len(generator) != len(prompts):
            raise UsageError(
                f"got {len(generator)} generators for {len(prompts)} images: pass one per image"
            )

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | Sequence[str],
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 8,
        guidance_scale: float = 3.0,
        negative_prompt: str | Sequence[str] | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ):
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        prompts = [p for p in prompts for _ in range(num_images_per_prompt)]
        size = self.unet.config.sample_size
        height = height or size
        width = width or size
        if output_type not in OUTPUT_TYPES:
            raise UsageError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        self._check(prompts, height, width, num_inference_steps, generator)
        device, dtype = self.unet.device, self.unet.dtype

        cond = self.encode_prompt(prompts)
        guided = guidance_scale > 1.0
        if guided:
            if negative_prompt is None:
                negative = [""] * len(prompts)
            elif isinstance(negative_prompt, str):
                negative = [negative_prompt] * len(prompts)
            else:
                negative = [p for p in negative_prompt for _ in range(num_images_per_prompt)]
            cond = torch.cat([self.encode_prompt(negative), cond])
        cond = cond.to(dtype)

        shape = (len(prompts), self.unet.config.in_channels, height, width)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        latents = latents.to(device=device, dtype=dtype) * self.scheduler.init_noise_sigma

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        for i, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
            model_in = torch.cat([latents] * 2) if guided else latents
            model_in = self.scheduler.scale_model_input(model_in, t)
            noise = self.unet(model_in, t, encoder_hidden_states=cond).sample
            if guided:
                uncond, text = noise.chunk(2)
                noise = uncond + guidance_scale * (text - uncond)
            latents = self.scheduler.step(noise, t, latents).prev_sample
            if callback_on_step_end is not None:
                local = {"latents": latents}
                out = callback_on_step_end(
                    self, i, t, {k: local[k] for k in callback_on_step_end_tensor_inputs}
                )
                latents = (out or {}).get("latents", latents)

        images = (latents / 2 + 0.5).clamp(0, 1)
        if output_type == "pt":
            result = images
        else:
            result = images.permute(0, 2, 3, 1).float().cpu().numpy()
            if output_type == "pil":
                result = [Image.fromarray(np.round(a * 255).astype(np.uint8)) for a in result]
        if not return_dict:
            return (result,)
        return ImagePipelineOutput(images=result)
