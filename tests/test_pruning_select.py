"""Histogram selection (the accelerator layout) and the host backup: the same masks as
``torch.kthvalue`` and the sorted cache, for every dtype, and restore bit for bit."""

from __future__ import annotations

import pytest
import torch

from crdiff_search import testing
from crdiff_search.errors import UsageError
from crdiff_search.pruning import Pruner
from crdiff_search.pruning.select import BitHistogram, order_keys

VECTORS = [
    {"down": 0.3, "mid": 0.55, "up": 0.7},
    {"down": 0.9, "up": 0.1},
    {"mid": 0.2},
    {"down": 0.3, "mid": 0.55, "up": 0.75},  # one ratio moved
]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_histogram_kth_equals_kthvalue(dtype):
    g = torch.Generator().manual_seed(0)
    parts = [
        (torch.randn(2000, generator=g) * 3).to(dtype),  # negatives and positives
        torch.randint(-4, 5, (500,), generator=g).to(dtype),  # many ties, zeros
        torch.tensor([-0.0, 0.0, 1e-7, -1e-7, 65000.0]).to(dtype),
    ]
    hist = BitHistogram(dtype)
    for part in parts:
        hist.add(part)
    flat = torch.cat(parts)
    n = flat.numel()
    for k in [1, 2, 3, 17, n // 3, n // 2, n - 1, n]:
        expected = torch.kthvalue(flat.float(), k).values
        got = hist.kth(k, lambda: parts)
        assert got.dtype == dtype
        assert float(got) == float(expected), (k, float(got), float(expected))
    with pytest.raises(ValueError, match="k must be in 1.."):
        hist.kth(n + 1, lambda: parts)


def test_order_keys_sort_like_the_values():
    x = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.25, 2.0, 1e30])
    hi, lo = order_keys(x)
    keys = hi.long() * 65536 + lo.long()
    assert torch.equal(torch.argsort(keys), torch.arange(x.numel()))
    with pytest.raises(TypeError, match="fp16, bf16 or fp32"):
        order_keys(x.double())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    ("cache", "backup", "criterion"),
    [
        ("histogram", "device", "magnitude"),
        ("histogram", "host", "magnitude"),
        ("none", "host", "magnitude"),
        ("sorted", "host", "magnitude"),
        ("histogram", "host", "magnitude-tensor"),
        ("histogram", "device", "random"),
    ],
)
def test_layouts_prune_exactly_like_the_sorted_cache(dtype, cache, backup, criterion):
    reference_model = testing.tiny_unet(seed=3).to(dtype)
    dense = {k: v.clone() for k, v in reference_model.state_dict().items()}
    reference = Pruner(reference_model, "paper", cache="sorted", criterion=criterion)
    model = testing.tiny_unet(seed=3).to(dtype)
    pruner = Pruner(model, "paper", cache=cache, backup=backup, criterion=criterion)
    storage = {n: p.data_ptr() for n, p in model.named_parameters()}
    for ratios in VECTORS:
        reference.apply_(ratios)
        pruner.apply_(ratios)
        pairs = zip(reference_model.state_dict().items(), model.state_dict().values(), strict=True)
        for (name, a), b in pairs:
            assert torch.equal(a, b), (ratios, name)
        masks = pruner.keep_masks(ratios)
        assert masks.keys() == reference.keep_masks(ratios).keys()
    pruner.restore_()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, dense[name]), name
    if backup == "host":  # pruned in place: the parameters never changed storage
        assert {n: p.data_ptr() for n, p in model.named_parameters()} == storage


def test_auto_layout_and_memory_accounting():
    model = testing.tiny_unet(seed=1)
    pruner = Pruner(model, "paper")
    assert (pruner.cache, pruner.backup, pruner.host_backup) == ("sorted", "device", False)
    lean = Pruner(testing.tiny_unet(seed=1), "paper", cache="histogram", backup="host")
    extra = lean.extra_memory_bytes()
    selected = sum(
        p.numel() * p.element_size()
        for n, p in lean.model.named_parameters()
        if n in set(lean.param_names)
    )
    assert extra["backup"] == selected and extra["sorted_cache"] == 0
    assert 0 < extra["histograms"] <= 3 * 65536 * 8 * 2  # a few counts per pool
    assert extra["total"] == extra["device"] + extra["host"]
    assert "backup='host'" in repr(lean)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"backup": "gpu"}, "unknown backup 'gpu'; valid: auto, device, host"),
        ({"cache": "lru"}, "unknown cache mode 'lru'; valid: auto, sorted, histogram, none"),
        ({"device_budget": -1}, "device_budget must be"),
        ({"device_budget": True}, "device_budget must be"),
    ],
)
def test_bad_layout_options_are_refused(kwargs, match):
    with pytest.raises(UsageError, match=match):
        Pruner(testing.tiny_unet(), "paper", **kwargs)


def test_dense_tensor_on_device_is_the_dense_weight():
    model = testing.tiny_unet(seed=2)
    dense = {k: v.clone() for k, v in model.named_parameters()}
    pruner = Pruner(model, "paper", cache="none", backup="host").apply_(VECTORS[0])
    name = pruner.param_names[0]
    assert torch.equal(pruner.dense_tensor_on_device(name), dense[name])
    assert not torch.equal(dict(model.named_parameters())[name], dense[name])
    with pytest.raises(UsageError, match="not a pruned parameter"):
        pruner.dense_tensor_on_device("conv_in.weight")
