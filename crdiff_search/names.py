"""The fixed vocabularies every layer shares, defined once (no heavy imports: the schema, the
CLI and the engines all read them).

>>> from crdiff_search.names import GRANULARITIES
>>> GRANULARITIES
('paper', 'block', 'kind', 'thirds')
"""

from __future__ import annotations

# Torch dtypes by name; the engines map them to torch.* (crdiff_search.models.resolve_dtype).
DTYPES = ("float32", "float16", "bfloat16")
# Partition granularities (search_spaces.build_partition).
GRANULARITIES = ("paper", "block", "kind", "thirds")
# Weight kinds a partition can select by structure (search_spaces.selection).
KINDS = ("self_attn", "cross_attn", "ff", "resnet")
# Denoiser classes with a partition: UNets, then transformers.
UNET_CLASSES = ("UNet2DConditionModel",)
TRANSFORMER_CLASSES = (
    "DiTTransformer2DModel",
    "PixArtTransformer2DModel",
    "SD3Transformer2DModel",
    "FluxTransformer2DModel",
)
# Pruning criteria known without importing them; "auto" is resolved per partition
# (crdiff_search.pruning.resolve_criterion).
AUTO_CRITERION = "auto"
DENOISER_CLASSES = UNET_CLASSES + TRANSFORMER_CLASSES
# Scheduler name -> diffusers class; "default" keeps the pipeline's own scheduler.
SCHEDULERS = {
    "default": None,
    "ddim": "DDIMScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-a": "EulerAncestralDiscreteScheduler",
    "pndm": "PNDMScheduler",
    "unipc": "UniPCMultistepScheduler",
}
# Devices by name: these, or "cuda:N" for the N-th GPU.
DEVICES = ("auto", "cpu", "cuda", "mps")


def check_device(device: str) -> str:
    """``device`` if it is one of :data:`DEVICES` or ``cuda:N``; else a usage error listing the
    valid forms."""
    import re

    from crdiff_search.errors import UsageError

    if isinstance(device, str) and (device in DEVICES or re.fullmatch(r"cuda:\d+", device)):
        return device
    raise UsageError(f"device {device!r} is not valid; valid: auto, cpu, cuda, cuda:N, mps")


# the Pruner's memory layout (see crdiff_search.pruning.engine): how thresholds are found and
# where the dense copy lives
PRUNER_CACHE_MODES = ("auto", "sorted", "histogram", "none")
PRUNER_BACKUP_MODES = ("auto", "device", "host")

# Training-free fixes applied with the pruning (a recipe's ``attention_scaling``, a study's
# ``search.repair``): attention-entropy scaling (crdiff_search.attention_scaling).
ATTENTION_SCALINGS = ("entropy",)
REPAIRS = ("prune", "entropy", "prune+entropy")  # what a study searches or applies
WARM_STARTS = ("none", "registry")  # where a study's first trials after the dense one come from
