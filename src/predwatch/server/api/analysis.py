"""Analysis over HTTP: a prompt's timeline, comparisons, worst samples, the regression gate.

Thin routes over ``predwatch.analysis`` — the HTML pages and the CLI call the same functions,
so every view of a comparison agrees.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from predwatch import analysis
from predwatch.analysis.worst import Lens
from predwatch.errors import PayloadError
from predwatch.server.deps import Access, ReadableRun
from predwatch.server.openapi import error
from predwatch.server.schemas import ComparisonPage, TimelinePage, WorstPage

router = APIRouter(prefix="/api", tags=["analysis"])

INT32 = 2**31 - 1
_STEP: dict[str, Any] = {"ge": 0, "le": INT32}
# A position in a computed list (``next_cursor`` of the previous page).
Cursor = Annotated[str | None, Query(pattern=r"^[0-9]{1,9}$", description="a page's next_cursor")]
Tolerance = Annotated[float, Query(ge=0, le=1, description="how much the character error rate "
                                                          "must move to count")]
Alpha = Annotated[float, Query(gt=0, lt=0.5, description="the level of the significance tests")]


def _offset(cursor: str | None) -> int:
    if cursor is None:
        return 0
    # isdigit() would take "²" (int() refuses it): ASCII decimal digits only, and bounded.
    if not (cursor.isascii() and cursor.isdecimal()) or int(cursor) > INT32:
        raise PayloadError("invalid cursor", detail={"field": "cursor"})
    return int(cursor)


def _page(items: list[Any], cursor: str | None, limit: int) -> tuple[list[Any], str | None]:
    """A slice of a computed list; the cursor is the position of the next item."""
    start = _offset(cursor)
    end = start + limit
    return items[start:end], (str(end) if end < len(items) else None)


@router.get("/runs/{run_id}/prompts/{prompt_id:path}/timeline")
def timeline(
    run: ReadableRun,
    prompt_id: str,
    access: Access,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
    cursor: Cursor = None,
) -> TimelinePage:
    """One prompt's answers across the run's evaluation points (changes, flips, best step)."""
    found = analysis.prompt_timeline(access.store, run.id, prompt_id, owner=access.owner)
    entries, next_cursor = _page(found.entries, cursor, limit)
    return TimelinePage(**{**dict(found), "entries": entries}, next_cursor=next_cursor)


@router.get("/runs/{run_id}/compare")
def compare_points(
    run: ReadableRun,
    access: Access,
    step_a: Annotated[int | None, Query(**_STEP, description="default: the one before step_b")
                      ] = None,
    step_b: Annotated[int | None, Query(**_STEP, description="default: the last point")
                      ] = None,
    regressed_only: bool = False,
    tolerance: Tolerance = analysis.DEFAULT_TOLERANCE,
    alpha: Alpha = analysis.DEFAULT_ALPHA,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
    cursor: Cursor = None,
) -> ComparisonPage:
    """Two evaluation points of one run compared prompt by prompt."""
    steps = [p.step for p in access.store.eval_points(run.id)]
    step_a, step_b = analysis.default_compare_steps(steps, step_a, step_b)
    found = analysis.compare_runs(access.store, run.id, run.id, step_a=step_a, step_b=step_b,
                                  regressed_only=regressed_only, tolerance=tolerance,
                                  owner=access.owner, alpha=alpha)
    return _comparison(found, cursor, limit)


@router.get("/compare", responses=error(404))
def compare_runs(
    run_a: Annotated[str, Query(max_length=200, description="the baseline run")],
    run_b: Annotated[str, Query(max_length=200, description="the run compared with it")],
    access: Access,
    step_a: Annotated[int | None, Query(**_STEP, description="default: run_a's last point")
                      ] = None,
    step_b: Annotated[int | None, Query(**_STEP, description="default: run_b's last point")
                      ] = None,
    regressed_only: bool = False,
    tolerance: Tolerance = analysis.DEFAULT_TOLERANCE,
    alpha: Alpha = analysis.DEFAULT_ALPHA,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
    cursor: Cursor = None,
) -> ComparisonPage:
    """Two runs compared prompt by prompt: paired/added/removed/changed, flips, score deltas."""
    access.run(run_a)
    access.run(run_b)
    found = analysis.compare_runs(access.store, run_a, run_b, step_a=step_a, step_b=step_b,
                                  regressed_only=regressed_only, tolerance=tolerance,
                                  owner=access.owner, alpha=alpha)
    return _comparison(found, cursor, limit)


def _comparison(found: analysis.Comparison, cursor: str | None, limit: int) -> ComparisonPage:
    items, next_cursor = _page(found.items, cursor, limit)
    return ComparisonPage(**{**dict(found), "items": items}, next_cursor=next_cursor)


@router.get("/runs/{run_id}/worst")
def worst(
    run: ReadableRun,
    access: Access,
    lens: Annotated[Lens, Query(description="how to pick the worst answers")] = "lowest_score",
    step: Annotated[int | None, Query(**_STEP, description="default: the last point")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> WorstPage:
    """The worst answers at an evaluation point through one lens."""
    items = analysis.worst_samples(access.store, run.id, lens=lens, step=step, limit=limit,
                                   owner=access.owner)
    if step is None:  # answer the step used: the run's last point
        last = access.store.eval_point(run.id, None)
        step = last.step if last is not None else None
    return WorstPage(job_id=run.id, lens=lens, step=step, lenses=list(analysis.LENSES),
                     items=items)


@router.get("/runs/{run_id}/check")
def check(
    run: ReadableRun,
    baseline: Annotated[str, Query(max_length=200, description="the baseline run")],
    access: Access,
    max_regressions: Annotated[int, Query(ge=0)] = 0,
    step: Annotated[int | None, Query(**_STEP)] = None,
    baseline_step: Annotated[int | None, Query(**_STEP)] = None,
    tolerance: Tolerance = analysis.DEFAULT_TOLERANCE,
    alpha: Annotated[float | None, Query(gt=0, lt=0.5, description=(
        "gate on significant regressions at this level instead of the count"))] = None,
) -> analysis.RegressionReport:
    """The regression gate of ``predwatch check``: ``passed`` when at most ``max_regressions``
    prompts regressed from the baseline to this run, or with ``alpha``, unless the regression
    is significant at that level."""
    access.run(baseline)
    return analysis.regression_report(access.store, run.id, baseline=baseline, step=step,
                                      baseline_step=baseline_step,
                                      max_regressions=max_regressions, tolerance=tolerance,
                                      alpha=alpha)
