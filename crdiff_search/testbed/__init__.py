"""The testbed: a tiny text-to-image model trained on procedural scenes, shipped with the package.

It learned to draw "two red circles and a blue square" at one resolution
(:data:`TRAINING_RESOLUTION`) and degrades at others, which the weight-free ``scene`` objective
measures. It loads like any diffusers pipeline folder.

Example::

    from crdiff_search.testbed import load_pipeline, DEFAULT_STEPS, DEFAULT_GUIDANCE
    pipe = load_pipeline()
    images = pipe(prompt=["a red circle"], height=64, width=64,
                  num_inference_steps=DEFAULT_STEPS, guidance_scale=DEFAULT_GUIDANCE,
                  generator=[torch.Generator().manual_seed(0)]).images
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
TRAINING_RESOLUTION = (32, 32)
DEFAULT_STEPS = 8
DEFAULT_GUIDANCE = 2.0


def load_pipeline(*, device="cpu", dtype=None, folder=None):
    """Load the shipped testbed pipeline (or a pipeline ``folder`` written by ``crdiff testbed train``)."""
    import torch

    from crdiff_search.testbed.pipeline import ScenePipeline
    from crdiff_search.tokenizers import check_tokenizer

    folder = Path(folder) if folder is not None else WEIGHTS_DIR
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(
            f"no testbed pipeline in {folder} (model_index.json missing); train one with "
            "`crdiff testbed train --out FOLDER`"
        )
    dtype = torch.float32 if dtype is None else dtype
    pipe = ScenePipeline.from_pretrained(str(folder), dtype=dtype)
    check_tokenizer(pipe.tokenizer, min_vocab=49408, what="testbed tokenizer")
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
