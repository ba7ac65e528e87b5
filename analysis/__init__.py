"""Trial tables to comparisons: best-so-far curves, rank tests, landscapes and reports.

Example::

    from crdiff_search.analysis import combine_studies, write_report
    table = combine_studies(["cmp/studies/tpe-s0", "cmp/studies/anneal-s0"])
    write_report(table, "cmp", title="testbed at 64x64")
"""

from crdiff_search.analysis.curves import AXES, best_so_far, curve_bands
from crdiff_search.analysis.early_stopping import early_stopping_summary, has_early_stopping
from crdiff_search.analysis.report import Report, write_report
from crdiff_search.analysis.stats import (
    final_best,
    rank_tests,
    reach_target,
    summary_table,
    trials_to_reach,
)
from crdiff_search.analysis.table import (
    combine_studies,
    find_study_tables,
    load_study_table,
    load_table,
    method_label,
    ratio_columns,
    save_table,
    tidy_study,
)

__all__ = [
    "AXES",
    "Report",
    "best_so_far",
    "combine_studies",
    "curve_bands",
    "early_stopping_summary",
    "final_best",
    "find_study_tables",
    "has_early_stopping",
    "load_study_table",
    "load_table",
    "method_label",
    "rank_tests",
    "ratio_columns",
    "reach_target",
    "save_table",
    "summary_table",
    "tidy_study",
    "trials_to_reach",
    "write_report",
]
