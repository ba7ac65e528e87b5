import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from crdiff_search.errors import UsageError
from crdiff_search.objectives.scene import SceneObjective
from crdiff_search.testbed.scenes import render, sample_captions

# A fixed seeded validation set: rendered ground truth must be read back exactly.
VALIDATION_SIZES = [(32, 32), (48, 48), (64, 64), (64, 32)]


@pytest.mark.parametrize("size", VALIDATION_SIZES)
def test_exact_match_on_rendered_ground_truth(size):
    captions = sample_captions(100, seed=2024)
    images = [render(c, *size, seed=1000 + i) for i, c in enumerate(captions)]
    parts = SceneObjective().parts(images, captions)
    assert len(parts) == 100
    assert parts["exact"].mean() >= 0.98
    assert parts["score"].mean() >= 0.99


def test_scores_are_in_unit_interval_and_penalise_wrong_counts_and_duplicates():
    obj = SceneObjective()
    image = render("two red circles", 64, 64, seed=5)
    right, fewer, wrong_colour = obj.score(
        [image] * 3, ["two red circles", "a red circle", "two blue circles"]
    )
    assert right == 1.0
    parts = obj.parts([image], ["a red circle"]).iloc[0]
    assert parts["duplicates"] == 1 and parts["count"] == 0.0
    assert 0.0 <= fewer < right
    assert wrong_colour <= 1 / 3 + 1e-9  # count right, colour and shape wrong


def test_shape_errors_lower_only_the_shape_part():
    image = render("a green square", 64, 64, seed=1)
    parts = SceneObjective().parts([image], ["a green circle"]).iloc[0]
    assert parts["count"] == 1.0 and parts["colour"] == 1.0 and parts["shape"] == 0.0
    assert parts["score"] == pytest.approx(2 / 3)


def test_fragments_are_penalised():
    image = render("a blue diamond", 64, 64, seed=2)
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, 1, 1], fill=(230, 25, 25))  # a 4-pixel red speck in a corner
    parts = SceneObjective().parts([image], ["a blue diamond"]).iloc[0]
    assert parts["fragments"] == 1 and parts["n_detected"] == 1
    assert parts["score"] == pytest.approx(0.95)


def test_blank_image_scores_zero_and_tensors_are_accepted():
    obj = SceneObjective()
    blank = Image.new("RGB", (32, 32), (250, 250, 250))
    assert obj.score([blank], ["a red circle"])[0] == 0.0
    image = render("three yellow triangles", 48, 48, seed=9)
    tensor = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    assert obj.score([tensor], ["three yellow triangles"])[0] == 1.0
    assert obj.aggregate(obj.score([image, blank], ["three yellow triangles"] * 2)) == 0.5


def test_bad_input_raises_before_scoring():
    obj = SceneObjective()
    image = render("a red circle", 32, 32)
    with pytest.raises(UsageError, match="'purple'"):
        obj.score([image], ["a purple circle"])
    with pytest.raises(ValueError, match="1 images but 2 prompts"):
        obj.score([image], ["a red circle", "a red circle"])
    assert obj.name == "scene" and obj.higher_is_better
