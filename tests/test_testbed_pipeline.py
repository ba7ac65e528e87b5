from pathlib import Path

import numpy as np
import pytest
import torch

from crdiff_search import testbed
from crdiff_search.errors import UsageError


@pytest.fixture(scope="module")
def pipe():
    return testbed.load_pipeline()


def _images(pipe, prompts, size, seed=0, steps=2):
    return pipe(
        prompt=prompts,
        height=size[1],
        width=size[0],
        num_inference_steps=steps,
        guidance_scale=testbed.DEFAULT_GUIDANCE,
        generator=[torch.Generator().manual_seed(seed + i) for i in range(len(prompts))],
        output_type="pil",
    ).images


def test_shipped_weights_are_safetensors_and_small():
    files = [p for p in testbed.WEIGHTS_DIR.rglob("*") if p.is_file()]
    weights = [p for p in files if p.suffix == ".safetensors"]
    assert {p.parent.name for p in weights} == {"unet", "text_encoder"}
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
    assert sum(p.stat().st_size for p in files) <= 25 * 2**20
    assert (testbed.WEIGHTS_DIR.parent / "MODEL_CARD.md").is_file()


def test_loads_from_the_folder_with_cross_attention_in_every_unet_part(pipe):
    from diffusers import UNet2DConditionModel

    assert isinstance(pipe.unet, UNet2DConditionModel)
    assert pipe.unet.dtype == torch.float32
    names = [n for n, _ in pipe.unet.named_parameters()]
    for part in ("down_blocks", "mid_block", "up_blocks"):
        assert any(n.startswith(part) and ".attn2." in n for n in names), part
        assert any(n.startswith(part) and ".ff." in n for n in names), part
    assert len(pipe.tokenizer) == 49408
    assert pipe.unet.config.sample_size == testbed.TRAINING_RESOLUTION[0]


@pytest.mark.parametrize("size", [(32, 32), (48, 32)])
def test_generates_images_of_the_requested_size_deterministically(pipe, size):
    prompts = ["two red circles and a blue square", "a green diamond"]
    first = _images(pipe, prompts, size)
    assert [im.size for im in first] == [size, size]
    second = _images(pipe, prompts, size)
    assert np.array_equal(np.asarray(first[0]), np.asarray(second[0]))
    assert not np.array_equal(np.asarray(first[0]), np.asarray(first[1]))


def test_bad_sizes_and_generator_counts_raise(pipe):
    with pytest.raises(UsageError, match="multiples of 8"):
        _images(pipe, ["a red circle"], (36, 32))
    with pytest.raises(UsageError, match="one per image"):
        pipe(
            prompt=["a red circle"] * 2,
            height=32,
            width=32,
            num_inference_steps=1,
            generator=[torch.Generator().manual_seed(0)],
        )


def test_missing_folder_is_a_clear_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="crdiff testbed train"):
        testbed.load_pipeline(folder=tmp_path)


def test_load_pipeline_routes_a_saved_testbed_folder(tmp_path):
    import shutil

    from crdiff_search import models, testbed

    folder = tmp_path / "copy"
    shutil.copytree(testbed.WEIGHTS_DIR, folder)
    pipe = models.load_pipeline(str(folder))
    assert type(pipe).__name__ == "ScenePipeline"
    assert pipe.unet.config.sample_size == testbed.load_pipeline().unet.config.sample_size
