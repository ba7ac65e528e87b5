import numpy as np
import pytest

from crdiff_search.errors import UsageError
from crdiff_search.testbed import scenes


def test_parse_caption_round_trips_and_counts_objects():
    scene = scenes.parse_caption("two red circles and a blue square")
    assert scene.caption == "two red circles and a blue square"
    assert scene.n_objects == 3
    assert scene.objects() == [("red", "circle"), ("red", "circle"), ("blue", "square")]
    assert scenes.parse_caption("One Green Diamond").caption == "a green diamond"
    assert scenes.parse_caption("three cyan triangles").n_objects == 3


@pytest.mark.parametrize(
    ("caption", "bad"),
    [
        ("four red circles", "'four'"),
        ("two pink circles", "'pink'"),
        ("a red hexagon", "'hexagon'"),
        ("two red circle", "does not agree"),
        ("a red circles", "does not agree"),
        ("a red circle and a blue square and a green diamond", "at most 2 groups"),
        ("a red circle and two red circles", "same colour and shape"),
        ("red circle", "COUNT COLOUR SHAPE"),
        ("", "empty"),
    ],
)
def test_bad_captions_name_the_problem_and_the_grammar(caption, bad):
    with pytest.raises(UsageError) as info:
        scenes.parse_caption(caption)
    message = str(info.value)
    assert bad in message
    assert "Grammar:" in message and "magenta" in message and "diamond" in message


def test_sample_captions_are_seeded_parseable_and_bounded():
    a = scenes.sample_captions(200, seed=7)
    assert a == scenes.sample_captions(200, seed=7)
    assert a != scenes.sample_captions(200, seed=8)
    parsed = [scenes.parse_caption(c) for c in a]
    assert all(1 <= s.n_objects <= 4 for s in parsed)
    assert {len(s.groups) for s in parsed} == {1, 2}
    assert {g.colour for s in parsed for g in s.groups} == set(scenes.COLOURS)
    assert {g.shape for s in parsed for g in s.groups} == set(scenes.SHAPES)
    assert {g.count for s in parsed for g in s.groups} == {1, 2, 3}


@pytest.mark.parametrize("size", [(24, 24), (32, 32), (48, 48), (64, 64), (64, 32), (96, 64)])
def test_render_size_is_deterministic_and_draws_palette_colours(size):
    caption = "two red circles and a blue square"
    image = scenes.render(caption, *size, seed=3)
    assert image.size == size and image.mode == "RGB"
    again = scenes.render(caption, *size, seed=3)
    assert np.array_equal(np.asarray(image), np.asarray(again))
    other = scenes.render(caption, *size, seed=4)
    assert not np.array_equal(np.asarray(image), np.asarray(other))
    pixels = np.asarray(image).reshape(-1, 3)
    # Object pixels exist, the background dominates, and anti-aliasing leaves blended edge values.
    assert (pixels == scenes.BACKGROUND).all(axis=1).mean() > 0.5
    assert any((pixels == scenes.COLOURS["red"]).all(axis=1))
    assert len({tuple(p) for p in pixels}) > 4


def test_same_seed_gives_the_same_layout_at_every_size():
    small = np.asarray(scenes.render("a magenta triangle", 32, 32, seed=11), dtype=float)
    large = np.asarray(scenes.render("a magenta triangle", 64, 64, seed=11), dtype=float)
    down = large.reshape(32, 2, 32, 2, 3).mean(axis=(1, 3))
    assert np.abs(down - small).mean() < 4.0


def test_render_rejects_too_small_sizes():
    with pytest.raises(UsageError, match="4x32"):
        scenes.render("a red circle", 4, 32)
