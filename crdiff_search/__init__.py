"""crdiff-search: cross-resolution pruning search for diffusion models.

The public API (``dir(crdiff_search)`` lists it; each name loads its module on first use, so
``import crdiff_search`` stays light: no torch, no Ray, no diffusers):

- :func:`load_experiment`: an experiment TOML (or the embedded testbed study) as a typed config;
- :func:`run_study`: run or resume a study on Ray Tune (:class:`StudyResult`);
- :func:`rerank`: the held-out verdict on a study's best trials, with and without POA;
- :class:`Recipe`, :func:`recipe_from_study`, :class:`Registry`: winners as recipes;
- :func:`apply_recipe`: prune a loaded pipeline by a recipe (and remove it bit for bit);
- :func:`generate`: images at a resolution from the registry's recipe;
- :func:`run_comparison`: samplers side by side on one study.

>>> import crdiff_search
>>> crdiff_search.__version__                 # doctest: +SKIP
'0.1.0'
"""

from __future__ import annotations

import importlib

_PUBLIC = {
    "load_experiment": "crdiff_search.config",
    "ExperimentConfig": "crdiff_search.config",
    "run_study": "crdiff_search.runner",
    "StudyResult": "crdiff_search.runner",
    "rerank": "crdiff_search.rerank",
    "recipe_from_study": "crdiff_search.rerank",
    "Recipe": "crdiff_search.recipe",
    "Registry": "crdiff_search.registry",
    "apply_recipe": "crdiff_search.apply",
    "generate": "crdiff_search.generate",
    "run_comparison": "crdiff_search.compare",
    "CrdiffError": "crdiff_search.errors",
    "UsageError": "crdiff_search.errors",
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
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'crdiff_search' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return list(__all__)
