"""The registries whose names must be known without heavy imports (no torch, no optuna).

``CRITERIA``: pruning criteria (entry point group ``crdiff_search.criterions`` is avoided: the
group is ``crdiff_search.criteria``). Objectives have theirs in :mod:`objectives`
(``OBJECTIVES``), samplers in :mod:`crdiff_search.samplers` (``SAMPLERS``).
"""

from __future__ import annotations

from crdiff_search.plugins import PluginRegistry

CRITERIA = PluginRegistry("criterion", group="crdiff_search.criteria")
for _name, _target in (
    ("magnitude", "crdiff_search.pruning.criteria.magnitude:Magnitude"),
    ("magnitude-tensor", "crdiff_search.pruning.criteria.magnitude_tensor:MagnitudeTensor"),
    ("random", "crdiff_search.pruning.criteria.random_subset:RandomCriterion"),
):
    CRITERIA.register(_name, _target, origin="builtin")
