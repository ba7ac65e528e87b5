"""crdiff-search: cross-resolution pruning search for diffusion models.

The public API (``dir(crdiff_search)`` lists it; each name loads its module on first use, so
``import crdiff_search`` stays light: no torch, no Ray, no diffusers):

- :func:`load_experiment`: an experiment TOML (or the embedded testbed study) as a typed config;
- :func:`run_study`: run or resume a study on Ray Tune (:class:`StudyResult`);
- :func:`rerank_study`: the held-out verdict on a study's best trials, with and without POA;
- :class:`Recipe`, :func:`recipe_from_study`, :class:`Registry`: winners as recipes;
- :func:`apply_recipe`: prune a loaded pipeline by a recipe (and remove it bit for bit);
- :func:`bake_recipe`: a recipe baked into a plain diffusers folder;
- :func:`generate_with_recipe`: images at a resolution from the registry's recipe;
- :func:`run_comparison`: samplers side by side on one study.

>>> import crdiff_search
>>> crdiff_search.__version__                 # doctest: +SKIP
'0.1.0'
"""

from __future__ import annotations

import importlib

# public name -> (module, attribute). No public name is also a submodule's name: after
# ``import crdiff_search.rerank`` the package attribute ``rerank`` is that module, so a function
# published under the same name would be shadowed (or would shadow the module).
_PUBLIC = {
    "load_experiment": ("crdiff_search.config", "load_experiment"),
    "ExperimentConfig": ("crdiff_search.config", "ExperimentConfig"),
    "run_study": ("crdiff_search.runner", "run_study"),
    "StudyResult": ("crdiff_search.runner", "StudyResult"),
    "rerank_study": ("crdiff_search.rerank", "rerank"),
    "recipe_from_study": ("crdiff_search.rerank", "recipe_from_study"),
    "Recipe": ("crdiff_search.recipe", "Recipe"),
    "Registry": ("crdiff_search.registry", "Registry"),
    "apply_recipe": ("crdiff_search.apply", "apply_recipe"),
    "bake_recipe": ("crdiff_search.bake", "bake"),
    "generate_with_recipe": ("crdiff_search.generate", "generate"),
    "run_comparison": ("crdiff_search.compare", "run_comparison"),
    "CrdiffError": ("crdiff_search.errors", "CrdiffError"),
    "UsageError": ("crdiff_search.errors", "UsageError"),
}

__all__ = ["__version__", *sorted(_PUBLIC)]


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("crdiff-search")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


__version__ = _version()


def __getattr__(name: str):
    target = _PUBLIC.get(name)
    if target is None:
        raise AttributeError(f"module 'crdiff_search' has no attribute {name!r}")
    module, attribute = target
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return list(__all__)
