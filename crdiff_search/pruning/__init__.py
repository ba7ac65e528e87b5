"""Block-wise pruning: criteria plug-ins, the reversible in-place :class:`Pruner`, ratio checks
and sparsity tables.

>>> from crdiff_search.pruning import Pruner, validate_ratios
"""

from crdiff_search.pruning.criteria import (
    CRITERION_NAMES,
    Criterion,
    create_criterion,
    resolve_criterion,
)
from crdiff_search.pruning.engine import CACHE_MODES, Pruner
from crdiff_search.pruning.ratios import expand_ratios, parse_ratios, validate_ratios
from crdiff_search.pruning.report import format_table, group_table

__all__ = [
    "CACHE_MODES",
    "CRITERION_NAMES",
    "Criterion",
    "Pruner",
    "create_criterion",
    "expand_ratios",
    "format_table",
    "group_table",
    "parse_ratios",
    "resolve_criterion",
    "validate_ratios",
]
