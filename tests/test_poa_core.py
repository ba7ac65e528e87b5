"""POA on one set of weights: exact ends, the combination, the window, shared memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crdiff_search.errors import UsageError
from crdiff_search.poa import PoaWindow, PrunedOutputAmplifier

PROMPTS = ["a red circle", "two blue squares"]
SEEDS = [3, 4]


def _prunable(module) -> list[str]:
    return [
        n
        for n, _ in module.named_parameters()
        if ("attn1" in n or ".ff." in n) and n.endswith("weight")
    ]


def _prune_in_place(module, ratio=0.5) -> dict[str, torch.Tensor]:
    """Magnitude-prune the self-attention/FF weights in place; return the dense copies."""
    params = dict(module.named_parameters())
    dense = {}
    with torch.no_grad():
        for name in _prunable(module):
            p = params[name]
            dense[name] = p.detach().clone()
            k = max(1, int(p.numel() * ratio))
            t = p.abs().flatten().kthvalue(k).values
            p.mul_(p.abs() > t)
    return dense


def _restore(module, dense):
    params = dict(module.named_parameters())
    with torch.no_grad():
        for name, t in dense.items():
            params[name].copy_(t)


def _sd_images(pipe, steps=3):
    gens = [torch.Generator().manual_seed(s) for s in SEEDS]
    return pipe(
        prompt=PROMPTS,
        height=32,
        width=32,
        num_inference_steps=steps,
        guidance_scale=5.0,
        generator=gens,
        output_type="np",
    ).images


def _dit_images(pipe, steps=3):
    gens = [torch.Generator().manual_seed(s) for s in SEEDS]
    return pipe(
        class_labels=[0, 1],
        num_inference_steps=steps,
        guidance_scale=4.0,
        generator=gens,
        output_type="np",
    ).images


@pytest.fixture(scope="module")
def sd_pipe():
    from crdiff_search.testing import tiny_sd_pipeline

    return tiny_sd_pipeline(seed=0)


@pytest.fixture(scope="module")
def dit_pipe(sd_pipe):
    from diffusers import DDIMScheduler, DiTPipeline

    from crdiff_search.testing import tiny_dit

    pipe = DiTPipeline(
        transformer=tiny_dit(seed=1),
        vae=sd_pipe.vae,
        scheduler=DDIMScheduler(),
        id2label={0: "cat", 1: "dog"},
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("kind", ["unet", "transformer"])
def test_ends_are_bit_exact(kind, sd_pipe, dit_pipe):
    pipe, net, run = (
        (sd_pipe, sd_pipe.unet, _sd_images)
        if kind == "unet"
        else (dit_pipe, dit_pipe.transformer, _dit_images)
    )
    with torch.inference_mode():
        dense_images = run(pipe)
    dense = _prune_in_place(net)
    try:
        with torch.inference_mode():
            pruned_images = run(pipe)
            with PrunedOutputAmplifier(net, dense, w=0.0) as amp0:
                w0 = run(pipe)
            with PrunedOutputAmplifier(net, dense, w=1.0):
                w1 = run(pipe)
    finally:
        _restore(net, dense)
    assert not np.array_equal(dense_images, pruned_images)
    assert np.array_equal(w0, dense_images)
    assert np.array_equal(w1, pruned_images)
    assert amp0.steps == 3 and amp0.amplified == 3
    # the wrapper is gone: the module's own forward again
    assert "forward" not in net.__dict__


def test_step_output_is_the_poa_combination(sd_pipe):
    net = sd_pipe.unet
    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 8)
    ctx = torch.randn(2, 7, 32)
    t = torch.tensor(500)
    with torch.inference_mode():
        d = net(x, t, ctx).sample
        dense = _prune_in_place(net)
        try:
            p = net(x, t, ctx).sample
            with PrunedOutputAmplifier(net, dense, w=1.5):
                out = net(x, t, ctx, return_dict=False)[0]
                out_obj = net(x, t, encoder_hidden_states=ctx).sample
        finally:
            _restore(net, dense)
    expected = (1 - 1.5) * d + 1.5 * p
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(out_obj, expected, rtol=0, atol=1e-6)
    assert (out - p).abs().max() > 1e-4


def test_window_limits_where_poa_applies(sd_pipe):
    net = sd_pipe.unet
    dense = _prune_in_place(net)
    try:
        with torch.inference_mode():
            pruned = _sd_images(sd_pipe, steps=4)
            # 4 DDIM steps over 1000 timesteps: t = 751, 501, 251, 1 -> two of them above 0.5
            half = PrunedOutputAmplifier(net, dense, w=2.0, window=(0.5, 1.0))
            with half:
                early = _sd_images(sd_pipe, steps=4)
            none = PrunedOutputAmplifier(net, dense, w=2.0, window=PoaWindow(0.9, 1.0))
            with none:
                outside = _sd_images(sd_pipe, steps=4)
    finally:
        _restore(net, dense)
    assert (half.steps, half.amplified) == (4, 2)
    assert (none.steps, none.amplified) == (4, 0)
    assert np.array_equal(outside, pruned)
    assert not np.array_equal(early, pruned)


def test_weights_are_shared_not_copied(sd_pipe):
    """Only pruned tensors have a second copy; every other parameter is the same storage in the
    dense and the pruned pass, and the pruned tensors are swapped by pointer, not copied."""
    net = sd_pipe.unet
    params = dict(net.named_parameters())
    before = {n: p.data_ptr() for n, p in params.items()}
    dense = _prune_in_place(net)
    seen: list[dict[str, int]] = []
    probe = net.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q

    def record(module, args):
        seen.append({n: p.data_ptr() for n, p in params.items()})

    handle = probe.register_forward_pre_hook(record)
    try:
        with torch.inference_mode(), PrunedOutputAmplifier(net, dense, w=1.5):
            net(torch.randn(2, 4, 8, 8), torch.tensor(10), torch.randn(2, 7, 32))
    finally:
        handle.remove()
        _restore(net, dense)
    assert len(seen) == 2  # one dense pass, one pruned pass
    dense_pass, pruned_pass = seen
    for name in params:
        if name in dense:
            assert dense_pass[name] == dense[name].data_ptr()
            assert pruned_pass[name] == before[name]
        else:
            assert dense_pass[name] == pruned_pass[name] == before[name]
    # after the step every parameter points where it did before
    assert {n: p.data_ptr() for n, p in params.items()} == before
    pruned_bytes = sum(t.numel() * t.element_size() for t in dense.values())
    total_bytes = sum(p.numel() * p.element_size() for p in params.values())
    assert pruned_bytes < 0.7 * total_bytes


def test_bad_arguments_raise_usage_errors(sd_pipe):
    net = sd_pipe.unet
    with pytest.raises(UsageError, match="w="):
        PrunedOutputAmplifier(net, {}, w=float("nan"))
    with pytest.raises(UsageError, match="unknown parameters"):
        PrunedOutputAmplifier(net, {"nope.weight": torch.zeros(1)}, w=1.5)
    name = _prunable(net)[0]
    with pytest.raises(UsageError, match="shape"):
        PrunedOutputAmplifier(net, {name: torch.zeros(3)}, w=1.5)
    with pytest.raises(UsageError, match="empty"):
        PoaWindow(0.8, 0.2)
    with pytest.raises(UsageError, match=r"\[0, 1\]"):
        PoaWindow.parse("0.1,7")
    assert PoaWindow.parse("0.25, 0.75") == PoaWindow(0.25, 0.75)
