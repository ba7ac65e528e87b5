"""Partitions: the paper selection against an independent statement of the reference rule, on
tiny models and on the real SD1.5 / SD2.1 / SDXL UNet trees (built on the meta device)."""

from __future__ import annotations

import pytest
import torch

from crdiff_search import testing
from crdiff_search.errors import UsageError
from crdiff_search.search_spaces import (
    GRANULARITIES,
    KINDS,
    Partition,
    build_partition,
    default_bounds,
)


def reference_unet_groups(model) -> dict[str, list[str]]:
    """The reference implementation's rule, restated from the method notes."""
    groups: dict[str, list[str]] = {"down": [], "mid": [], "up": []}
    prefixes = {"down_blocks": "down", "mid_block": "mid", "up_blocks": "up"}
    for name, module in model.named_modules():
        if type(module) is not torch.nn.Linear and type(module) is not torch.nn.Conv2d:
            continue
        if ("attn" not in name and "ff" not in name) or "attn2" in name:
            continue
        for prefix, group in prefixes.items():
            if name.startswith(prefix):
                groups[group].append(name + ".weight")
    return groups


@pytest.fixture(scope="module")
def tiny():
    return testing.tiny_unet()


@pytest.fixture(scope="module")
def real_unets():
    return {
        "sd15": testing.unet_from_config(testing.sd15_unet_config(), device="meta"),
        "sd21": testing.unet_from_config(testing.sd21_unet_config(), device="meta"),
        "sdxl": testing.unet_from_config(testing.sdxl_unet_config(), device="meta"),
    }


def _numel(model, names):
    params = dict(model.named_parameters())
    return sum(params[n].numel() for n in names)


def test_paper_selection_equals_reference_rule_on_tiny_unet(tiny):
    part = build_partition(tiny, "paper")
    expected = reference_unet_groups(tiny)
    assert part.group_names == ("down", "mid", "up")
    assert {g: list(v) for g, v in part.groups.items()} == expected
    # one self-attention block = 4 attn1 projections + 2 feed-forward layers
    assert [len(v) for v in part.groups.values()] == [12, 6, 18]
    assert not any("attn2" in n or "proj_in" in n or "resnets" in n for n in part.param_names)


@pytest.mark.parametrize("key", ["sd15", "sd21", "sdxl"])
def test_paper_selection_equals_reference_rule_on_real_configs(real_unets, key):
    model = real_unets[key]
    part = build_partition(model, "paper")
    assert {g: list(v) for g, v in part.groups.items()} == reference_unet_groups(model)
    # the structural kind filter agrees with the literal name rule on real UNets
    widened = build_partition(model, "paper", include=("ff", "self_attn"))
    assert widened.groups == part.groups


def test_paper_selection_sizes_on_sd15_and_sdxl(real_unets):
    # Each transformer block of width C holds 16 C^2 selected weights:
    # attn1 q/k/v/out 4 C^2, GEGLU projection C -> 8C, then 4C -> C.
    def blocks(widths_and_counts):
        return sum(16 * c * c * n for c, n in widths_and_counts)

    sd15 = build_partition(real_unets["sd15"], "paper")
    assert _numel(real_unets["sd15"], sd15.groups["down"]) == blocks(
        [(320, 2), (640, 2), (1280, 2)]
    )
    assert _numel(real_unets["sd15"], sd15.groups["mid"]) == blocks([(1280, 1)])
    assert _numel(real_unets["sd15"], sd15.groups["up"]) == blocks([(1280, 3), (640, 3), (320, 3)])
    sdxl = build_partition(real_unets["sdxl"], "paper")
    assert [len(v) for v in sdxl.groups.values()] == [6 * 24, 6 * 10, 6 * 36]
    assert _numel(real_unets["sdxl"], sdxl.groups["mid"]) == blocks([(1280, 10)])


def test_block_granularity_follows_unet_blocks(real_unets):
    sd15 = build_partition(real_unets["sd15"], "block")
    # SD1.5: down_blocks.3 and up_blocks.0 have no attention, so they are no group
    assert sd15.group_names == ("down.0", "down.1", "down.2", "mid", "up.1", "up.2", "up.3")
    paper = build_partition(real_unets["sd15"], "paper")
    assert set(sd15.param_names) == set(paper.param_names)
    for group, names in sd15.groups.items():
        stage, *index = group.split(".")
        prefix = {"down": "down_blocks", "up": "up_blocks", "mid": "mid_block"}[stage]
        prefix += f".{index[0]}." if index else "."
        assert all(n.startswith(prefix) for n in names)
    sdxl = build_partition(real_unets["sdxl"], "block")
    assert sdxl.group_names == ("down.1", "down.2", "mid", "up.0", "up.1")


def test_kind_granularity_and_include_widen_selection(tiny):
    kind = build_partition(tiny, "kind")
    assert kind.group_names == (
        "down.1.self_attn", "down.1.ff", "mid.self_attn", "mid.ff", "up.0.self_attn", "up.0.ff",
    )  # fmt: skip
    assert all(".attn1." in n for n in kind.groups["mid.self_attn"])
    assert all(".ff." in n for n in kind.groups["mid.ff"])
    wide = build_partition(tiny, "kind", include="self_attn,cross_attn,ff,resnet")
    assert "down.0.resnet" in wide.groups and "up.1.resnet" in wide.groups
    assert all(".attn2." in n for n in wide.groups["mid.cross_attn"])
    assert len(wide.groups["mid.cross_attn"]) == 4
    resnet = wide.groups["down.1.resnet"]
    assert sorted(n.rsplit(".", 2)[-2] for n in resnet) == [
        "conv1", "conv1", "conv2", "conv2", "conv_shortcut",
    ]  # fmt: skip
    cross = build_partition(tiny, "paper", include=["cross_attn"])
    assert all(".attn2." in n for n in cross.param_names)
    assert len(cross.param_names) == 4 * 6  # six transformer blocks


def test_transformer_paper_partitions_are_thirds():
    for model in (testing.tiny_dit(), testing.tiny_pixart(num_layers=7)):
        part = build_partition(model, "paper")
        assert part.group_names == ("early", "middle", "late")
        n_blocks = len(model.transformer_blocks)
        blocks = {
            g: sorted({int(n.split(".")[1]) for n in names}) for g, names in part.groups.items()
        }
        assert sum(len(b) for b in blocks.values()) == n_blocks
        assert blocks["early"][-1] < blocks["middle"][0] <= blocks["middle"][-1] < blocks["late"][0]
        assert max(map(len, blocks.values())) - min(map(len, blocks.values())) <= 1
        # the same rule as the UNet: attention and feed-forward projections, not attn2
        expected = [
            name + ".weight"
            for name, m in model.named_modules()
            if type(m) is torch.nn.Linear
            and name.startswith("transformer_blocks.")
            and ("attn" in name or "ff" in name)
            and "attn2" not in name
        ]
        assert list(part.param_names) == expected
    pixart = testing.tiny_pixart(num_layers=7)
    assert [len(v) for v in build_partition(pixart, "paper").groups.values()] == [18, 12, 12]


def test_transformer_block_groups_and_kinds():
    dit = testing.tiny_dit(num_layers=6)
    assert build_partition(dit, "block").group_names == tuple(f"blocks.{i}" for i in range(6))
    four = build_partition(dit, "block", n_groups=4)
    assert four.group_names == ("blocks.0-1", "blocks.2-3", "blocks.4", "blocks.5")
    assert len(four.groups["blocks.0-1"]) == 12
    pixart = testing.tiny_pixart()
    kinds = build_partition(pixart, "kind", n_groups=2, include=("self_attn", "cross_attn", "ff"))
    assert kinds.group_names == (
        "blocks.0-2.self_attn", "blocks.0-2.cross_attn", "blocks.0-2.ff",
        "blocks.3-5.self_attn", "blocks.3-5.cross_attn", "blocks.3-5.ff",
    )  # fmt: skip
    assert all(".attn2." in n for n in kinds.groups["blocks.3-5.cross_attn"])


def test_pipeline_is_accepted_and_partition_round_trips(tiny):
    class FakePipe:
        unet = tiny

    part = build_partition(FakePipe(), "block")
    assert part.model_class == "UNet2DConditionModel"
    again = Partition.from_dict(part.to_dict())
    assert again == part and again.group_names == part.group_names
    assert default_bounds(part) == {g: (0.1, 0.8) for g in part.group_names}
    assert GRANULARITIES == ("paper", "block", "kind")
    assert KINDS == ("self_attn", "cross_attn", "ff", "resnet")


def test_partition_errors(tiny):
    with pytest.raises(UsageError, match="valid: paper, block, kind"):
        build_partition(tiny, "layer")
    with pytest.raises(UsageError, match="valid: self_attn, cross_attn, ff, resnet"):
        build_partition(tiny, "paper", include=["attention"])
    with pytest.raises(UsageError, match="unsupported model class Linear"):
        build_partition(torch.nn.Linear(2, 2))
    with pytest.raises(UsageError, match="transformer partitions only"):
        build_partition(tiny, "block", n_groups=2)
    dit = testing.tiny_dit()
    with pytest.raises(UsageError, match="valid: 1..6"):
        build_partition(dit, "block", n_groups=7)
    with pytest.raises(UsageError, match="three fixed groups"):
        build_partition(dit, "paper", n_groups=4)
    # DiT has no cross-attention: every paper group would be empty -> loud error
    with pytest.raises(UsageError, match="select no weights"):
        build_partition(dit, "paper", include=["cross_attn"])
    with pytest.raises(UsageError, match="select no weights"):
        Partition("x", {"a": ("w",), "b": ()})
    with pytest.raises(UsageError, match="in both groups"):
        Partition("x", {"a": ("w",), "b": ("w",)})
    with pytest.raises(UsageError, match="no groups"):
        Partition("x", {})


def test_paper_rule_is_exact_type_and_fails_loudly_when_wrapped(tiny):
    """A diffusers version wrapping the projections in a subclass must not prune silently
    nothing: the paper partition then raises."""
    import copy

    class WrappedLinear(torch.nn.Linear):
        pass

    model = copy.deepcopy(tiny)
    for module in model.modules():
        if type(module) is torch.nn.Linear:
            module.__class__ = WrappedLinear
    with pytest.raises(UsageError, match="select no weights"):
        build_partition(model, "paper")
