"""``magnitude-tensor``: magnitude pruning with one threshold per tensor (layer-wise)."""

from __future__ import annotations

from crdiff_search.pruning.criteria.magnitude import Magnitude


class MagnitudeTensor(Magnitude):
    """Prune ``int(n * ratio)`` smallest ``|W|`` of every tensor separately (even sparsity)."""

    name = "magnitude-tensor"
    per_tensor = True
