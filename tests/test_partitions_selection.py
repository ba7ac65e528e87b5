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


REFERENCE_SUFFIXES = (
    "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
    "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0",
    "ff.net.0.proj", "ff.net.2",
)  # fmt: skip


def _reference_prune(model, ratio):
    """The reference's transformer path restated: every Linear/Conv2d (exact type) whose name
    ends in one of its suffixes; per tensor, t = kthvalue(|W|, int(numel * ratio)); W[|W| <= t]
    = 0. (The reference crashes at ratio 0: k = 0.)"""
    with torch.no_grad():
        for name, module in model.named_modules():
            if type(module) in (torch.nn.Linear, torch.nn.Conv2d) and name.endswith(
                REFERENCE_SUFFIXES
            ):
                w = module.weight.data
                metric = w.abs()
                t = torch.kthvalue(metric.flatten(), int(w.numel() * ratio))[0]
                w[metric <= t] = 0


TRANSFORMERS = {
    "dit": testing.tiny_dit,
    "pixart": testing.tiny_pixart,
    "sd3": testing.tiny_sd3,
    "flux": testing.tiny_flux,
}


@pytest.mark.parametrize("kind", list(TRANSFORMERS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_transformer_paper_preset_is_the_reference(kind, dtype):
    """granularity="paper" with criterion "auto" on a transformer: one shared ratio, the
    reference's modules, a threshold per tensor; the pruned weights equal the reference's."""
    from crdiff_search.pruning import Pruner

    ours = TRANSFORMERS[kind](seed=3).to(dtype)
    theirs = TRANSFORMERS[kind](seed=3).to(dtype)
    pruner = Pruner(ours, "paper")
    assert pruner.partition.group_names == ("shared",)
    assert pruner.criterion.name == "magnitude-tensor"
    for ratio in (0.37, 0.8):
        pruner.apply_({"shared": ratio})
        reference = TRANSFORMERS[kind](seed=3).to(dtype)
        _reference_prune(reference, ratio)
        for (name, a), (_, b) in zip(
            ours.state_dict().items(), reference.state_dict().items(), strict=True
        ):
            assert torch.equal(a, b), (kind, ratio, name)
        pruner.restore_()
    for (_, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items(), strict=True):
        assert torch.equal(a, b)


def test_transformer_paper_selection_per_model():
    def selected(model):
        return list(build_partition(model, "paper").param_names)

    pixart = testing.tiny_pixart()
    names = selected(pixart)
    assert any(".attn2." in n for n in names) and any(".attn1." in n for n in names)
    assert len(names) == 6 * 10  # six blocks: attn1 x4, attn2 x4, ff x2
    # SD3 and Flux name their attention "attn": the reference reaches the feed-forward layers
    # (and SD3.5's attn2), not ff_context, not the joint attention.
    sd3 = selected(testing.tiny_sd3(num_layers=4, dual_attention_layers=(0,)))
    assert sum(".ff.net." in n for n in sd3) == 2 * 4 and sum(".attn2." in n for n in sd3) == 4
    assert not any("ff_context" in n or ".attn.to_" in n for n in sd3)
    flux = selected(testing.tiny_flux(num_layers=2, num_single_layers=3))
    assert len(flux) == 2 * 2 and all(n.startswith("transformer_blocks.") for n in flux)


def test_transformer_thirds_partitions():
    for model in (testing.tiny_dit(), testing.tiny_pixart(num_layers=7)):
        part = build_partition(model, "thirds")
        assert part.group_names == ("early", "middle", "late")
        n_blocks = len(model.transformer_blocks)
        blocks = {
            g: sorted({int(n.split(".")[1]) for n in names}) for g, names in part.groups.items()
        }
        assert sum(len(b) for b in blocks.values()) == n_blocks
        assert blocks["early"][-1] < blocks["middle"][0] <= blocks["middle"][-1] < blocks["late"][0]
        assert max(map(len, blocks.values())) - min(map(len, blocks.values())) <= 1
        assert set(part.param_names) == set(build_partition(model, "paper").param_names)
    pixart = testing.tiny_pixart(num_layers=7)
    assert [len(v) for v in build_partition(pixart, "thirds").groups.values()] == [30, 20, 20]


def test_sd3_and_flux_blocks_and_kinds():
    flux = testing.tiny_flux(num_layers=2, num_single_layers=3)
    wide = build_partition(flux, "kind", include=("self_attn", "ff"))
    # Blocks 0-1 are double-stream, 2-4 single-stream (their proj_mlp / proj_out are ff).
    assert wide.group_names == tuple(
        f"blocks.{i}.{k}" for i in range(5) for k in ("self_attn", "ff")
    )
    assert set(wide.groups["blocks.3.ff"]) == {
        "single_transformer_blocks.1.proj_mlp.weight",
        "single_transformer_blocks.1.proj_out.weight",
    }
    assert "transformer_blocks.0.attn.add_q_proj.weight" in wide.groups["blocks.0.self_attn"]
    assert "transformer_blocks.1.ff_context.net.2.weight" in wide.groups["blocks.1.ff"]
    sd3 = testing.tiny_sd3(num_layers=4)
    two = build_partition(sd3, "block", n_groups=2, include=("self_attn", "cross_attn", "ff"))
    assert two.group_names == ("blocks.0-1", "blocks.2-3")
    thirds = build_partition(sd3, "thirds")
    assert thirds.group_names == ("early", "middle", "late")
    with pytest.raises(UsageError, match="thirds partition applies to transformer"):
        build_partition(testing.tiny_unet(), "thirds")


def test_sd3_and_flux_prune_and_restore_bit_for_bit():
    from crdiff_search.pruning import Pruner

    for model in (testing.tiny_sd3(), testing.tiny_flux()):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        pruner = Pruner(model, "block", criterion="magnitude")
        pruner.apply_(dict.fromkeys(pruner.partition.group_names, 0.5))
        assert all(s > 0.4 for s in pruner.sparsity().values())
        pruner.restore_()
        for k, v in model.state_dict().items():
            assert torch.equal(v, before[k]), k


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
    assert GRANULARITIES == ("paper", "block", "kind", "thirds")
    assert KINDS == ("self_attn", "cross_attn", "ff", "resnet")


def test_partition_errors(tiny):
    with pytest.raises(UsageError, match="valid: paper, block, kind, thirds"):
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
    with pytest.raises(UsageError, match="one group"):
        build_partition(dit, "paper", n_groups=4)
    with pytest.raises(UsageError, match="three groups"):
        build_partition(dit, "thirds", n_groups=4)
    # DiT has no cross-attention: the group would be empty -> loud error
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
