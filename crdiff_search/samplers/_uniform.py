"""The uniform-pruning baseline: one ratio shared by every group."""

from __future__ import annotations

from typing import Any

from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.samplers import BaseSampler, TPESampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from crdiff_search.samplers._space import clamp_value


class UniformRatioSampler(BaseSampler):
    """Propose one value and give it to every float parameter of a trial.

    The search space stays one float per group, so the baseline runs through the same
    Ray/Optuna path and every trial reports the full ``{group: ratio}`` mapping, all equal.
    The first float parameter of a trial is proposed by ``inner`` (1-D: the history of that
    parameter is the history of the shared ratio); the others copy it, clipped and snapped if
    their distribution differs. Int and categorical parameters are sampled by ``inner``
    independently.

    Example:
        >>> import optuna
        >>> study = optuna.create_study(sampler=UniformRatioSampler(seed=0))
        >>> t = study.ask({g: optuna.distributions.FloatDistribution(0.0, 0.8) for g in "abc"})
        >>> len(set(t.params.values()))
        1

    Args:
        seed: seed of the default inner sampler.
        inner: the 1-D optimiser of the shared ratio (default: TPE with constant liar).
    """

    def __init__(self, *, seed: int | None = None, inner: BaseSampler | None = None) -> None:
        self._inner = inner if inner is not None else TPESampler(seed=seed, constant_liar=True)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        if isinstance(param_distribution, FloatDistribution):
            for name, value in trial.params.items():
                if isinstance(trial.distributions.get(name), FloatDistribution):
                    return clamp_value(param_distribution, value)
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._inner.before_trial(study, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: list[float] | None,
    ) -> None:
        self._inner.after_trial(study, trial, state, values)
