"""Training the testbed model from scratch on rendered scenes (CPU-sized).

Every batch is freshly rendered from a seeded stream of captions and layouts, so there is no
dataset to store and the run is reproducible from its seed. The loss is the usual noise
prediction MSE with min-SNR weighting (gamma 5), which converges faster for small budgets; the
saved weights are an exponential moving average of the trained ones. The pipeline folder is
rewritten every ``save_every`` steps, so a stopped run still leaves usable weights.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from crdiff_search.errors import UsageError
from crdiff_search.testbed import scenes


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run; recorded next to the weights as ``training.json``."""

    resolution: int = 32
    steps: int = 4000
    batch_size: int = 32
    lr: float = 6e-4
    warmup: int = 100
    min_lr_ratio: float = 0.1
    ema_decay: float = 0.999
    caption_dropout: float = 0.1
    max_objects: int = 4
    snr_gamma: float = 5.0
    seed: int = 0
    save_every: int = 250
    log_every: int = 25
    max_minutes: float | None = None
    save_dtype: str = "float16"
    threads: int = 1

    def validate(self) -> None:
        if not 8 <= self.resolution <= 256 or self.resolution % 8:
            raise UsageError(
                f"resolution must be a multiple of 8 in [8, 256], got {self.resolution}"
            )
        for name in ("steps", "batch_size", "save_every", "log_every", "threads"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.save_dtype not in ("float16", "float32"):
            raise UsageError(f"save_dtype must be float16 or float32, got {self.save_dtype!r}")


def _lr_factor(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine


def _batch(rng: np.random.Generator, cfg: TrainConfig) -> tuple[torch.Tensor, list[str]]:
    images, captions = [], []
    for _ in range(cfg.batch_size):
        scene = scenes.sample_scene(rng, max_objects=cfg.max_objects)
        image = scenes.render(scene, cfg.resolution, cfg.resolution, seed=int(rng.integers(2**31)))
        images.append(np.asarray(image, dtype=np.float32))
        captions.append("" if rng.random() < cfg.caption_dropout else scene.caption)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2) / 127.5 - 1.0
    return x, captions


def save_pipeline(pipe, out: Path, cfg: TrainConfig, info: dict) -> None:
    """Write the pipeline folder (weights in ``cfg.save_dtype``) and ``training.json``."""
    dtype = getattr(torch, cfg.save_dtype)
    saved = copy.deepcopy(pipe).to(dtype=dtype)
    saved.save_pretrained(out, safe_serialization=True)
    (out / "training.json").write_text(json.dumps({"config": asdict(cfg), **info}, indent=2))


def train(cfg: TrainConfig, out: str | Path, *, log=print):
    """Train from scratch and write the pipeline folder to ``out``; returns the final info dict."""
    from diffusers import DDPMScheduler

    from crdiff_search.testbed.model import build_pipeline

    cfg.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    # Inference code earlier in the same process (a search worker, say) may have turned autograd off.
    torch.set_grad_enabled(True)
    pipe = build_pipeline(cfg.resolution, seed=cfg.seed)
    unet, text_encoder, tokenizer = pipe.unet, pipe.text_encoder, pipe.tokenizer
    noise_sched = DDPMScheduler.from_config(pipe.scheduler.config)
    alphas = noise_sched.alphas_cumprod
    snr = alphas / (1 - alphas)
    weights = torch.clamp(snr, max=cfg.snr_gamma) / snr  # min-SNR-gamma for epsilon prediction

    ema = copy.deepcopy(pipe)
    ema_params = list(ema.unet.parameters()) + list(ema.text_encoder.parameters())
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(cfg, s))

    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    unet.train()
    text_encoder.train()
    start = time.time()
    losses: list[float] = []
    info: dict = {}
    step = 0
    for step in range(1, cfg.steps + 1):
        x0, captions = _batch(rng, cfg)
        ids = tokenizer(
            captions,
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (len(x0),), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        xt = noise_sched.add_noise(x0, noise, t)
        pred = unet(xt, t, encoder_hidden_states=text_encoder(ids)[0]).sample
        loss = ((pred - noise) ** 2).mean(dim=(1, 2, 3))
        loss = (loss * weights[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema_params, params, strict=True):
                e.lerp_(p, 1 - decay)
        losses.append(loss.item())
        elapsed = time.time() - start
        out_of_time = cfg.max_minutes is not None and elapsed > 60 * cfg.max_minutes
        if step % cfg.log_every == 0 or step == cfg.steps or out_of_time:
            recent = float(np.mean(losses[-cfg.log_every :]))
            log(
                f"step {step}/{cfg.steps} loss {recent:.4f} lr {sched.get_last_lr()[0]:.2e} "
                f"elapsed {elapsed / 60:.1f} min"
            )
        if step % cfg.save_every == 0 or step == cfg.steps or out_of_time:
            info = {
                "steps_done": step,
                "minutes": round(elapsed / 60, 2),
                "final_loss": round(float(np.mean(losses[-cfg.log_every :])), 5),
                "stopped_early": bool(out_of_time and step < cfg.steps),
            }
            save_pipeline(ema, out, cfg, info)
        if out_of_time:
            break
    return info
