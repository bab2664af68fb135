"""The read side: comparisons, worst samples and timelines over a ``Store``.

The server's JSON routes, its HTML pages and the CLI call these same functions, so every view of
a comparison agrees.

- ``compare``: two evaluation points (or runs) prompt by prompt; the regression gate.
- ``worst``: the worst answers at a point through one lens.
- ``timeline``: one prompt across a run.
- ``textdiff``: word-level diffs for display.
"""

from predwatch.analysis.compare import (
    DEFAULT_TOLERANCE,
    Comparison,
    ComparisonCounts,
    PointRef,
    PromptPair,
    RegressionReport,
    compare_points,
    compare_runs,
    count_regressions,
    regression_report,
)
from predwatch.analysis.timeline import Timeline, TimelineEntry, prompt_timeline
from predwatch.analysis.worst import LENSES, WorstSample, worst_samples

__all__ = [
    "DEFAULT_TOLERANCE",
    "LENSES",
    "Comparison",
    "ComparisonCounts",
    "PointRef",
    "PromptPair",
    "RegressionReport",
    "Timeline",
    "TimelineEntry",
    "WorstSample",
    "compare_points",
    "compare_runs",
    "count_regressions",
    "prompt_timeline",
    "regression_report",
    "worst_samples",
]
