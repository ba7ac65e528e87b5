"""The Pruner against a direct kthvalue computation: masks, restore, A-then-B, sparsity, dtypes."""

from __future__ import annotations

import pytest
import torch

from crdiff_search import testing
from crdiff_search.errors import UsageError
from crdiff_search.pruning import Pruner, group_table
from crdiff_search.search_spaces import build_partition

RATIOS_A = {"down": 0.3, "mid": 0.55, "up": 0.7}
RATIOS_B = {"down": 0.6, "up": 0.2}


def fresh_unet():
    # building the tiny UNet is cheaper than deep-copying one
    return testing.tiny_unet(seed=3)


@pytest.fixture(scope="module")
def base_unet():
    return fresh_unet()


@pytest.fixture
def unet():
    return fresh_unet()


@pytest.fixture(scope="module")
def shared_pruner():
    return Pruner(fresh_unet(), "paper")


def expected_group_pruning(model, partition, ratios, *, per_tensor=False):
    """The reference procedure, written directly: kthvalue over the concatenated |W|."""
    params = dict(model.named_parameters())
    out = {}
    for group, names in partition.groups.items():
        r = ratios.get(group, 0.0)
        pools = [[n] for n in names] if per_tensor else [list(names)]
        for pool in pools:
            mags = torch.cat([params[n].detach().abs().flatten() for n in pool])
            k = int(mags.numel() * r)
            for n in pool:
                w = params[n].detach()
                if k == 0:
                    out[n] = w.clone()
                else:
                    t = torch.kthvalue(mags, k).values
                    out[n] = w * (w.abs() > t)
    return out


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_bit_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype
        assert torch.equal(a[k].view(torch.uint8), b[k].view(torch.uint8)), k


@pytest.mark.parametrize(
    ("dtype", "cache"),
    [
        (torch.float32, "sorted"),
        (torch.float32, "none"),
        (torch.float16, "sorted"),
        (torch.bfloat16, "none"),
    ],
)
def test_apply_equals_direct_kthvalue(unet, cache, dtype):
    unet.to(dtype)
    part = build_partition(unet, "paper")
    expected = expected_group_pruning(unet, part, RATIOS_A)
    pruner = Pruner(unet, part, cache=cache)
    pruner.apply_(RATIOS_A)
    params = dict(unet.named_parameters())
    for name, want in expected.items():
        assert params[name].dtype == dtype
        assert torch.equal(params[name], want), name
    masks = pruner.keep_masks(RATIOS_A)
    assert set(masks) == set(part.param_names)
    for name, mask in masks.items():
        assert mask.dtype == torch.bool
        assert torch.equal(mask, expected[name] != 0)


@pytest.mark.parametrize("swap", [True, False])
def test_restore_is_bit_exact_and_a_then_b_equals_b(unet, base_unet, swap):
    dense = state(unet)
    part = build_partition(unet, "paper")
    pruner = Pruner(unet, part, swap=swap)
    pruner.apply_(RATIOS_A).apply_(RATIOS_B)
    only_b = fresh_unet()
    Pruner(only_b, build_partition(only_b, "paper")).apply_(RATIOS_B)
    assert_bit_equal(state(unet), state(only_b))
    assert pruner.current_ratios == {"down": 0.6, "mid": 0.0, "up": 0.2}
    pruner.restore_()
    assert_bit_equal(state(unet), dense)
    assert pruner.sparsity() == {"down": 0.0, "mid": 0.0, "up": 0.0}
    # moving one ratio touches one group only, and still equals the direct computation
    pruner.apply_(RATIOS_A).apply_({**RATIOS_A, "mid": 0.1})
    want = expected_group_pruning(fresh_unet(), part, {**RATIOS_A, "mid": 0.1})
    params = dict(unet.named_parameters())
    assert all(torch.equal(params[n], w) for n, w in want.items())
    pruner.apply_({})
    assert_bit_equal(state(unet), dense)


def test_achieved_sparsity_within_one_element(unet):
    part = build_partition(unet, "block")
    pruner = Pruner(unet, part)
    sizes = {
        g: sum(dict(unet.named_parameters())[n].numel() for n in v) for g, v in part.groups.items()
    }
    for r in (0.01, 0.123, 0.5, 0.777, 0.999):
        pruner.apply_(dict.fromkeys(part.group_names, r))
        for group, achieved in pruner.sparsity().items():
            assert abs(achieved * sizes[group] - r * sizes[group]) <= 1, (group, r)
    table = pruner.report()
    assert list(table.columns) == [
        "group", "param", "shape", "numel", "requested", "zeros", "pruned", "sparsity",
    ]  # fmt: skip
    assert len(table) == len(part.param_names)
    groups = group_table(table)
    assert list(groups["group"]) == [*part.group_names, "total"]
    assert groups["pruned"].iloc[-1] == table["pruned"].sum() > 0
    assert groups["numel"].iloc[-1] == sum(sizes.values())


def test_pruned_context_manager_restores_previous_state(unet):
    dense = state(unet)
    pruner = Pruner(unet, "paper")
    with pruner.pruned(RATIOS_A) as p:
        assert p is pruner
        assert pruner.sparsity()["up"] == pytest.approx(0.7, abs=1e-4)
    assert_bit_equal(state(unet), dense)
    pruner.apply_(RATIOS_B)
    after_b = state(unet)
    with pytest.raises(RuntimeError, match="boom"), pruner.pruned(RATIOS_A):
        raise RuntimeError("boom")
    assert_bit_equal(state(unet), after_b)
    assert pruner.current_ratios == {"down": 0.6, "mid": 0.0, "up": 0.2}


def test_dense_tensor_keep_masks_and_memory(unet):
    dense = state(unet)
    pruner = Pruner(unet, "paper", cache="sorted")
    pruner.apply_(RATIOS_A)
    name = pruner.param_names[0]
    assert torch.equal(pruner.dense_tensor(name), dense[name])
    assert pruner.keep_masks({"up": 0.4}).keys() == set(pruner.partition.groups["up"])
    assert pruner.keep_masks({"mid": 1e-9}) == {}  # int(N * r) == 0 prunes nothing
    selected = sum(dense[n].numel() * dense[n].element_size() for n in pruner.param_names)
    assert pruner.extra_memory_bytes() == {
        "backup": selected, "sorted_cache": selected, "histograms": 0, "total": 2 * selected,
        "device": 2 * selected, "host": 0,  # on CPU everything is in the model's memory
    }  # fmt: skip
    lean = Pruner(fresh_unet(), "paper", cache="none")
    assert lean.extra_memory_bytes()["sorted_cache"] == 0


def test_per_tensor_and_random_criteria(unet, base_unet):
    part = build_partition(unet, "paper")
    pruner = Pruner(unet, part, criterion="magnitude-tensor")
    pruner.apply_(RATIOS_A)
    want = expected_group_pruning(base_unet, part, RATIOS_A, per_tensor=True)
    params = dict(unet.named_parameters())
    for n, w in want.items():
        assert torch.equal(params[n], w)
        ratio = RATIOS_A[part.group_of(n)]
        assert int((params[n] == 0).sum()) == int(w.numel() * ratio)
    pruner.restore_()

    rand = Pruner(unet, part, criterion="random", seed=7)
    rand.apply_(RATIOS_A)
    first = state(unet)
    for group, achieved in rand.sparsity().items():
        assert achieved == pytest.approx(RATIOS_A[group], abs=1e-4)
    rand.apply_(RATIOS_B).apply_(RATIOS_A)
    assert_bit_equal(state(unet), first)  # seeded: the same elements every time
    masks = rand.keep_masks(RATIOS_A)
    for n, m in masks.items():
        assert torch.equal(params[n] != 0, m)
    # random is not magnitude: it prunes some large weights
    name = part.groups["up"][0]
    w = rand.dense_tensor(name)
    assert (w.abs()[~masks[name]]).max() > w.abs()[masks[name]].min()
    rand.restore_()
    other = Pruner(unet, part, criterion="random", seed=8)
    assert not all(torch.equal(masks[n], m) for n, m in other.keep_masks(RATIOS_A).items())


def test_transformers_prune_and_restore():
    for model in (testing.tiny_dit(), testing.tiny_pixart()):
        dense = state(model)
        part = build_partition(model, "thirds")  # group-wide thresholds under "auto"
        ratios = {"early": 0.2, "middle": 0.5, "late": 0.8}
        want = expected_group_pruning(model, part, ratios)
        with Pruner(model, part).pruned(ratios):
            params = dict(model.named_parameters())
            assert all(torch.equal(params[n], w) for n, w in want.items())
        assert_bit_equal(state(model), dense)


@pytest.mark.parametrize(
    ("ratios", "message"),
    [
        ({"left": 0.3}, r"unknown group\(s\) 'left'; valid: down, mid, up"),
        ({"down": 1.0}, r"must be in \[0, 1\), got 1.0"),
        ({"down": -0.1}, r"must be in \[0, 1\)"),
        ({"down": float("nan")}, r"must be in \[0, 1\)"),
        ({"down": "0.3"}, "must be a number"),
        ({"down": True}, "must be a number"),
        ({"down": None}, "must be a number"),
        ([0.3, 0.3, 0.3], "must be a mapping"),
    ],
)
def test_bad_ratios_are_usage_errors_and_leave_model_alone(shared_pruner, ratios, message):
    pruner = shared_pruner
    pruner.apply_(RATIOS_B)
    params = dict(pruner.model.named_parameters())
    before = {n: params[n].detach().clone() for n in pruner.param_names}
    with pytest.raises(UsageError, match=message):
        pruner.apply_(ratios)
    with pytest.raises(UsageError, match=message):
        pruner.keep_masks(ratios)
    assert_bit_equal({n: params[n].detach() for n in pruner.param_names}, before)
    assert pruner.current_ratios == {"down": 0.6, "mid": 0.0, "up": 0.2}


def test_constructor_errors(unet):
    with pytest.raises(UsageError, match="unsupported model class"):
        Pruner(torch.nn.Sequential(torch.nn.Linear(2, 2)), "paper")
    with pytest.raises(UsageError, match="valid names: magnitude, magnitude-tensor, random"):
        Pruner(unet, "paper", criterion="l1")
    with pytest.raises(UsageError, match="valid: auto, sorted, histogram, none"):
        Pruner(unet, "paper", cache="lru")
    other = build_partition(testing.tiny_dit(), "paper")
    with pytest.raises(UsageError, match="does not have"):
        Pruner(unet, other)
    pruner = Pruner(unet, "paper")
    with pytest.raises(UsageError, match="not a pruned parameter"):
        pruner.dense_tensor("conv_in.weight")
    unet.to(torch.float16)
    with pytest.raises(RuntimeError, match="build a new Pruner"):
        pruner.apply_(RATIOS_A)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("cache", ["sorted", "none"])
def test_cuda_matches_cpu(base_unet, dtype, cache):
    cpu = fresh_unet().to(dtype)
    gpu = fresh_unet().to("cuda", dtype)
    Pruner(cpu, "paper").apply_(RATIOS_A)
    pruner = Pruner(gpu, "paper", cache=cache)
    dense = state(gpu)
    pruner.apply_(RATIOS_A)
    got, want = state(gpu), state(cpu)
    assert all(torch.equal(got[k].cpu(), want[k]) for k in want)
    assert all(m.device.type == "cuda" for m in pruner.keep_masks(RATIOS_A).values())
    pruner.restore_()
    assert_bit_equal(state(gpu), dense)


def test_keep_masks_after_apply_reuse_the_threshold(unet, monkeypatch):
    """POA asks for the masks of the ratios it just applied: no second kthvalue."""
    dense = state(unet)
    calls = []
    real = torch.kthvalue
    monkeypatch.setattr(torch, "kthvalue", lambda *a, **k: calls.append(1) or real(*a, **k))
    with Pruner(unet, "paper", cache="none").pruned(RATIOS_A) as pruner:
        assert len(calls) == 3
        masks = pruner.keep_masks(RATIOS_A)
        shared = {name: pruner.dense_tensor(name) for name in masks}
        assert len(calls) == 3
        params = dict(unet.named_parameters())
        for name, mask in masks.items():
            assert torch.equal(shared[name], dense[name])
            assert torch.equal(params[name] != 0, mask)
    assert_bit_equal(state(unet), dense)


def test_swap_points_parameters_at_dense_or_work_storage(unet):
    params = dict(unet.named_parameters())
    name = build_partition(unet, "paper").groups["up"][0]
    original = params[name].data_ptr()
    swapping = Pruner(unet, "paper")
    assert swapping.dense_tensor(name).data_ptr() == original  # no copy of the dense weights
    swapping.apply_(RATIOS_A)
    assert params[name].data_ptr() != original
    swapping.restore_()
    assert params[name].data_ptr() == original
    swapping.apply_(RATIOS_A)
    params[name].data = params[name].data.clone()  # some other code replaced the storage
    with pytest.raises(RuntimeError, match="new storage"):
        swapping.apply_(RATIOS_B)

    other = fresh_unet()
    fixed = dict(other.named_parameters())[name]
    ptr = fixed.data_ptr()
    copying = Pruner(other, "paper", swap=False)
    copying.apply_(RATIOS_A).apply_(RATIOS_B).restore_()
    assert fixed.data_ptr() == ptr
    assert copying.dense_tensor(name).data_ptr() != ptr
