"""Sampler names -> factories (the only place where names are resolved)."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any

from optuna.exceptions import ExperimentalWarning
from optuna.samplers import (
    BaseSampler,
    CmaEsSampler,
    GPSampler,
    QMCSampler,
    RandomSampler,
    TPESampler,
)

from crdiff_search.errors import UsageError
from crdiff_search.plugins import PluginRegistry
from crdiff_search.samplers._anneal import SimulatedAnnealingSampler
from crdiff_search.samplers._paper import paper_sampler
from crdiff_search.samplers._strategies import AllCoordinates, OneCoordinate, SomeCoordinates
from crdiff_search.samplers._uniform import UniformRatioSampler

BAD_OPTIONS = "sampler {name!r} does not accept option(s) {bad}; valid options: {valid}"

# Neighbour moves by name, for experiment files (strings only at this edge).
NEIGHBORS: dict[str, Callable[[], Any]] = {
    "one": OneCoordinate,
    "all": AllCoordinates,
    "some": SomeCoordinates,
}


def _anneal(*, seed=None, **options) -> BaseSampler:
    return SimulatedAnnealingSampler(seed=seed, **_named_neighbors(options))


def _anneal_paper(*, seed=None, **options) -> BaseSampler:
    return paper_sampler(seed=seed, **_named_neighbors(options))


def _tpe(*, seed=None, **options) -> BaseSampler:
    # Multivariate TPE with a constant liar: the configuration that makes sense for a few
    # correlated ratios evaluated several at a time.
    options = {"multivariate": True, "constant_liar": True, **options}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return TPESampler(seed=seed, **options)


def _random(*, seed=None) -> BaseSampler:
    return RandomSampler(seed=seed)


def _cmaes(*, seed=None, **options) -> BaseSampler:
    options = {"warn_independent_sampling": False, **options}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return CmaEsSampler(seed=seed, **options)


class GradGPSampler(GPSampler):
    """Optuna's GPSampler, fitting its Gaussian process with autograd on even in a process that
    turned gradients off globally (a trial worker does: ``torch.set_grad_enabled(False)``)."""

    def sample_relative(self, study, trial, search_space):
        import torch

        with torch.enable_grad():
            return super().sample_relative(study, trial, search_space)


def _gp(*, seed=None, **options) -> BaseSampler:
    # Optuna's Gaussian-process sampler (log-EI; trials still running are handled by the
    # sampler itself, so 4 pending asks give 4 distinct points). Its independent sampler
    # (start-up trials) is seeded too, so a study repeats.
    options = {"warn_independent_sampling": False, **options}
    options.setdefault("independent_sampler", RandomSampler(seed=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return GradGPSampler(seed=seed, **options)


def _qmc(*, seed=None, **options) -> BaseSampler:
    # A scrambled Sobol sequence: space-filling, no model (a reference for the others).
    options = {
        "scramble": True,  # seeds then differ (unscrambled Sobol ignores the seed)
        "warn_independent_sampling": False,
        "warn_asynchronous_seeding": False,
        **options,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return QMCSampler(seed=seed, **options)


def _uniform(*, seed=None, **options) -> BaseSampler:
    return UniformRatioSampler(seed=seed, **options)


# The registry (entry point group "crdiff_search.samplers"). A plug-in's factory takes
# ``seed=`` and its options as keywords; ``options_of`` names the callable whose keyword
# arguments are the valid options (default: the factory itself).
SAMPLERS = PluginRegistry("sampler")
for _name, _factory, _options_of in (
    ("anneal", _anneal, SimulatedAnnealingSampler),
    ("tpe", _tpe, TPESampler),
    ("random", _random, RandomSampler),
    ("cmaes", _cmaes, CmaEsSampler),
    ("gp", _gp, GPSampler),
    ("qmc", _qmc, QMCSampler),
    ("uniform", _uniform, UniformRatioSampler),
):
    SAMPLERS.register(_name, _factory, origin="builtin", options_of=_options_of)
# The reference loop counts iterations: the runner passes ``search.trials`` as its
# ``max_iterations`` and allows the start and restart evaluations on top (metadata "budget").
SAMPLERS.register(
    "anneal-paper",
    _anneal_paper,
    origin="builtin",
    options_of=SimulatedAnnealingSampler,
    budget="iterations",
)

SAMPLER_NAMES = SAMPLERS  # a live, sorted sequence of the registered names


def _named_neighbors(options: dict[str, Any]) -> dict[str, Any]:
    out = dict(options)
    for key in ("neighbor", "restart_neighbor"):
        if isinstance(out.get(key), str):
            if out[key] not in NEIGHBORS:
                raise UsageError(f"unknown {key} {out[key]!r}; valid names: {', '.join(NEIGHBORS)}")
            out[key] = NEIGHBORS[out[key]]()
    return out


def sampler_options(name: str) -> tuple[str, ...]:
    """The option names ``create_sampler(name, ...)`` accepts (besides ``seed``)."""
    factory = SAMPLERS.get(name)
    signature_of = SAMPLERS.metadata(name).get("options_of") or factory
    params = inspect.signature(signature_of).parameters
    return tuple(
        p.name
        for p in params.values()
        if p.name not in ("self", "seed") and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    )


def create_sampler(name: str, *, seed: int | None = None, **options: Any) -> BaseSampler:
    """Build the sampler registered under ``name`` (one of :data:`SAMPLER_NAMES`).

    Example:
        >>> create_sampler("anneal", seed=0, patience=8).__class__.__name__
        'SimulatedAnnealingSampler'
        >>> create_sampler("annealing")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        crdiff_search.errors.UsageError: unknown sampler 'annealing'; valid names: anneal, ...

    Raises:
        UsageError: an unknown name, an option the sampler does not take, or a bad value.
    """
    factory = SAMPLERS.get(name)
    valid = sampler_options(name)
    bad = sorted(set(options) - set(valid))
    if bad:
        raise UsageError(BAD_OPTIONS.format(name=name, bad=", ".join(bad), valid=", ".join(valid)))
    try:
        return factory(seed=seed, **options)
    except UsageError:
        raise
    except (TypeError, ValueError) as exc:
        raise UsageError(f"sampler {name!r}: invalid option value: {exc}") from exc
