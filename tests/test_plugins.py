"""The plug-in registry: register / unregister, lazy "module:attr", entry points of a user's
package (a tiny dist-info on sys.path), for every kind."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from crdiff_search.errors import UsageError
from crdiff_search.plugins import PluginRegistry


def test_register_lazy_target_unregister_and_errors():
    reg = PluginRegistry("widget")
    reg.register("json-dump", "json:dumps", origin="builtin", cheap=True)
    assert list(reg) == ["json-dump"] and "json-dump" in reg and "JSON-dump" in reg
    assert reg.get("json-dump")([1]) == "[1]" and reg.metadata("json-dump") == {"cheap": True}
    with pytest.raises(UsageError, match="already registered; pass replace=True"):
        reg.register("json-dump", len)
    reg.register("json-dump", len, replace=True)
    assert reg.get("json-dump") is len
    with pytest.raises(UsageError, match="lower-case"):
        reg.register("Bad Name", len)
    with pytest.raises(UsageError, match="callable or 'module:attribute'"):
        reg.register("three", 3)
    reg.register("broken", "no_such_module_xyz:thing")
    with pytest.raises(UsageError, match="cannot be imported"):
        reg.get("broken")
    reg.unregister("broken")
    with pytest.raises(UsageError, match="unknown widget 'broken'; valid names: json-dump"):
        reg.get("broken")
    with pytest.raises(UsageError, match="unknown widget"):
        reg.unregister("broken")


def test_every_kind_is_one_registry():
    from crdiff_search.objectives import OBJECTIVES
    from crdiff_search.registries import CRITERIA
    from crdiff_search.samplers import SAMPLERS
    from crdiff_search.search_spaces import PARTITIONS

    kinds = (CRITERIA, SAMPLERS, OBJECTIVES, PARTITIONS)
    assert all(isinstance(r, PluginRegistry) for r in kinds)
    assert "UNet2DConditionModel" in PARTITIONS
    assert {"magnitude", "random"} <= set(CRITERIA) and "anneal" in SAMPLERS
    assert OBJECTIVES.metadata("fid")["higher_is_better"] is False


PLUGIN = """
import numpy as np
from crdiff_search.objectives.base import Objective

class Sharpness(Objective):
    name = "sharp"
    higher_is_better = True
    def score(self, images, prompts):
        return np.array([float(np.asarray(im).std()) for im in images])

import torch
from crdiff_search.search_spaces.partition import Partition

class TwoLayer(torch.nn.Module):  # a denoiser class of the user's own
    def __init__(self):
        super().__init__()
        self.first, self.second = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)

def two_layer_partition(model, granularity, include, name, n_groups):
    return Partition(name, {"first": ("first.weight",), "second": ("second.weight",)})

def make_sampler(*, seed=None):
    from optuna.samplers import RandomSampler
    return RandomSampler(seed=seed)
"""


def test_a_users_package_adds_plugins_through_entry_points(tmp_path):
    (tmp_path / "userplug.py").write_text(PLUGIN)
    dist = tmp_path / "userplug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: userplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[crdiff_search.objectives]\nsharp = userplug:Sharpness\n\n"
        "[crdiff_search.samplers]\nplug-random = userplug:make_sampler\n\n"
        "[crdiff_search.criteria]\nplug-magnitude = crdiff_search.pruning.criteria.magnitude:Magnitude\n\n"
        "[crdiff_search.partitions]\nTwoLayer = userplug:two_layer_partition\n"
    )
    code = textwrap.dedent(
        """
        from crdiff_search.objectives import OBJECTIVES, create_objective
        from crdiff_search.samplers import create_sampler
        from crdiff_search.pruning import create_criterion
        from crdiff_search.config import load_experiment
        from PIL import Image
        print("origin", OBJECTIVES.plugin("sharp").origin)
        print("score", create_objective("sharp").score([Image.new("RGB", (4, 4))], ["x"])[0])
        print("sampler", type(create_sampler("plug-random", seed=1)).__name__)
        print("criterion", type(create_criterion("plug-magnitude")).__name__)
        cfg = load_experiment(None, **{"objective.name": "sharp", "search.sampler": "plug-random",
                                       "partition.criterion": "plug-magnitude"})
        print("config", cfg.objective.names[0], cfg.search.sampler, cfg.partition.criterion)
        from crdiff_search.search_spaces import build_partition
        import userplug
        part = build_partition(userplug.TwoLayer(), "paper")
        print("partition", "+".join(part.group_names))
        """
    )
    env = {"PYTHONPATH": str(tmp_path), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=180
    )
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.strip().splitlines())
    assert lines["origin"] == "entry point userplug"
    assert float(lines["score"]) == 0.0
    assert lines["sampler"] == "RandomSampler" and lines["criterion"] == "Magnitude"
    assert lines["config"] == "sharp plug-random plug-magnitude"
    assert lines["partition"] == "first+second"
