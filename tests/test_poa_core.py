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


@pytest.mark.parametrize("batched", [True, False, "auto"])
def test_step_output_is_the_poa_combination(sd_pipe, batched):
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
            with PrunedOutputAmplifier(net, dense, w=1.5, batched=batched) as amp:
                out = net(x, t, ctx, return_dict=False)[0]
                out_obj = net(x, t, encoder_hidden_states=ctx).sample
        finally:
            _restore(net, dense)
    expected = (1 - 1.5) * d + 1.5 * p
    # two passes give the formula to rounding; one pass at twice the batch may round a matrix
    # product differently, still far below the 1e-4 gap between POA and plain pruning
    atol = 1e-6 if batched is False else 1e-5
    torch.testing.assert_close(out, expected, rtol=0, atol=atol)
    torch.testing.assert_close(out_obj, expected, rtol=0, atol=atol)
    assert (out - p).abs().max() > 1e-4
    assert amp.mode == {True: "batched", False: "sequential", "auto": "auto"}[batched]
    # a batch of 2 is one forward under "auto" too (the first step also ran two passes)
    assert amp.batched_steps == (0 if batched is False else 2)
    assert not any("forward" in m.__dict__ for m in net.modules())  # every wrapper removed


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
        amp = PrunedOutputAmplifier(net, dense, w=1.5, batched=False)
        with torch.inference_mode(), amp:
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


@pytest.mark.parametrize("kind", ["unet", "transformer"])
def test_batched_pass_matches_two_passes_in_a_pipeline(kind, sd_pipe, dit_pipe):
    """Whole sampling runs: one forward at twice the batch gives the images of two forwards,
    for a UNet (text conditioning, CFG) and a DiT (class labels); the self-check keeps it."""
    pipe, net, run = (
        (sd_pipe, sd_pipe.unet, _sd_images)
        if kind == "unet"
        else (dit_pipe, dit_pipe.transformer, _dit_images)
    )
    dense = _prune_in_place(net)
    try:
        with torch.inference_mode():
            pruned = run(pipe)
            with PrunedOutputAmplifier(net, dense, w=1.5, batched=True) as one:
                batched = run(pipe)
            with PrunedOutputAmplifier(net, dense, w=1.5, batched=False) as two:
                sequential = run(pipe)
    finally:
        _restore(net, dense)
    assert one.mode == "batched" and two.mode == "sequential"
    assert one.amplified == two.amplified == 3
    np.testing.assert_allclose(batched, sequential, rtol=0, atol=1e-4)
    assert np.abs(sequential - pruned).max() > 1e-3  # POA did change the images


class _TokensFirst(torch.nn.Module):
    """A layer run on (tokens, batch, features): splitting its first dimension splits tokens."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(4, 4)
        self.mix = torch.nn.Linear(4, 4)

    def forward(self, sample):
        h = self.proj(sample.transpose(0, 1)).transpose(0, 1)
        return self.mix(h.softmax(dim=1))


def test_self_check_falls_back_to_two_passes():
    torch.manual_seed(0)
    net = _TokensFirst()
    x = torch.randn(2, 6, 4)
    with torch.inference_mode():
        d = net(x)
        dense = {"proj.weight": net.proj.weight.detach().clone()}
        net.proj.weight.mul_(net.proj.weight.abs() > net.proj.weight.abs().median())
        p = net(x)
        amp = PrunedOutputAmplifier(net, dense, w=1.5)
        assert amp.mode == "auto"
        with amp, pytest.warns(RuntimeWarning, match="two passes"):
            first = net(x)
        with amp:
            second = net(x)
    expected = (1 - 1.5) * d + 1.5 * p
    assert amp.mode == "sequential"
    torch.testing.assert_close(first, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(second, expected, rtol=0, atol=1e-6)


def test_parameters_outside_splittable_layers_mean_two_passes():
    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(4))

        def forward(self, sample):
            return sample * self.scale

    net = Scaled()
    amp = PrunedOutputAmplifier(net, {"scale": torch.full((4,), 2.0)}, w=2.0)
    assert amp.mode == "sequential"
    with torch.inference_mode(), amp:
        out = net(torch.ones(3, 4))
    torch.testing.assert_close(out, torch.zeros(3, 4))  # (1 - 2) * 2 + 2 * 1


def test_out_of_memory_in_the_batched_pass_falls_back_to_two_passes(sd_pipe, monkeypatch):
    net = sd_pipe.unet
    torch.manual_seed(0)
    x, ctx, t = torch.randn(2, 4, 8, 8), torch.randn(2, 7, 32), torch.tensor(500)
    with torch.inference_mode():
        d = net(x, t, ctx).sample
        dense = _prune_in_place(net)
        try:
            p = net(x, t, ctx).sample
            amp = PrunedOutputAmplifier(net, dense, w=1.5)

            def too_big(*args, **kwargs):
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

            monkeypatch.setattr(amp, "_batched_pass", too_big)
            with amp, pytest.warns(RuntimeWarning, match="out of memory"):
                out = net(x, t, ctx).sample
        finally:
            _restore(net, dense)
    assert amp.mode == "sequential" and not amp.batched
    torch.testing.assert_close(out, (1 - 1.5) * d + 1.5 * p, rtol=0, atol=1e-6)


def test_the_batched_check_runs_once_per_network(sd_pipe):
    """The first amplifier on a network compares one batched step with two passes; later ones
    on the same network and layers trust that verdict (no extra passes); so does a refusal."""
    from crdiff_search.poa import _CHECKED

    net = sd_pipe.unet
    _CHECKED.pop(net, None)
    calls = []
    handle = net.conv_in.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    x, ctx, t = torch.randn(2, 4, 8, 8), torch.randn(2, 7, 32), torch.tensor(500)
    dense = _prune_in_place(net)
    try:
        with torch.inference_mode():
            with PrunedOutputAmplifier(net, dense, w=1.5):
                net(x, t, ctx)
                net(x, t, ctx)
            first = list(calls)
            calls.clear()
            with PrunedOutputAmplifier(net, dense, w=1.5) as again:
                net(x, t, ctx)
    finally:
        handle.remove()
        _restore(net, dense)
    assert first == [4, 2, 2, 4]  # batched + checked by two passes, then batched alone
    assert calls == [4] and again.mode == "auto" and again.batched_steps == 1

    tokens_first = _TokensFirst()
    dense = {"proj.weight": tokens_first.proj.weight.detach().clone() * 2}
    with torch.inference_mode():
        with pytest.warns(RuntimeWarning), PrunedOutputAmplifier(tokens_first, dense, w=1.5):
            tokens_first(torch.randn(2, 6, 4))
        later = PrunedOutputAmplifier(tokens_first, dense, w=1.5)
    assert later.mode == "sequential"


def test_auto_runs_one_forward_only_at_small_batches(sd_pipe):
    from crdiff_search.poa import AUTO_MAX_BATCH

    net = sd_pipe.unet
    dense = _prune_in_place(net)
    try:
        with torch.inference_mode():
            for batch, one_forward in ((AUTO_MAX_BATCH, True), (AUTO_MAX_BATCH + 2, False)):
                x, ctx = torch.randn(batch, 4, 8, 8), torch.randn(batch, 7, 32)
                with PrunedOutputAmplifier(net, dense, w=1.5) as auto:
                    out = net(x, torch.tensor(500), ctx).sample
                with PrunedOutputAmplifier(net, dense, w=1.5, batched=False):
                    ref = net(x, torch.tensor(500), ctx).sample
                assert (auto.batched_steps == 1) is one_forward, batch
                torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    finally:
        _restore(net, dense)
    for bad in ("always", 1, None):
        with pytest.raises(UsageError, match="True, False or 'auto'"):
            PrunedOutputAmplifier(net, {}, w=1.5, batched=bad)
