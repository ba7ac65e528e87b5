"""Loading diffusers pipelines from a hub id, a local folder or the shipped testbed, and
generating images with common random numbers.

Every candidate in a search is generated from the same prompts with the same per-image seeds
(:func:`generate_images`), so differences between candidates are not sampling noise.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from crdiff_search.errors import ModelSourceError, UsageError
from crdiff_search.names import DTYPES as DTYPE_NAMES

DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}
_MIN_VOCAB = {
    "CLIPTokenizer": 49408,
    "CLIPTokenizerFast": 49408,
    "T5Tokenizer": 32000,
    "T5TokenizerFast": 32000,
}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype]
    except KeyError:
        raise UsageError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}") from None


def resolve_device(device: str | None) -> torch.device:
    from crdiff_search.names import check_device

    device = check_device(device or "auto")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_pipeline(source: str, *, dtype: str | torch.dtype = "float32", device: str | None = "cpu"):
    """Load a text-to-image pipeline.

    ``source`` is ``"testbed"`` (the tiny model shipped with this package), a local folder saved
    with ``save_pretrained``, or a hub id (needs the network or a filled Hugging Face cache).
    Weights load only from safetensors; tokenizers are checked for completeness.
    """
    torch_dtype = resolve_dtype(dtype)
    dev = resolve_device(device)
    if source == "testbed":
        from crdiff_search import testbed

        pipe = testbed.load_pipeline(device=dev, dtype=torch_dtype)
    else:
        from diffusers import DiffusionPipeline

        local = Path(source).expanduser()
        if local.exists() and not (local / "model_index.json").is_file():
            raise ModelSourceError(
                f"model folder {str(local)!r} has no model_index.json: save the pipeline with "
                "`pipe.save_pretrained(folder)` or pass a hub id"
            )
        if _pipeline_class_name(local) == "ScenePipeline":
            # A testbed pipeline saved to a folder (by `crdiff testbed train` or a copy of the
            # shipped one): diffusers does not know its class, our package does.
            from crdiff_search import testbed

            pipe = testbed.load_pipeline(device=dev, dtype=torch_dtype, folder=local)
            check_pipeline_tokenizers(pipe)
            return pipe
        try:
            pipe = DiffusionPipeline.from_pretrained(
                str(local) if local.exists() else source,
                dtype=torch_dtype,
                use_safetensors=True,
            )
        except (OSError, ValueError) as exc:
            offline = os.environ.get("HF_HUB_OFFLINE") == "1"
            hint = (
                "the hub is offline (HF_HUB_OFFLINE=1): download the model on a machine with "
                "network access and pass its local folder, or fill the Hugging Face cache "
                "(HF_HOME)"
                if offline
                else "check the hub id or the folder path"
            )
            raise ModelSourceError(f"cannot load model {source!r}: {exc}\nHint: {hint}") from exc
        pipe.to(dev)
    check_pipeline_tokenizers(pipe)
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    return pipe


def _pipeline_class_name(folder: Path) -> str | None:
    import json

    index = folder / "model_index.json"
    if not index.is_file():
        return None
    try:
        return json.loads(index.read_text()).get("_class_name")
    except (OSError, ValueError):
        return None


def check_pipeline_tokenizers(pipe) -> None:
    from crdiff_search.tokenizers import check_tokenizer

    for attr in ("tokenizer", "tokenizer_2", "tokenizer_3"):
        tok = getattr(pipe, attr, None)
        if tok is not None:
            need = _MIN_VOCAB.get(type(tok).__name__, 1000)
            check_tokenizer(tok, min_vocab=need, what=f"{attr} ({type(tok).__name__})")


def denoiser_of(pipe) -> torch.nn.Module:
    """The pipeline's denoising network: ``pipe.unet`` or ``pipe.transformer``."""
    for attr in ("unet", "transformer"):
        module = getattr(pipe, attr, None)
        if module is not None:
            return module
    raise UsageError(
        f"{type(pipe).__name__} has neither a `unet` nor a `transformer`: only UNet and "
        "transformer diffusion pipelines can be pruned"
    )


def spatial_factor(pipe) -> int:
    """Image sides must be multiples of this: the rule ``crdiff search`` checks from the config
    files (:func:`crdiff_search.model_info.spatial_rule`), applied to a loaded pipeline, so that
    every command accepts the same resolutions."""
    from crdiff_search.model_info import spatial_rule

    vae = getattr(pipe, "vae", None)
    vae_cfg = dict(vae.config) if vae is not None else None
    return spatial_rule(vae_cfg, dict(denoiser_of(pipe).config))


def generate_images(
    pipe,
    prompts: Sequence[str],
    seeds: Sequence[int],
    *,
    width: int,
    height: int,
    steps: int,
    guidance: float,
    batch_size: int | None = None,
) -> list:
    """Generate one image per prompt, each from its own seeded generator (common random numbers).

    The image for ``(prompt, seed)`` does not depend on the batch it is generated in.
    """
    if len(prompts) != len(seeds):
        raise UsageError(
            f"got {len(prompts)} prompts but {len(seeds)} seeds: pass one seed per prompt"
        )
    batch = batch_size or len(prompts)
    device = getattr(pipe, "device", torch.device("cpu"))
    gen_device = "cpu" if device.type == "mps" else device
    images = []
    for start in range(0, len(prompts), batch):
        chunk = list(prompts[start : start + batch])
        gens = [
            torch.Generator(gen_device).manual_seed(int(s)) for s in seeds[start : start + batch]
        ]
        with torch.inference_mode():
            if type(pipe).__name__ == "DiTPipeline":
                out = pipe(
                    class_labels=pipe.get_label_ids(chunk),
                    guidance_scale=guidance,
                    num_inference_steps=steps,
                    generator=gens,
                    output_type="pil",
                )
            else:
                out = pipe(
                    prompt=chunk,
                    height=height,
                    width=width,
                    num_inference_steps=steps,
                    guidance_scale=guidance,
                    generator=gens,
                    output_type="pil",
                )
        images.extend(out.images)
    return images


def load_denoiser(source: str, *, dtype: str = "float32", device: str = "cpu"):
    """The denoiser of ``source``: a bare UNet/transformer folder, or any pipeline source."""
    import json

    from crdiff_search.search_spaces import PARTITIONS

    folder = Path(source).expanduser()
    config = folder / "config.json"
    if folder.is_dir() and config.is_file() and not (folder / "model_index.json").exists():
        try:
            class_name = json.loads(config.read_text()).get("_class_name")
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read {config}: {exc}") from exc
        if class_name not in PARTITIONS:
            raise UsageError(
                f"{config} describes a {class_name!r}; a bare model folder must hold one of "
                f"{', '.join(PARTITIONS)}"
            )
        import diffusers

        try:
            model = getattr(diffusers, class_name).from_pretrained(
                str(folder), dtype=resolve_dtype(dtype), use_safetensors=True
            )
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot load {class_name} from {str(folder)!r}: {exc}") from exc
        return model.to(resolve_device(device)).eval()
    try:
        pipe = load_pipeline(source, dtype=dtype, device=device)
    except FileNotFoundError as exc:  # e.g. the testbed weights are not trained yet
        raise UsageError(str(exc)) from exc
    return denoiser_of(pipe)
