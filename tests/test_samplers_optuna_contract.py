"""Optuna's own sampler contract suites, run against every sampler of our name table.

Which suites apply follows what each sampler is: all take the basic suite; those that sample
relatively (anneal, anneal-paper, tpe past its start-up trials, cmaes, gp) take the relative
suite; the multi-objective suite goes to the samplers that support several objectives (tpe,
gp, random, uniform) and the single-only suite to those that refuse them (anneal,
anneal-paper, cmaes). QMC takes the basic suite.
"""

from __future__ import annotations

import warnings

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.testing.pytest_samplers import (
    BasicSamplerTestCase,
    MultiObjectiveSamplerTestCase,
    RelativeSamplerTestCase,
    SingleOnlySamplerTestCase,
)

from crdiff_search.samplers import create_sampler

optuna.logging.set_verbosity(optuna.logging.ERROR)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _factory(name: str):
    return lambda: create_sampler(name, seed=0)


class TestAnnealContract(BasicSamplerTestCase, RelativeSamplerTestCase, SingleOnlySamplerTestCase):
    @pytest.fixture(params=["anneal", "anneal-paper"])
    def sampler(self, request):
        return _factory(request.param)


class TestCmaesContract(BasicSamplerTestCase, RelativeSamplerTestCase, SingleOnlySamplerTestCase):
    @pytest.fixture
    def sampler(self):
        return _factory("cmaes")


class TestGpContract(BasicSamplerTestCase, RelativeSamplerTestCase, MultiObjectiveSamplerTestCase):
    # Start-up trials set to zero so that the relative suite reaches the Gaussian process.
    @pytest.fixture
    def sampler(self):
        return lambda: create_sampler("gp", seed=0, n_startup_trials=0)

    # Each case fits a GP (seconds): every kind of distribution once as x and once as y,
    # instead of all 36 pairs.
    @pytest.mark.parametrize(
        "x_distribution, y_distribution",
        [
            (FloatDistribution(-1.0, 1.0), IntDistribution(3, 9, step=2)),
            (FloatDistribution(1e-7, 1.0, log=True), IntDistribution(1, 100, log=True)),
            (FloatDistribution(-10, 10, step=0.5), IntDistribution(3, 10)),
            (IntDistribution(3, 10), FloatDistribution(-10, 10, step=0.5)),
            (IntDistribution(1, 100, log=True), FloatDistribution(1e-7, 1.0, log=True)),
            (IntDistribution(3, 9, step=2), FloatDistribution(-1.0, 1.0)),
        ],
    )
    def test_sample_relative_numerical(self, sampler, x_distribution, y_distribution):
        super().test_sample_relative_numerical(sampler, x_distribution, y_distribution)


class TestQmcContract(BasicSamplerTestCase):
    @pytest.fixture
    def sampler(self):
        return _factory("qmc")


class TestTpeContract(BasicSamplerTestCase, MultiObjectiveSamplerTestCase):
    @pytest.fixture
    def sampler(self):
        return _factory("tpe")


class TestTpeRelativeContract(RelativeSamplerTestCase):
    # Our TPE configuration samples relatively only after its random start-up trials; the
    # relative suite tells one trial, so start-up is set to zero here.
    @pytest.fixture
    def sampler(self):
        return lambda: create_sampler("tpe", seed=0, n_startup_trials=0)


class TestIndependentContract(BasicSamplerTestCase, MultiObjectiveSamplerTestCase):
    @pytest.fixture(params=["random", "uniform"])
    def sampler(self, request):
        return _factory(request.param)
