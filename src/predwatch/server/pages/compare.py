"""The compare page: two evaluation points of one run, or of two runs, prompt by prompt.

It calls ``predwatch.analysis.compare_runs`` — the function behind the compare API route and
``predwatch compare`` — so the page, the API and the CLI agree on what regressed.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from predwatch import analysis
from predwatch.records import EvalPoint
from predwatch.server.pages.runs import flag_param, int_param, text_param
from predwatch.server.pages.ui import caller, render, store_of

router = APIRouter()

ITEMS_PER_PAGE = 100
RUN_CHOICES = 200


def _tolerance(request: Request) -> float:
    raw = text_param(request, "tolerance")
    try:
        value = float(raw) if raw else analysis.DEFAULT_TOLERANCE
    except ValueError:
        return analysis.DEFAULT_TOLERANCE
    return min(max(value, 0.0), 1.0)


def _default_steps(
    points: list[EvalPoint], step_a: int | None, step_b: int | None,
) -> tuple[int | None, int | None]:
    """Within one run (as ``/api/runs/{id}/compare``): B defaults to the last point, A to the
    point before B. Across runs each side defaults to its run's last point (``compare_runs``)."""
    steps = [p.step for p in points]
    if step_b is None and steps:
        step_b = steps[-1]
    if step_a is None and step_b is not None:
        earlier = [s for s in steps if s < step_b]
        step_a = earlier[-1] if earlier else step_b
    return step_a, step_b


@router.get("/compare", response_class=HTMLResponse, include_in_schema=False)
def compare_page(request: Request) -> HTMLResponse:
    """Pick two evaluation points (same run or two runs) and see what regressed, first."""
    store = store_of(request)
    who = caller(request)
    owner = who.owner
    run_a = text_param(request, "run_a")
    run_b = text_param(request, "run_b") or run_a
    step_a, step_b = int_param(request, "step_a"), int_param(request, "step_b")
    regressed_only = flag_param(request, "regressed_only")
    tolerance = _tolerance(request)
    page = max(int_param(request, "page") or 1, 1)

    if who.run_id is not None:  # a run token sees its own run only
        runs = [who.run(store, who.run_id)]
    else:
        runs = store.list_runs(owner=owner, limit=RUN_CHOICES).items
    points_a = store.eval_points(who.run(store, run_a).id) if run_a else []
    points_b = store.eval_points(who.run(store, run_b).id) if run_b else []
    if run_a and run_a == run_b:
        step_a, step_b = _default_steps(points_b, step_a, step_b)

    comparison = None
    if run_a and run_b and points_a and points_b:
        comparison = analysis.compare_runs(
            store, run_a, run_b, step_a=step_a, step_b=step_b, regressed_only=regressed_only,
            tolerance=tolerance, owner=owner,
        )
        step_a, step_b = comparison.a.step, comparison.b.step
    items = comparison.items if comparison else []
    pages = max(1, -(-len(items) // ITEMS_PER_PAGE))
    page = min(page, pages)
    shown = items[(page - 1) * ITEMS_PER_PAGE: page * ITEMS_PER_PAGE]
    return render(
        request, "compare.html",
        runs=runs, run_a=run_a, run_b=run_b, points_a=points_a, points_b=points_b,
        step_a=step_a, step_b=step_b, regressed_only=regressed_only, tolerance=tolerance,
        comparison=comparison, items=shown, page=page, pages=pages,
    )
