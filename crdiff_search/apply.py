"""Apply a recipe to a loaded pipeline: pruning plus POA, undone exactly on exit.

Example::

    from crdiff_search import apply_recipe
    recipe = Registry().get("testbed", (64, 64))
    with apply_recipe(pipe, recipe):
        images = pipe(prompt=["two red circles"], width=64, height=64).images
    # here ``pipe`` is the dense pipeline again, bit for bit
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from crdiff_search.errors import UsageError
from crdiff_search.poa import PrunedOutputAmplifier, check_weight, num_train_timesteps_of
from crdiff_search.recipe import Recipe


@dataclass
class AppliedRecipe:
    """What :func:`apply_recipe` yields: the recipe, the pruner and the amplifier in effect
    (``None`` when the effective weight is 1.0, i.e. plain pruning), and the attention
    scaling (``None`` unless the recipe carries one)."""

    recipe: Recipe
    pruner: object
    amplifier: PrunedOutputAmplifier | None
    w: float
    attention: object = None


class ModelRevisionWarning(UserWarning):
    """A recipe applied to weights other than those it was searched on."""


_REVISIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _check_revision(denoiser, recipe: Recipe, *, strict: bool) -> None:
    from crdiff_search.recipe import REVISION_PREFIX, RecipeIntegrityError, model_revision

    wanted = recipe.model_revision
    if not wanted or not wanted.startswith(REVISION_PREFIX):
        return  # no revision, or one of another kind (not comparable)
    have = _REVISIONS.get(denoiser)
    if have is None:
        have = _REVISIONS[denoiser] = model_revision(denoiser)
    if have == wanted:
        return
    message = (
        f"the recipe for {recipe.model} was searched on weights {wanted[:32]}..., but this "
        f"{type(denoiser).__name__} has {have[:32]}...: its ratios may not carry over "
        "(another checkpoint or a fine-tune)"
    )
    if strict:
        raise RecipeIntegrityError(message)
    warnings.warn(message, ModelRevisionWarning, stacklevel=4)


def make_pruner(denoiser, recipe: Recipe):
    """A ``Pruner`` over the recipe's partition (no per-model sort cache: generation prunes once)."""
    from crdiff_search.pruning import Pruner

    spec = recipe.partition
    partition = spec.build(denoiser)
    missing = sorted(set(recipe.ratios) - set(partition.groups))
    if missing:
        raise UsageError(
            f"recipe groups {missing} are not in the {spec.granularity!r} partition of "
            f"{type(denoiser).__name__} (groups: {', '.join(partition.groups)}): the recipe was made "
            "for another architecture"
        )
    return Pruner(denoiser, partition, criterion=recipe.criterion, cache="none")


def dense_tensors_of(pruner, ratios: Mapping[str, float]) -> dict:
    """The pruner's saved dense tensors for every group that ``ratios`` prune, on the model's
    device (shared, not copied, unless the pruner keeps its backup in host memory)."""
    groups = pruner.partition.groups
    return {
        name: pruner.dense_tensor_on_device(name)
        for group, ratio in ratios.items()
        if ratio > 0
        for name in groups[group]
    }


@contextmanager
def apply_recipe(
    pipe,
    recipe: Recipe,
    *,
    poa_w: float | None = None,
    poa_window=None,
    pruner=None,
    poa_batched: bool | str = "auto",
    check_revision: bool | str = True,
) -> Iterator[AppliedRecipe]:
    """Prune ``pipe``'s denoiser by ``recipe`` and amplify with POA while the block runs.

    ``poa_w`` and ``poa_window`` override the recipe's. A ``pruner`` built for this denoiser and
    the recipe's partition may be passed to reuse it; otherwise one is made. ``poa_batched``
    runs POA's dense and pruned passes as one forward at twice the batch (``True``; twice the
    activation memory), as two forwards (``False``), or the first at small batches only
    (``"auto"``, see :mod:`crdiff_search.poa`). A recipe's ``attention_scaling``
    (``"entropy"``) hooks the self-attention queries for the block
    (:class:`~crdiff_search.attention_scaling.EntropyScaling`). On exit the denoiser's weights,
    ``forward`` and hooks are the dense ones again, bit for bit.

    ``check_revision`` compares the recipe's ``model_revision`` with the denoiser's weights
    (:func:`~crdiff_search.recipe.model_revision`; hashed once per model object): a mismatch
    warns (:class:`ModelRevisionWarning`: the recipe was searched on other weights), raises
    :class:`~crdiff_search.recipe.RecipeIntegrityError` with ``"error"``, and is skipped with
    ``False``. A recipe without a comparable revision is applied as is.
    """
    from crdiff_search.models import denoiser_of

    if not isinstance(recipe, Recipe):
        raise UsageError(f"apply_recipe needs a Recipe, got {type(recipe).__name__}")
    w = check_weight(recipe.poa_w if poa_w is None else poa_w)
    window = recipe.poa_window if poa_window is None else poa_window
    denoiser = denoiser_of(pipe)
    if check_revision:
        _check_revision(denoiser, recipe, strict=check_revision == "error")
    pruner = pruner if pruner is not None else make_pruner(denoiser, recipe)
    attention = _attention_scaling(denoiser, recipe)
    pruner.apply_(recipe.ratios)
    try:
        if attention is not None:
            attention.attach()
        amplifier = None
        if w != 1.0:
            amplifier = PrunedOutputAmplifier(
                denoiser,
                dense_tensors_of(pruner, recipe.ratios),
                w=w,
                window=window,
                num_train_timesteps=num_train_timesteps_of(pipe),
                batched=poa_batched,
            )
        if amplifier is None:
            yield AppliedRecipe(recipe, pruner, None, w, attention)
        else:
            with amplifier:
                yield AppliedRecipe(recipe, pruner, amplifier, w, attention)
    finally:
        if attention is not None:
            attention.detach()
        pruner.restore_()


def _attention_scaling(denoiser, recipe: Recipe):
    """The recipe's attention scaling, built (not yet attached) for ``denoiser``, or None."""
    if recipe.attention_scaling is None:
        return None
    from crdiff_search.attention_scaling import EntropyScaling

    return EntropyScaling(denoiser)
