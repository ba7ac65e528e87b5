"""Attention-entropy scaling: the factor is Jin et al.'s formula for each layer's token counts,
it reaches the attention logits through diffusers' SDPA processor, it leaves cross-attention
alone, and attaching and detaching it (directly, through a recipe, through a study's
``search.repair``) leaves the model bit for bit as it was."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from crdiff_search.attention_scaling import (
    EntropyScaling,
    entropy_scale,
    layer_train_tokens,
    self_attention_layers,
)
from crdiff_search.errors import UsageError
from crdiff_search.testing import tiny_dit, tiny_unet


@pytest.mark.parametrize(
    "n, t",
    [(36, 64), (9, 16), (1024, 4096), (9216, 4096), (4096, 1024), (100, 7)],
)
def test_scale_is_the_formula(n, t):
    assert entropy_scale(n, t) == pytest.approx(math.sqrt(math.log(n) / math.log(t)), rel=1e-12)
    assert (entropy_scale(n, t) < 1) == (n < t)


def test_scale_is_one_where_the_log_says_nothing():
    assert entropy_scale(64, 64) == 1.0
    assert entropy_scale(1, 64) == 1.0 and entropy_scale(64, 1) == 1.0
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            entropy_scale(bad, 64)


@pytest.mark.parametrize(
    "n, hw, train, expected",
    [
        (24 * 24, (24, 24), (32, 32), 32 * 32),  # full-resolution level
        (6 * 6, (24, 24), (32, 32), 8 * 8),  # level 4
        (3 * 3, (24, 24), (32, 32), 4 * 4),  # level 8
        (7 * 9, (50, 70), (64, 64), 8 * 8),  # SD1.5 at 400x560, level 8: sides round up
        (25 * 35, (50, 70), (64, 64), 32 * 32),  # level 2
        (48 * 48, (96, 96), (32, 32), 16 * 16),  # a patch-2 transformer
    ],
)
def test_layer_token_counts(n, hw, train, expected):
    assert layer_train_tokens(n, hw, train) == expected


def test_layer_token_counts_fall_back_to_the_area_ratio():
    # 50 tokens fit no power-of-two factor of a 24x24 latent: scaled by the area, 50 * 1024/576
    assert layer_train_tokens(50, (24, 24), (32, 32)) == round(50 * 1024 / 576)


def _unet_call(unet, size: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cfg = unet.config
    x = torch.randn(2, cfg.in_channels, size, size, generator=g)
    text = torch.randn(2, 4, cfg.cross_attention_dim, generator=g)
    with torch.no_grad():
        return unet(x, torch.tensor([400, 400]), encoder_hidden_states=text).sample


def _hook_count(module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


def test_attach_changes_below_training_size_and_detach_is_bit_for_bit():
    unet = tiny_unet()
    train = unet.config.sample_size
    below = train // 2
    before = _unet_call(unet, below)
    at_train = _unet_call(unet, train)
    hooks = _hook_count(unet)
    with EntropyScaling(unet) as scaling:
        scaled = _unet_call(unet, below)
        assert scaling.last_scales and all(s < 1 for s in scaling.last_scales.values())
        # at the training size every factor is exactly 1: the same numbers, bit for bit
        assert torch.equal(_unet_call(unet, train), at_train)
        assert set(scaling.last_scales.values()) == {1.0}
    assert not torch.allclose(scaled, before, atol=1e-6)
    assert torch.equal(_unet_call(unet, below), before)
    assert _hook_count(unet) == hooks


def test_each_layer_gets_its_own_factor_and_cross_attention_none():
    unet = tiny_unet()
    train = unet.config.sample_size
    size = train * 3 // 2  # above the training size: factors above 1
    with EntropyScaling(unet) as scaling:
        _unet_call(unet, size)
        names = {name for name, _ in self_attention_layers(unet)}
        assert set(scaling.last_scales) == names
        for _name, attn in self_attention_layers(unet):
            assert attn.to_q._forward_hooks  # hooked
        for name, module in unet.named_modules():
            if getattr(module, "is_cross_attention", False):
                assert not module.to_q._forward_hooks, name  # cross-attention untouched
    # every factor is the formula for that layer's own counts
    tokens = {}

    def record(name):
        def hook(module, args, output):
            tokens[name] = output.shape[1]

        return hook

    handles = [
        attn.to_q.register_forward_hook(record(name)) for name, attn in self_attention_layers(unet)
    ]
    _unet_call(unet, size)
    for h in handles:
        h.remove()
    for name, n in tokens.items():
        t = layer_train_tokens(n, (size, size), (train, train))
        assert scaling.last_scales[name] == pytest.approx(entropy_scale(n, t))
        assert scaling.last_scales[name] > 1


def _attention_by_hand(attn, x, *, logit_scale: float):
    """Self-attention of ``attn`` over a B x C x H x W input, written out, with the logits
    (after any query/key norm) multiplied by ``logit_scale``."""
    b, c, h, w = x.shape
    tokens = x.reshape(b, c, h * w).transpose(1, 2)
    heads = attn.heads

    def split(t):
        return t.view(b, -1, heads, t.shape[-1] // heads).transpose(1, 2)

    q, k, v = split(attn.to_q(tokens)), split(attn.to_k(tokens)), split(attn.to_v(tokens))
    if attn.norm_q is not None:
        q, k = attn.norm_q(q), attn.norm_k(k)
    logits = (q @ k.transpose(-1, -2)) * attn.scale * logit_scale
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, h * w, -1)
    out = attn.to_out[1](attn.to_out[0](out))
    return out.transpose(1, 2).reshape(b, c, h, w) / attn.rescale_output_factor


@pytest.mark.parametrize("qk_norm", [None, "rms_norm"])
def test_query_scaling_is_logit_scaling_through_sdpa(qk_norm):
    """The hooked query gives what the plain processor gives with attn.scale multiplied by the
    factor: the logits are scaled even though SDPA ignores attn.scale."""
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=2, dim_head=8, qk_norm=qk_norm).eval()
    x = torch.randn(2, 16, 6, 6)  # a 6x6 latent, 36 tokens; training latent 8x8, 64 tokens
    factor = entropy_scale(36, 64)

    scaling = EntropyScaling(attn, train_size=8)
    attn.set_processor(AttnProcessor2_0())
    with torch.no_grad(), scaling:
        hooked = attn(x)
        assert set(scaling.last_scales.values()) == {factor}
    with torch.no_grad():
        expected = _attention_by_hand(attn, x, logit_scale=factor)
        plain = attn(x)
        assert torch.allclose(plain, _attention_by_hand(attn, x, logit_scale=1.0), atol=1e-5)
    assert torch.allclose(hooked, expected, atol=1e-5)
    assert not torch.allclose(plain, expected, atol=1e-4)
    if qk_norm:  # the scale goes after the norm, which would otherwise undo it
        assert attn.norm_q._forward_hooks == {} and not attn.to_q._forward_hooks


def test_transformer_layers_use_the_patch_factor():
    dit = tiny_dit(num_layers=2)
    train = dit.config.sample_size  # 8 latent: 4x4 = 16 tokens at patch 2
    with EntropyScaling(dit) as scaling:
        x = torch.randn(1, 4, 12, 12)
        with torch.no_grad():
            dit(x, timestep=torch.tensor([10]), class_labels=torch.tensor([1]))
        assert len(scaling.last_scales) == 2
        for value in scaling.last_scales.values():
            assert value == pytest.approx(entropy_scale(36, (train // 2) ** 2))


def test_errors_are_clear():
    with pytest.raises(UsageError, match="no self-attention"):
        EntropyScaling(torch.nn.Linear(2, 2), train_size=8)
    unet = tiny_unet()
    with pytest.raises(UsageError, match="training latent size"):
        EntropyScaling(unet, train_size="big")
    scaling = EntropyScaling(unet).attach()
    with pytest.raises(RuntimeError, match="already attached"):
        scaling.attach()
    scaling.detach()


# ---- recipes -----------------------------------------------------------------------------------
def test_recipe_field_roundtrips_and_old_recipes_keep_their_checksum():
    from crdiff_search.recipe import Recipe, RecipeError

    plain = Recipe(model="testbed", width=24, height=24, ratios={"down": 0.5})
    assert "attention_scaling" not in plain.to_dict()  # written as before the field existed
    assert Recipe.from_json(plain.to_json()) == plain
    scaled = plain.replace(attention_scaling="entropy", ratios={"down": 0.0})
    data = scaled.to_dict()
    assert data["attention_scaling"] == "entropy"
    assert Recipe.from_dict(data) == scaled and scaled.checksum != plain.checksum
    data["attention_scaling"] = None  # edited after export
    with pytest.raises(RecipeError, match="checksum"):
        Recipe.from_dict(data)
    with pytest.raises(RecipeError, match="attention_scaling 'log'.*'entropy'"):
        plain.replace(attention_scaling="log")


def test_apply_recipe_scales_and_restores_bit_for_bit():
    from crdiff_search.apply import apply_recipe
    from crdiff_search.models import denoiser_of, generate_images, load_pipeline
    from crdiff_search.recipe import Recipe

    pipe = load_pipeline("testbed")
    unet = denoiser_of(pipe)
    hooks = _hook_count(unet)
    state = {k: v.clone() for k, v in unet.state_dict().items()}

    def images():
        out = generate_images(
            pipe, ["two red circles"], [3], width=24, height=24, steps=3, guidance=2.0
        )
        return torch.tensor([list(im.getdata()) for im in out], dtype=torch.float32)

    dense = images()
    recipe = Recipe(
        model="testbed",
        width=24,
        height=24,
        ratios={"down": 0.0, "mid": 0.0, "up": 0.0},
        attention_scaling="entropy",
    )
    with apply_recipe(pipe, recipe, check_revision=False) as applied:
        assert applied.attention is not None and applied.attention.attached
        scaled = images()
    assert not torch.equal(scaled, dense)
    assert torch.equal(images(), dense)
    assert _hook_count(unet) == hooks
    assert all(torch.equal(v, state[k]) for k, v in unet.state_dict().items())


# ---- studies -----------------------------------------------------------------------------------
def test_study_repair_is_validated():
    from crdiff_search.config import ExperimentConfig

    assert ExperimentConfig().search.repair == "prune"
    assert ExperimentConfig().search.attention_scaling is None
    both = ExperimentConfig.from_dict({"search": {"repair": "prune+entropy"}})
    assert both.search.attention_scaling == "entropy"
    with pytest.raises(UsageError, match="search.repair.*prune\\+entropy"):
        ExperimentConfig.from_dict({"search": {"repair": "entropy+prune"}})
    with pytest.raises(UsageError, match="search.trials = 1"):
        ExperimentConfig.from_dict({"search": {"repair": "entropy", "trials": 30}})
    alone = ExperimentConfig.from_dict({"search": {"repair": "entropy", "trials": 1}})
    assert alone.search.attention_scaling == "entropy"


def test_worker_spec_carries_the_scaling_and_rerank_keeps_a_plain_dense_worker():
    from crdiff_search.config import ExperimentConfig
    from crdiff_search.rerank import task_spec
    from crdiff_search.runner.spec import WorkerSpec

    config = ExperimentConfig.from_dict({"search": {"repair": "prune+entropy"}})
    spec = WorkerSpec.from_config(config)
    assert spec.attention_scaling == "entropy"
    plain = WorkerSpec.from_config(ExperimentConfig())
    assert spec.load_key() != plain.load_key()  # a scaled model is another loaded state
    rerank_spec = task_spec(config, ["a red circle"], [5])
    assert rerank_spec.attention_scaling is None


def test_rerank_candidates_include_trial_zero_only_with_scaling():
    from crdiff_search.rerank import top_trials

    trials = pd.DataFrame(
        {
            "trial_id": ["a", "b", "c"],
            "trial_index": [0, 1, 2],
            "state": ["COMPLETE"] * 3,
            "score": [0.9, 0.5, 0.7],
            "ratio.down": [0.0, 0.3, 0.6],
        }
    )
    plain = top_trials(trials, ["down"], 3, "max")
    assert [c["trial_id"] for c in plain] == ["c", "b"]
    assert {c["attention_scaling"] for c in plain} == {None}
    scaled = top_trials(trials, ["down"], 3, "max", attention_scaling="entropy")
    assert [c["trial_id"] for c in scaled] == ["a", "c", "b"]
    assert {c["attention_scaling"] for c in scaled} == {"entropy"}
