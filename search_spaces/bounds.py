"""Default search ranges for pruning ratios (the reference implementation's constants)."""

from __future__ import annotations

from crdiff_search.search_spaces.partition import Partition

#: Every ratio searched in [0.1, 0.8]; the annealing starts at 0.3 for every group.
PAPER_BOUNDS = (0.1, 0.8)
PAPER_START = 0.3


def default_bounds(partition: Partition) -> dict[str, tuple[float, float]]:
    """``{group: (low, high)}`` with the paper's range for every group of ``partition``."""
    return {g: PAPER_BOUNDS for g in partition.group_names}
