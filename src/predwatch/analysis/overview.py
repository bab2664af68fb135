"""A run at a glance: its evaluation points joined with their aggregates, headline numbers and
the overall improvement; and the default pair of points to compare within a run.

``GET /api/runs/{id}``, ``/api/runs/{id}/points``, the original ``.../trends`` route and the run
page all read a run through ``run_overview``, so the page and the API never disagree. Which
metrics appear (cards, columns, charts) comes from the scoring registry (``Metric``).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field

from predwatch.records import EvalPoint, Run, TrendPoint
from predwatch.scoring.registry import Metric, metrics, sample_metrics_in
from predwatch.storage.base import Store

VALIDATION = Metric(name="validation_pass_rate", label="Valid", title="Validation pass",
                    format="pct", featured=True)
"""Not a metric (a share of answers that pass their validators), shown like one."""


class PointOut(EvalPoint):
    """An evaluation point with its aggregates (the trends entry of its step)."""

    trend: TrendPoint | None = None
    overhead_ms: float | None = Field(None, description="wall time spent generating")


class RunSummary(BaseModel):
    """Counts over a run's evaluation points."""

    point_count: int
    prediction_count: int
    failed_count: int
    first_step: int | None = None
    last_step: int | None = None


class MetricCard(BaseModel):
    """A headline number: a metric's mean at the last point, and its change since the first."""

    metric: Metric
    value: float | None = None
    first: float | None = None
    change: float | None = Field(None, description="last - first (None with one point)")


class RunOverview(BaseModel):
    """A run with its points, trends, headline numbers and the metrics it shows."""

    run: Run
    summary: RunSummary
    points: list[PointOut]
    trends: list[TrendPoint]
    overall_improvement: float | None = Field(
        None, description="% drop of the mean character error rate from the first to the last "
        "point (None with fewer than two points)")
    metrics: list[Metric] = Field(description="the metrics shown for this run, in order")
    cards: list[MetricCard]


def overall_improvement(points: Sequence[TrendPoint]) -> float:
    """% drop of the mean character error rate from the first to the last point that has one
    (0 when fewer than two points have one or the first is 0)."""
    cers = [p.avg_char_error_rate for p in points if p.avg_char_error_rate is not None]
    if len(cers) < 2 or cers[0] <= 0:
        return 0.0
    return (cers[0] - cers[-1]) / cers[0] * 100.0


def join_points(points: Sequence[EvalPoint], trends: Sequence[TrendPoint]) -> list[PointOut]:
    """Each evaluation point with its trends entry (joined by step)."""
    by_step = {t.step: t for t in trends}
    return [PointOut(**p.model_dump(), trend=by_step.get(p.step), overhead_ms=p.generation_ms)
            for p in points]


def summarise(points: Sequence[EvalPoint]) -> RunSummary:
    """Point and prediction counts, and the first and last step."""
    return RunSummary(
        point_count=len(points),
        prediction_count=sum(p.sample_count for p in points),
        failed_count=sum(p.failed_count for p in points),
        first_step=points[0].step if points else None,
        last_step=points[-1].step if points else None,
    )


def shown_metrics(trends: Sequence[TrendPoint]) -> list[Metric]:
    """The registered metrics a run shows: the featured ones, and those (``featured=None``)
    that the run has values for; pass@k for k > 1 follows pass@1 when the run has it."""
    present = {name for t in trends for name, v in t.averages.items() if v is not None}
    shown = []
    for m in metrics():
        if m.featured or (m.featured is None and m.name in present):
            shown.append(m)
        if m.name == "pass@1":
            shown += sample_metrics_in(present)
    return shown


def metric_value(trend: TrendPoint | None, name: str) -> float | None:
    """A trends entry's mean of metric ``name`` (``validation_pass_rate`` included)."""
    if trend is None:
        return None
    if name == VALIDATION.name:
        return trend.validation_pass_rate
    return trend.averages.get(name, getattr(trend, f"avg_{name}", None))


def headline(trends: Sequence[TrendPoint], shown: Sequence[Metric]) -> list[MetricCard]:
    """One card per shown metric plus the validation pass rate: last value, change since first."""
    if not trends:
        return []
    first, last = trends[0], trends[-1]
    cards = []
    for metric in [*shown, VALIDATION]:
        value, base = metric_value(last, metric.name), metric_value(first, metric.name)
        change = value - base if value is not None and base is not None and len(trends) > 1 \
            else None
        cards.append(MetricCard(metric=metric, value=value, first=base, change=change))
    return cards


def run_overview(store: Store, run: Run) -> RunOverview:
    """Everything the run page's head shows and ``/api/runs/{id}/overview`` answers."""
    points = store.eval_points(run.id)
    trends = store.trends(run.id)
    shown = shown_metrics(trends)
    return RunOverview(
        run=run, summary=summarise(points), points=join_points(points, trends), trends=trends,
        overall_improvement=overall_improvement(trends) if len(trends) > 1 else None,
        metrics=shown, cards=headline(trends, shown),
    )


def default_compare_steps(
    steps: Sequence[int], step_a: int | None, step_b: int | None,
) -> tuple[int | None, int | None]:
    """Within one run: B defaults to the last point, A to the point before B (or B itself when
    B is the first). Across runs each side defaults to its run's last point (``compare_runs``)."""
    if step_b is None and steps:
        step_b = steps[-1]
    if step_a is None and step_b is not None:
        earlier = [s for s in steps if s < step_b]
        step_a = earlier[-1] if earlier else step_b
    return step_a, step_b
