"""Helpers shared by the scorers: device and dtype choice, weight lookup, image conversion."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from crdiff_search.errors import UsageError
from crdiff_search.names import DTYPES as DTYPE_NAMES

DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}

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
    value: str | os.PathLike | None,
    *,
    what: str,
    env_var: str,
    default: str | None,
    allow_patterns: Sequence[str] | None = None,
    how: str = "",
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
            return snapshot_download(text, allow_patterns=allow_patterns)
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


def mlp_head(in_features: int, hidden: Sequence[int] = (1024, 128, 64, 16)) -> torch.nn.Sequential:
    """The linear MLP shared by ImageReward and the LAION aesthetic predictor: linears without
    activations, dropout 0.2, 0.2, 0.1 after the first three. The linears sit at indices
    0, 2, 4, 6, 7 of ``layers``, as in both checkpoints."""
    from torch import nn

    sizes = [in_features, *hidden]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(hidden) - 1:
            layers.append(nn.Dropout((0.2, 0.2, 0.1)[i] if i < 3 else 0.0))
    layers.append(nn.Linear(sizes[-1], 1))
    return nn.Sequential(*layers)


def mlp_head_sizes(state: dict[str, torch.Tensor], prefix: str) -> tuple[int, tuple[int, ...]]:
    """(in_features, hidden sizes) of an :func:`mlp_head` from its state dict."""
    linears = sorted(
        int(k[len(prefix) :].split(".")[0])
        for k in state
        if k.startswith(prefix) and k.endswith(".weight")
    )
    if not linears:
        raise UsageError(f"no '{prefix}N.weight' tensors: not an MLP head checkpoint")
    shapes = [state[f"{prefix}{i}.weight"].shape for i in linears]
    return shapes[0][1], tuple(s[0] for s in shapes[:-1])


_OPEN_CLIP_HOW = (
    "pass pretrained=<a tag of open_clip.list_pretrained_tags_by_model(model)> with the weights "
    "in the Hugging Face cache (or online), or pretrained=/path/to/checkpoint "
    "(.safetensors or a torch state dict), or set ${env_var}"
)


def _open_clip_name(model: str | os.PathLike) -> str:
    import open_clip

    path = Path(model)
    if path.suffix == ".json":
        if not path.is_file():
            raise UsageError(f"open_clip model config {path} does not exist")
        open_clip.add_model_config(path)
        return path.stem
    if str(model) not in open_clip.list_models():
        raise UsageError(
            f"unknown open_clip architecture {str(model)!r}: use a name from "
            "open_clip.list_models() (e.g. ViT-L-14) or a model config .json file"
        )
    return str(model)


_OPEN_CLIP_CACHE: dict[tuple, tuple] = {}


@contextlib.contextmanager
def _quiet_root_warnings():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def load_open_clip(
    model: str | os.PathLike,
    pretrained: str | os.PathLike | None,
    *,
    env_var: str,
    device: torch.device,
    dtype: torch.dtype,
):
    """(model, preprocess, tokenizer) from open_clip, loaded once per process per settings.

    ``pretrained`` is an open_clip tag (weights from the hub cache) or a local checkpoint file;
    ``None`` reads ``$env_var``. Random weights are never used silently.
    """
    import open_clip

    from crdiff_search.tokenizers import check_tokenizer

    name = _open_clip_name(model)
    if pretrained is None:
        pretrained = os.environ.get(env_var)
    if pretrained is None:
        raise missing_weights(
            f"open_clip {name}",
            tried=[f"${env_var} (not set)", "pretrained argument (not given)"],
            how=_OPEN_CLIP_HOW.format(env_var=env_var),
        )
    key = (name, os.fspath(pretrained), str(device), dtype)
    if key in _OPEN_CLIP_CACHE:
        return _OPEN_CLIP_CACHE[key]
    path = Path(pretrained).expanduser()
    if path.is_file():
        # open_clip warns that the model is random; it is not for long (loaded just below).
        with _quiet_root_warnings():
            clip_model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
        state = load_state_dict(path)
        missing, unexpected = clip_model.load_state_dict(state, strict=False)
        # Buffers such as attn_mask/position_ids may be absent from exported checkpoints.
        missing = [k for k in missing if not k.endswith(("attn_mask", "position_ids"))]
        if missing or unexpected:
            raise UsageError(
                f"{path} does not match open_clip {name}: missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}"
            )
    else:
        tags = open_clip.list_pretrained_tags_by_model(name)
        if str(pretrained) not in tags:
            raise UsageError(
                f"pretrained={str(pretrained)!r} is neither a file nor a tag of {name}; "
                f"tags: {', '.join(tags) or 'none'}"
            )
        try:
            clip_model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=str(pretrained)
            )
        except Exception as err:
            raise missing_weights(
                f"open_clip {name} ({pretrained})",
                tried=[f"tag {pretrained!r}: {type(err).__name__}: {err}"],
                how=_OPEN_CLIP_HOW.format(env_var=env_var),
            ) from err
    tokenizer = open_clip.get_tokenizer(name)
    vocab = getattr(tokenizer, "encoder", None) or getattr(tokenizer, "tokenizer", None)
    if vocab is not None:
        expected = getattr(clip_model, "vocab_size", None) or 49408
        check_tokenizer(vocab, min_vocab=expected, what=f"open_clip tokenizer of {name}")
    clip_model.eval().requires_grad_(False).to(device, dtype)
    _OPEN_CLIP_CACHE[key] = (clip_model, preprocess, tokenizer)
    return _OPEN_CLIP_CACHE[key]
