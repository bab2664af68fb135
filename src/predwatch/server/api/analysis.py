"""Analysis over HTTP: a prompt's timeline, comparisons, worst samples, the regression gate.

Thin routes over ``predwatch.analysis`` — the HTML pages and the CLI call the same functions,
so every view of a comparison agrees.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from predwatch import analysis
from predwatch.errors import PayloadError
from predwatch.server.auth import Reader
from predwatch.server.responses import JSON
from predwatch.storage.base import Store

router = APIRouter(prefix="/api", tags=["analysis"])

INT32 = 2**31 - 1
_STEP: dict[str, Any] = {"ge": 0, "le": INT32}
Tolerance = Annotated[float, Query(ge=0, le=1, description="how much the character error rate "
                                                          "must move to count")]


def _store(request: Request) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


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


@router.get("/runs/{run_id}/prompts/{prompt_id:path}/timeline",
            response_model=analysis.Timeline)
def timeline(
    request: Request,
    run_id: str,
    prompt_id: str,
    who: Reader,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
    cursor: Annotated[str | None, Query(max_length=32)] = None,
) -> JSON:
    """One prompt's answers across the run's evaluation points (changes, flips, best step)."""
    store = _store(request)
    who.run(store, run_id)
    found = analysis.prompt_timeline(store, run_id, prompt_id, owner=who.owner)
    entries, next_cursor = _page(found.entries, cursor, limit)
    body = found.model_dump(mode="json", exclude={"entries"})
    return JSON({**body, "entries": entries, "next_cursor": next_cursor})


@router.get("/runs/{run_id}/compare", response_model=analysis.Comparison)
def compare_points(
    request: Request,
    run_id: str,
    who: Reader,
    step_a: Annotated[int | None, Query(**_STEP, description="default: the one before step_b")
                      ] = None,
    step_b: Annotated[int | None, Query(**_STEP, description="default: the last point")
                      ] = None,
    regressed_only: bool = False,
    tolerance: Tolerance = analysis.DEFAULT_TOLERANCE,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
    cursor: Annotated[str | None, Query(max_length=32)] = None,
) -> JSON:
    """Two evaluation points of one run compared prompt by prompt."""
    store = _store(request)
    who.run(store, run_id)
    steps = [p.step for p in store.eval_points(run_id)]
    if step_b is None and steps:
        step_b = steps[-1]
    if step_a is None and step_b is not None:
        earlier = [s for s in steps if s < step_b]
        step_a = earlier[-1] if earlier else step_b
    found = analysis.compare_runs(store, run_id, run_id, step_a=step_a, step_b=step_b,
                                  regressed_only=regressed_only, tolerance=tolerance,
                                  owner=who.owner)
    return _comparison(found, cursor, limit)


@router.get("/compare", response_model=analysis.Comparison)
def compare_runs(
    request: Request,
    run_a: Annotated[str, Query(max_length=200, description="the baseline run")],
    run_b: Annotated[str, Query(max_length=200, description="the run compared with it")],
    who: Reader,
    step_a: Annotated[int | None, Query(**_STEP, description="default: run_a's last point")
                      ] = None,
    step_b: Annotated[int | None, Query(**_STEP, description="default: run_b's last point")
                      ] = None,
    regressed_only: bool = False,
    tolerance: Tolerance = analysis.DEFAULT_TOLERANCE,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
    cursor: Annotated[str | None, Query(max_length=32)] = None,
) -> JSON:
    """Two runs compared prompt by prompt: paired/added/removed/changed, flips, score deltas."""
    store = _store(request)
    who.run(store, run_a)
    who.run(store, run_b)
    found = analysis.compare_runs(store, run_a, run_b, step_a=step_a, step_b=step_b,
                                  regressed_only=regressed_only, tolerance=tolerance,
                                  owner=who.owner)
    return _comparison(found, cursor, limit)


def _comparison(found: analysis.Comparison, cursor: str | None, limit: int) -> JSON:
    items, next_cursor = _page(found.items, cursor, limit)
    body = found.model_dump(mode="json", exclude={"items"})
    return JSON({**body, "items": items, "next_cursor": next_cursor})


@router.get("/runs/{run_id}/worst")
def worst(
    request: Request,
    run_id: str,
    who: Reader,
    lens: Annotated[str, Query(description=" | ".join(analysis.LENSES))] = "lowest_score",
    step: Annotated[int | None, Query(**_STEP, description="default: the last point")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> JSON:
    """The worst answers at an evaluation point through one lens."""
    store = _store(request)
    who.run(store, run_id)
    items = analysis.worst_samples(store, run_id, lens=lens, step=step, limit=limit,
                                   owner=who.owner)
    if step is None:  # answer the step used: the run's last point
        last = store.eval_point(run_id, None)
        step = last.step if last is not None else None
    return JSON({"job_id": run_id, "lens": lens, "step": step, "lenses": list(analysis.LENSES),
                 "items": items})


@router.get("/runs/{run_id}/check", response_model=analysis.RegressionReport)
def check(
    request: Request,
    run_id: str,
    baseline: Annotated[str, Query(max_length=200, description="the baseline run")],
    who: Reader,
    max_regressions: Annotated[int, Query(ge=0)] = 0,
    step: Annotated[int | None, Query(**_STEP)] = None,
    baseline_step: Annotated[int | None, Query(**_STEP)] = None,
    tolerance: Tolerance = analysis.DEFAULT_TOLERANCE,
) -> JSON:
    """The regression gate of ``predwatch check``: ``passed`` when at most ``max_regressions``
    prompts regressed from the baseline to this run."""
    store = _store(request)
    who.run(store, run_id)
    who.run(store, baseline)
    report = analysis.regression_report(store, run_id, baseline=baseline, step=step,
                                        baseline_step=baseline_step,
                                        max_regressions=max_regressions, tolerance=tolerance)
    return JSON(report)
