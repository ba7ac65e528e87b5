"""Helpers shared by the scorers: device and dtype choice, weight lookup, image conversion."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from crdiff_search.errors import UsageError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# OpenAI CLIP's normalisation, used by CLIP, BLIP/ImageReward and the aesthetic predictor.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class MissingWeightsError(UsageError):
    """Model weights could not be found locally (and may not be downloaded)."""


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"``: the first CUDA device when there is one, else the CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise UsageError(f"bad device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from err


def pick_dtype(
    device: torch.device, dtype: str | torch.dtype | None = None, *, half_ok: bool = True
) -> torch.dtype:
    """``None``/``"auto"``: bf16 (or fp16 on GPUs without bf16) on CUDA when the model allows
    half precision, fp32 otherwise. CPU half precision is slow and inexact, so auto never picks it.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        if device.type != "cuda" or not half_ok:
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype not in DTYPES:
        raise UsageError(f"bad dtype {dtype!r}; valid: auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def missing_weights(what: str, *, tried: Sequence[str], how: str) -> MissingWeightsError:
    lines = "\n".join(f"  - {t}" for t in tried)
    return MissingWeightsError(
        f"{what}: weights not found. Tried:\n{lines}\nTo provide them: {how}"
    )


def _hub_file(repo_id: str, filename: str) -> Path | None:
    """The file from the Hugging Face cache, or downloaded when the hub is allowed; None if not."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename))
    except Exception:
        return None


def resolve_file(
    value: str | os.PathLike | None,
    *,
    what: str,
    env_var: str,
    hub: Sequence[tuple[str, str]] = (),
    how: str = "",
) -> Path:
    """Find a weight file: an explicit path (or ``"org/repo:filename"``), then ``$env_var``,
    then the default hub file (from the local cache, or downloaded when online).

    Raises :class:`MissingWeightsError` naming every place tried and how to provide the file.
    """
    tried: list[str] = []
    candidates: list[tuple[str, str | os.PathLike]] = []
    if value is not None:
        candidates.append(("argument", value))
    elif os.environ.get(env_var):
        candidates.append((f"${env_var}", os.environ[env_var]))
    for source, candidate in candidates:
        text = os.fspath(candidate)
        path = Path(text).expanduser()
        if path.is_file():
            return path
        if ":" in text and not path.exists() and "/" in text.split(":", 1)[0]:
            repo, filename = text.split(":", 1)
            found = _hub_file(repo, filename)
            if found is not None:
                return found
            tried.append(f"{source}: hub file {filename!r} of {repo!r} (not in the cache)")
        else:
            tried.append(f"{source}: {text} (no such file)")
    if value is None and not os.environ.get(env_var):
        for repo, filename in hub:
            found = _hub_file(repo, filename)
            if found is not None:
                return found
            tried.append(f"default: hub file {filename!r} of {repo!r} (not in the cache)")
    if value is None and not os.environ.get(env_var):
        tried.insert(0, f"${env_var} (not set)")
    raise missing_weights(
        what,
        tried=tried,
        how=how
        or f"pass a local file path, set ${env_var}, or fill the Hugging Face cache while online",
    )


def resolve_model_dir(
    value: str | os.PathLike | None, *, what: str, env_var: str, default: str | None, how: str = ""
) -> str:
    """A local model folder, or a hub id whose snapshot is in the cache (or downloadable)."""
    tried: list[str] = []
    source, text = "argument", value
    if text is None and os.environ.get(env_var):
        source, text = f"${env_var}", os.environ[env_var]
    if text is None:
        source, text = "default", default
        tried.append(f"${env_var} (not set)")
    if text is None:
        raise missing_weights(what, tried=tried, how=how or f"pass a folder or set ${env_var}")
    text = os.fspath(text)
    if Path(text).expanduser().is_dir():
        return str(Path(text).expanduser())
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        from huggingface_hub import snapshot_download

        try:
            return snapshot_download(text)
        except Exception as err:
            tried.append(f"{source}: hub id {text!r} ({type(err).__name__}: not in the cache)")
    else:
        tried.append(f"{source}: {text} (no such folder)")
    raise missing_weights(
        what,
        tried=tried,
        how=how
        or f"pass a local folder, set ${env_var}, or fill the Hugging Face cache while online",
    )


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A plain state dict from safetensors or a torch file (``weights_only=True``)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UsageError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state


def to_pil(image: Any) -> Image.Image:
    """A PIL image from PIL, a CHW (or 1xCHW) float tensor in [0, 1], or an HWC uint8 array.

    Tensors are quantised to 8 bits (round to nearest), so a tensor and the PNG saved from it
    score the same.
    """
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, torch.Tensor):
        t = image.detach().to("cpu", torch.float32)
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim != 3 or t.shape[0] not in (1, 3, 4):
            raise ValueError(f"expected a CHW image tensor, got shape {tuple(image.shape)}")
        array = (t.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        return Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
        return Image.fromarray(image)
    raise TypeError(f"cannot score an image of type {type(image).__name__}: use PIL or a tensor")


def batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, max(1, size)):
        yield slice(start, min(n, start + size))


def check_batch(images: Sequence[Any], prompts: Sequence[str] | None) -> None:
    if prompts is not None and len(images) != len(prompts):
        raise ValueError(
            f"got {len(images)} images but {len(prompts)} prompts: pass one prompt per image"
        )
