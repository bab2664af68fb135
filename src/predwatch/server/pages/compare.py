"""The compare page: two evaluation points of one run, or of two runs, prompt by prompt.

It calls ``predwatch.analysis.compare_runs`` and ``default_compare_steps`` — the functions behind
the compare API routes and ``predwatch compare`` — so the page, the API and the CLI agree on
what regressed.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from predwatch import analysis
from predwatch.errors import PayloadError
from predwatch.server.deps import Access
from predwatch.server.pages.runs import flag_param, int_param, text_param
from predwatch.server.pages.ui import query_string, render

router = APIRouter()

ITEMS_PER_PAGE = 25
RUN_CHOICES = 200


def _tolerance(request: Request) -> float:
    raw = text_param(request, "tolerance")
    try:
        value = float(raw) if raw else analysis.DEFAULT_TOLERANCE
    except ValueError:
        return analysis.DEFAULT_TOLERANCE
    return min(max(value, 0.0), 1.0)


def compare_shown(request: Request, access: Access) -> dict[str, Any]:
    """The comparison and the page of prompts the query string asks for (the page and its
    CSV/JSON export)."""
    store, owner = access.store, access.owner
    run_a = text_param(request, "run_a")
    run_b = text_param(request, "run_b") or run_a
    # Unique id prefixes are accepted (409 naming the candidates when several runs share one).
    run_a = access.run_by_prefix(run_a).id if run_a else ""
    run_b = access.run_by_prefix(run_b).id if run_b else ""
    picked = [i for i in request.query_params.getlist("run") if i.strip()]
    if picked and not run_a:  # two runs ticked in the runs table
        if len(picked) != 2:
            raise PayloadError(f"choose exactly two runs to compare ({len(picked)} chosen)",
                               detail={"field": "run"})
        first, second = sorted(map(access.run_by_prefix, picked), key=lambda r: r.created_at)
        run_a, run_b = first.id, second.id  # the older run is "before"
    step_a, step_b = int_param(request, "step_a"), int_param(request, "step_b")
    regressed_only = flag_param(request, "regressed_only")
    hide_unchanged = flag_param(request, "hide_unchanged")
    tolerance = _tolerance(request)
    page = max(int_param(request, "page") or 1, 1)

    if not access.runs_visible():  # a run token sees its own run only
        runs = [access.run(str(access.who.run_id))]
    else:
        runs = store.list_runs(owner=owner, limit=RUN_CHOICES).items
    points_a = store.eval_points(access.run(run_a).id) if run_a else []
    points_b = store.eval_points(access.run(run_b).id) if run_b else []
    if run_a and run_a == run_b:  # as /api/runs/{id}/compare
        step_a, step_b = analysis.default_compare_steps([p.step for p in points_b],
                                                        step_a, step_b)

    comparison = None
    if run_a and run_b and points_a and points_b:
        comparison = analysis.compare_runs(
            store, run_a, run_b, step_a=step_a, step_b=step_b, regressed_only=regressed_only,
            tolerance=tolerance, owner=owner,
        )
        step_a, step_b = comparison.a.step, comparison.b.step
    items = comparison.items if comparison else []
    # Regressed first (the analysis order), then changed or improved, identical answers last.
    items = sorted(items, key=lambda it: (not it.regressed, _identical(it)))
    if hide_unchanged:
        items = [it for it in items if not _identical(it)]
    pages = max(1, -(-len(items) // ITEMS_PER_PAGE))
    page = min(page, pages)
    shown = items[(page - 1) * ITEMS_PER_PAGE: page * ITEMS_PER_PAGE]
    return {
        "runs": runs, "run_a": run_a, "run_b": run_b, "points_a": points_a,
        "points_b": points_b, "step_a": step_a, "step_b": step_b,
        "regressed_only": regressed_only, "tolerance": tolerance,
        "hide_unchanged": hide_unchanged, "shown_count": len(items),
        "per_page": ITEMS_PER_PAGE, "comparison": comparison, "items": shown, "page": page,
        "pages": pages,
    }


@router.get("/compare", response_class=HTMLResponse, include_in_schema=False)
def compare_page(request: Request, access: Access) -> HTMLResponse:
    """Pick two evaluation points (same run or two runs) and see what regressed, first."""
    view = compare_shown(request, access)
    json_url = ("/api/compare" + query_string(
        run_a=view["run_a"], run_b=view["run_b"], step_a=view["step_a"],
        step_b=view["step_b"], tolerance=view["tolerance"],
        regressed_only=view["regressed_only"])) if view["comparison"] else ""
    return render(request, "compare.html", **view, json_url=json_url)


def _identical(item: analysis.PromptPair) -> bool:
    """A paired prompt whose answer and verdict did not change."""
    return (item.status == "paired" and not item.changed and not item.regressed
            and not item.improved)
