"""apply_recipe: the real Pruner plus POA on a tiny SD pipeline; exact ends and exact restore."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import crdiff_search
from crdiff_search.errors import UsageError
from crdiff_search.recipe import Recipe

RATIOS = {"down": 0.3, "mid": 0.5, "up": 0.4}


def _images(pipe):
    gens = [torch.Generator().manual_seed(s) for s in (5, 6)]
    with torch.inference_mode():
        return pipe(
            prompt=["a red circle", "two squares"],
            height=16,
            width=16,
            num_inference_steps=3,
            guidance_scale=4.0,
            generator=gens,
            output_type="np",
        ).images


@pytest.fixture(scope="module")
def pipe():
    from crdiff_search.testing import tiny_sd_pipeline

    return tiny_sd_pipeline(seed=2)


def test_apply_recipe_ends_and_exact_restore(pipe):
    from crdiff_search.pruning import Pruner
    from crdiff_search.search_spaces import build_partition

    unet = pipe.unet
    state = {k: v.clone() for k, v in unet.state_dict().items()}
    ptrs = {n: p.data_ptr() for n, p in unet.named_parameters()}
    dense = _images(pipe)
    pruner = Pruner(unet, build_partition(unet, "paper"), cache="none")
    with pruner.pruned(RATIOS):
        pruned = _images(pipe)
    recipe = Recipe(model="tiny", width=16, height=16, ratios=RATIOS, poa_w=1.5)

    with crdiff_search.apply_recipe(pipe, recipe, poa_w=0.0):
        w0 = _images(pipe)
    with crdiff_search.apply_recipe(pipe, recipe, poa_w=1.0) as applied:
        assert applied.amplifier is None and applied.pruner.current_ratios == RATIOS
        w1 = _images(pipe)
    with crdiff_search.apply_recipe(pipe, recipe) as applied:
        poa = _images(pipe)
        amp = applied.amplifier
        # the amplifier swaps in the pruner's own dense backups: no third copy of anything
        backups = {applied.pruner.dense_tensor(n).data_ptr() for n in applied.pruner.param_names}
        assert len(amp._pairs) == len(applied.pruner.param_names)
        assert all(tensor.data_ptr() in backups for _, tensor in amp._pairs)
        assert amp.steps == 3 and amp.amplified == 3

    assert np.array_equal(w0, dense)
    assert np.array_equal(w1, pruned)
    assert not np.array_equal(poa, pruned) and not np.array_equal(poa, dense)
    # restored: the same storage, the same bits, the class's own forward, the same images
    assert "forward" not in unet.__dict__
    assert {n: p.data_ptr() for n, p in unet.named_parameters()} == ptrs
    after = unet.state_dict()
    assert all(torch.equal(after[k], v) for k, v in state.items())
    assert np.array_equal(_images(pipe), dense)


def test_apply_recipe_restores_on_error_and_checks_groups(pipe):
    unet = pipe.unet
    state = {k: v.clone() for k, v in unet.state_dict().items()}
    recipe = Recipe(
        model="tiny", width=16, height=16, ratios=RATIOS, poa_w=2.0, poa_window=(0.5, 1.0)
    )
    with pytest.raises(RuntimeError, match="boom"), crdiff_search.apply_recipe(pipe, recipe):
        assert not torch.equal(
            unet.state_dict()["mid_block.attentions.0.transformer_blocks.0.ff.net.2.weight"],
            state["mid_block.attentions.0.transformer_blocks.0.ff.net.2.weight"],
        )
        raise RuntimeError("boom")
    assert "forward" not in unet.__dict__
    assert all(torch.equal(unet.state_dict()[k], v) for k, v in state.items())
    bad = Recipe(model="tiny", width=16, height=16, ratios={"early": 0.2})
    with pytest.raises(UsageError, match="early"), crdiff_search.apply_recipe(pipe, bad):
        pass


def test_model_revision_is_one_hash_of_the_weights_and_apply_recipe_checks_it():
    import warnings

    from crdiff_search.apply import ModelRevisionWarning
    from crdiff_search.recipe import RecipeIntegrityError, model_revision
    from crdiff_search.testing import tiny_sd_pipeline

    pipe = tiny_sd_pipeline(seed=3)
    other = tiny_sd_pipeline(seed=4)
    revision = model_revision(pipe.unet)
    # one checkpoint in float32 and float16 has one revision; other weights another
    assert model_revision(tiny_sd_pipeline(seed=3).unet.half()) == revision
    assert model_revision(other.unet) != revision
    recipe = Recipe(
        model="tiny", width=16, height=16, ratios=RATIOS, poa_w=1.0, model_revision=revision
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with crdiff_search.apply_recipe(pipe, recipe):  # the weights it was made on: silent
            pass
    warned = pytest.warns(ModelRevisionWarning, match="searched on weights")
    with warned, crdiff_search.apply_recipe(other, recipe):
        pass
    before = {k: v.clone() for k, v in other.unet.state_dict().items()}
    refused = pytest.raises(RecipeIntegrityError, match="searched on weights")
    with refused, crdiff_search.apply_recipe(other, recipe, check_revision="error"):
        pass
    after = other.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # refused before pruning
    old_kind = Recipe(
        model="tiny", width=16, height=16, ratios=RATIOS, model_revision="sha256:" + "ab" * 32
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with crdiff_search.apply_recipe(other, old_kind):  # not comparable: applied as is
            pass
