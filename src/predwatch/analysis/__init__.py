"""The read side: comparisons, worst samples and timelines over a ``Store``.

The server's JSON routes, its HTML pages and the CLI call these same functions, so every view of
a comparison agrees.

- ``compare``: two evaluation points (or runs) prompt by prompt; the regression gate.
- ``worst``: the worst answers at a point through one lens.
- ``timeline``: one prompt across a run.
- ``overview``: a run at a glance (points with trends, headline numbers, overall improvement).
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
from predwatch.analysis.overview import (
    MetricCard,
    PointOut,
    RunOverview,
    RunSummary,
    default_compare_steps,
    join_points,
    overall_improvement,
    run_overview,
)
from predwatch.analysis.significance import DEFAULT_ALPHA, Significance, assess
from predwatch.analysis.timeline import Timeline, TimelineEntry, prompt_timeline
from predwatch.analysis.worst import LENSES, WorstSample, worst_samples

__all__ = [
    "DEFAULT_ALPHA",
    "Significance",
    "assess",
    "DEFAULT_TOLERANCE",
    "LENSES",
    "Comparison",
    "ComparisonCounts",
    "MetricCard",
    "PointOut",
    "PointRef",
    "PromptPair",
    "RegressionReport",
    "RunOverview",
    "RunSummary",
    "Timeline",
    "TimelineEntry",
    "WorstSample",
    "compare_points",
    "compare_runs",
    "count_regressions",
    "default_compare_steps",
    "join_points",
    "overall_improvement",
    "prompt_timeline",
    "regression_report",
    "run_overview",
    "worst_samples",
]
