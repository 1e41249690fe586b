"""Reading results: multi-seed comparisons, bootstrap CIs, tables, plots, and run folders side by side.

    from policysearch.analysis import compare, paired_bootstrap
"""

from __future__ import annotations

from policysearch._lazy import lazy_names

_LAZY = {
    "compare": "policysearch.analysis.compare",
    "comparison_rows": "policysearch.analysis.compare",
    "paired_bootstrap": "policysearch.analysis.stats",
    "nested_bootstrap": "policysearch.analysis.stats",
    "format_table": "policysearch.analysis.report",
    "plot_comparison": "policysearch.analysis.plots",
    "compare_runs": "policysearch.analysis.runs",
}
__all__ = list(_LAZY)
__getattr__, __dir__ = lazy_names(__name__, _LAZY)
