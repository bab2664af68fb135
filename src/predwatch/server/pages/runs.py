"""HTML pages of runs: the runs list, a run's monitor, and one prompt's timeline.

Each page renders the model its JSON twin answers, computed by the same function: the run page
``analysis.run_overview`` (``/api/runs/{id}/overview``), the timeline ``prompt_timeline``, the
worst samples ``worst_samples``; runs come through ``server.deps`` as in the API.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from predwatch import analysis
from predwatch.analysis.overview import headline, overall_improvement
from predwatch.config import ValidatorsConfig
from predwatch.errors import NotFound, PayloadError
from predwatch.records import Prediction, Run, TrendPoint
from predwatch.server.deps import Access, PageRun, prompt_by_prefix
from predwatch.server.pages import sweep
from predwatch.server.pages.ui import (
    chart_specs,
    featured_metrics,
    path_segment,
    query_string,
    render,
    sort_options,
)
from predwatch.storage.base import Page, Store

router = APIRouter()

RUNS_PER_PAGE = 25
RUNS_POLL_MS = 5000  # the runs list refetches itself this often (live.js), while visible
ROWS_PER_PAGE = 50
WORST_LIMIT = 10
JOBS_SHOWN = 200  # checkpoint jobs listed on a run page (the counts cover them all)
JOBS_POLL_MS = 5000  # a run page with pending or running jobs refetches itself this often
TIMELINE_PER_PAGE = 25  # evaluation points a prompt timeline shows at once
OVERLAY_MAX = 6  # lines on one chart before it stops being readable
SORTABLE = re.compile(r"-?[a-z][a-z0-9_]{0,63}")  # a score name; the store checks it exists
_LABELS = {"lowest_score": "Lowest score", "largest_drop": "Largest drop",
           "new_validation_failures": "New validation failures", "truncated": "Truncated",
           "errors": "Generation errors"}
# The lenses of ``analysis.worst_samples`` (the worst-samples API offers the same ones).
LENS_LABELS = {lens: _LABELS.get(lens, lens.replace("_", " ").capitalize())
               for lens in analysis.LENSES}


INT32 = 2**31 - 1  # steps, pages and versions are 32-bit integers in the database


def int_param(request: Request, name: str) -> int | None:
    """An integer query parameter, or None when absent or not a number (pages stay lenient);
    a number beyond 32 bits is refused (400 naming it): no step, page or version is that big."""
    raw = request.query_params.get(name, "").strip()
    try:
        value = int(raw) if raw else None
    except ValueError:
        return None
    if value is not None and not -INT32 <= value <= INT32:
        raise PayloadError(f"{name} = {raw[:40]} is out of range", detail={"field": name})
    return value


def flag_param(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").strip().lower() in ("1", "true", "on", "yes")


def text_param(request: Request, name: str) -> str:
    return request.query_params.get(name, "").strip()


def to_full_ids(request: Request, path: str, **ids: str) -> RedirectResponse | None:
    """A redirect to ``path`` (the page's URL with full ids) when a path parameter in ``ids``
    was a prefix of its full id, keeping the query string; None when all were full ids."""
    if all(request.path_params.get(name) == value for name, value in ids.items()):
        return None
    query = request.url.query
    return RedirectResponse(path + (f"?{query}" if query else ""), status_code=307)


@dataclass
class RunRow:
    """A run with what the runs list shows of its evaluation points."""

    run: Run
    trends: list[TrendPoint] = field(default_factory=list)
    jobs: dict[str, int] = field(default_factory=dict)  # checkpoint jobs per state

    @property
    def last(self) -> TrendPoint | None:
        return self.trends[-1] if self.trends else None

    @property
    def params(self) -> dict[str, sweep.Scalar]:
        return sweep.hyperparameters(self.run)

    @property
    def cer_series(self) -> list[float | None]:
        return [t.avg_char_error_rate for t in self.trends]


RUN_SORTS = ("name", "status", "created")


def _run_sort_key(row: RunRow, sort: str) -> Any:
    name = sort.lstrip("-")
    if name == "name":
        return sweep.sort_value(row.run.name or row.run.id)
    if name == "status":
        return sweep.sort_value(sweep.display_status(row.run))
    if name == "created":
        return sweep.sort_value(row.run.created_at.timestamp())
    if name.startswith("hp."):
        return sweep.sort_value(row.params.get(name[3:]))
    return sweep.sort_value(sweep.metric_value(row.last, name[2:]))  # "m.<metric>"


def _sorted(rows: list[RunRow], sort: str) -> list[RunRow]:
    """Rows in ``sort`` order (``-`` first: descending); empty cells stay last either way."""
    present = [r for r in rows if _run_sort_key(r, sort)[0] != 2]
    empty = [r for r in rows if _run_sort_key(r, sort)[0] == 2]
    present.sort(key=lambda r: _run_sort_key(r, sort), reverse=sort.startswith("-"))
    return present + empty


def runs_shown(request: Request, access: Access) -> dict[str, Any]:
    """The runs table as the query string asks for it (the page and its CSV/JSON export)."""
    store = access.store
    q = text_param(request, "q")
    cursor = text_param(request, "cursor") or None
    sort = text_param(request, "sort")
    status = text_param(request, "status")
    where = {k[3:]: v for k, v in request.query_params.items() if k.startswith("hp.") and v}
    reordered = bool(sort or status or where)
    if not access.runs_visible():  # a run token sees its own run only (as in the API)
        page = Page(items=[access.run(str(access.who.run_id))], total=1)
    elif reordered:  # sorting and filtering look at the newest MAX_SORTED_RUNS runs at once
        page = store.list_runs(owner=access.owner, search=q or None,
                               limit=sweep.MAX_SORTED_RUNS)
        cursor = None
    else:
        page = store.list_runs(owner=access.owner, search=q or None, limit=RUNS_PER_PAGE,
                               cursor=cursor)
    ids = [run.id for run in page.items]
    trends, jobs = store.trends_of_runs(ids), store.job_counts_of_runs(ids)
    rows = [RunRow(run, trends[run.id], jobs[run.id]) for run in page.items]
    if status:
        rows = [r for r in rows if sweep.display_status(r.run) == status]
    for key, value in where.items():
        rows = [r for r in rows if key in r.params and str(r.params[key]) == value]
    if sort:
        rows = _sorted(rows, sort)
    return {"rows": rows, "page": page, "q": q, "cursor": cursor, "sort": sort,
            "status_filter": status, "where": where, "reordered": reordered,
            "params": sweep.columns(r.params for r in rows), "shown": featured_metrics()}


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
@router.get("/runs", response_class=HTMLResponse, include_in_schema=False)
def runs_page(request: Request, access: Access) -> HTMLResponse:
    """Every run (newest first) side by side: status (stale included), model, hyperparameters
    from its config, last-point metrics and a sparkline; sorted (``sort=name|status|created|
    hp.KEY|m.METRIC``, ``-`` for descending) and filtered (``q``, ``status``, ``hp.KEY=VALUE``)
    on the server, so it all works without JavaScript."""
    view = runs_shown(request, access)
    return render(request, "runs.html", **view,
                  statuses=("running", "stale", "finished", "failed"),
                  capped=view["reordered"] and view["page"].next_cursor is not None,
                  poll_ms=RUNS_POLL_MS,
                  json_url="/api/runs" + query_string(q=view["q"], cursor=view["cursor"]))


@router.get("/runs/overlay", response_class=HTMLResponse, include_in_schema=False)
def overlay_page(request: Request, access: Access) -> HTMLResponse:
    """Several runs' trend charts on one chart per metric (``?run=A&run=B...``)."""
    ids = [i for i in request.query_params.getlist("run") if i.strip()]
    if not ids:
        raise PayloadError("choose at least one run to overlay (run=ID, repeated)",
                           detail={"field": "run"})
    runs = list({r.id: r for r in map(access.run_by_prefix, ids)}.values())[:OVERLAY_MAX]
    shown = featured_metrics()
    merged = sweep.overlay(runs, [access.store.trends(r.id) for r in runs], shown)
    return render(request, "overlay.html", runs=runs, charts=merged.specs,
                  trends_data=merged.trends,
                  json_links=[(r.name or r.id, f"/api/runs/{path_segment(r.id)}/points")
                              for r in runs])


@dataclass
class TableFilter:
    """The predictions table's filter, sort and page, read from the query string."""

    step: int | None
    failed: bool
    validator: str
    q: str
    sort: str
    page: int

    @classmethod
    def from_request(cls, request: Request) -> TableFilter:
        sort = text_param(request, "sort")
        return cls(
            step=int_param(request, "step"),
            failed=flag_param(request, "failed"),
            validator=text_param(request, "validator"),
            q=text_param(request, "q"),
            sort=sort if SORTABLE.fullmatch(sort) else "",
            page=max(int_param(request, "page") or 1, 1),
        )

    @property
    def active(self) -> bool:
        return bool(self.failed or self.validator or self.q)


def sort_choices(rows: list[Prediction], current: str) -> list[tuple[str, str]]:
    """The sort orders offered: the known scores, plus every other metric the rows carry."""
    choices = sort_options()
    known = {name.lstrip("-") for name, _ in choices}
    extra = sorted({name for p in rows for name in p.metrics} - known)
    for name in extra:
        choices += [(name, f"{name} (lowest first)"), (f"-{name}", f"{name} (highest first)")]
    if current and current not in dict(choices):
        choices.append((current, current))
    return choices


def validator_names(run: Run, rows: list[Prediction]) -> list[str]:
    """Validators a run checks: from its recorded config, plus any seen on the rows shown."""
    names: set[str] = set()
    try:
        config = ValidatorsConfig.model_validate(
            (run.config.get("predictions") or {}).get("validators") or {}
        )
        for spec in config.specs():
            names.add(str(spec.get("name") or spec["kind"]))
    except (ValueError, TypeError, AttributeError):  # a config from another version: rows suffice
        pass
    for p in rows:
        names.update(r.name or r.validator for r in p.validation_results)
        names.update(e.validator for e in p.validation_errors)
    return sorted(names)


def shown_step(run: Run, f: TableFilter, steps: list[int]) -> int | None:
    """The evaluation point a run page shows: ``?step=`` (404 when the run has none there),
    else the latest."""
    if f.step is not None and f.step not in steps:
        raise NotFound(f"run {run.id!r} has no evaluation point at step {f.step}")
    return f.step if f.step is not None else (steps[-1] if steps else None)


def lens_param(request: Request) -> str:
    lens = text_param(request, "lens") or "lowest_score"
    return lens if lens in LENS_LABELS else "lowest_score"


def table_shown(store: Store, run_id: str, f: TableFilter, step: int | None) -> Page[Prediction]:
    """The page of the predictions table the filter asks for (the page and its export)."""
    if step is None:
        return Page(items=[], total=0)
    return store.list_predictions(
        run_id, step=step, failed_only=f.failed, validator=f.validator or None,
        search=f.q or None, sort=f.sort or None, limit=ROWS_PER_PAGE,
        offset=(f.page - 1) * ROWS_PER_PAGE,
    )


def worst_shown(access: Access, run_id: str, lens: str, step: int | None
                ) -> list[analysis.WorstSample]:
    """The worst samples panel (the page and its export)."""
    if step is None:
        return []
    return analysis.worst_samples(access.store, run_id, lens=lens, step=step, limit=WORST_LIMIT,
                                  owner=access.owner)


@router.get("/runs/{run_id}", response_class=HTMLResponse, include_in_schema=False)
def run_page(request: Request, run: PageRun, access: Access) -> Response:
    """A run's monitor: headline, trend charts, evaluation points, predictions, worst samples.

    Its head renders ``analysis.run_overview``, the model ``/api/runs/{id}/overview`` answers;
    with ``?step=`` the headline numbers are those of that evaluation point. A unique prefix of
    the run id redirects to the page of the full id."""
    moved = to_full_ids(request, f"/runs/{path_segment(run.id)}", run_id=run.id)
    if moved:
        return moved
    store, run_id = access.store, run.id
    overview = analysis.run_overview(store, run)
    points, trends = overview.points, overview.trends
    f = TableFilter.from_request(request)
    steps = [p.step for p in points]
    step = shown_step(run, f, steps)
    lens = lens_param(request)
    table = table_shown(store, run_id, f, step)
    worst = worst_shown(access, run_id, lens, step)
    jobs = store.list_jobs(run_id=run_id, limit=JOBS_SHOWN)
    job_counts = store.job_counts(run_id)
    point = next((p for p in points if p.step == step), None)
    previous_step = next((s for s in reversed(steps) if step is not None and s < step), None)
    # The headline follows the evaluation point shown: its numbers, changed since the first.
    upto = [t for t in trends if step is None or t.step <= step] or trends
    cards = headline(upto, overview.metrics) if f.step is not None else overview.cards
    improvement = (overall_improvement(upto) if len(upto) > 1 else None) \
        if f.step is not None else overview.overall_improvement
    return render(
        request, "run.html",
        run=run, overview=overview, points=points, trends=trends, shown=overview.metrics,
        charts=chart_specs(overview.metrics), cards=cards,
        trends_data=[t.model_dump(mode="json") for t in trends], step=step, point=point,
        previous_step=previous_step, f=f, table=table,
        pages=max(1, -(-(table.total or 0) // ROWS_PER_PAGE)), rows_per_page=ROWS_PER_PAGE,
        sorts=sort_choices(table.items, f.sort), validators=validator_names(run, table.items),
        worst=worst, lens=lens, lenses=LENS_LABELS, improvement=improvement,
        first=trends[0] if trends else None, last=upto[-1] if upto else None,
        latest=trends[-1] if trends else None,
        following=f.step is None, after=store.last_sequence(run_id),
        jobs=jobs, job_counts=job_counts, jobs_total=sum(job_counts.values()),
        jobs_active=bool(job_counts.get("pending") or job_counts.get("running")),
        jobs_poll_ms=JOBS_POLL_MS,
        json_url=f"/api/runs/{path_segment(run_id)}/overview",
    )


@router.get("/runs/{run_id}/prompts/{prompt_id:path}", response_class=HTMLResponse,
            include_in_schema=False)
def timeline_page(request: Request, run: PageRun, prompt_id: str,
                  access: Access) -> Response:
    """One prompt through the whole run: each evaluation point's answer, diffed with the last.
    Unique prefixes of the run and prompt ids redirect to the page of the full ids."""
    prompt_id = prompt_by_prefix(access.store, run.id, prompt_id)
    moved = to_full_ids(request, f"/runs/{path_segment(run.id)}/prompts/{path_segment(prompt_id)}",
                        run_id=run.id, prompt_id=prompt_id)
    if moved:
        return moved
    timeline = analysis.prompt_timeline(access.store, run.id, prompt_id, owner=access.owner)
    # Each entry with the previous answer of the same occurrence (what its diff is against),
    # so hiding unchanged answers or paging never changes a diff.
    rows: list[tuple[analysis.TimelineEntry, analysis.TimelineEntry | None]] = []
    last: dict[int, analysis.TimelineEntry] = {}
    for e in timeline.entries:
        rows.append((e, last.get(e.occurrence)))
        last[e.occurrence] = e
    hide_unchanged = flag_param(request, "hide_unchanged")
    if hide_unchanged:  # the first answer, changes, flips and the best one stay
        rows = [(e, prev) for e, prev in rows
                if prev is None or e.changed or e.flip or e.is_best]
    pages = max(1, -(-len(rows) // TIMELINE_PER_PAGE))
    at = int_param(request, "at")  # ?at=STEP: the page holding that evaluation point
    index = next((i for i, (e, _) in enumerate(rows) if e.step == at), None)
    page = index // TIMELINE_PER_PAGE + 1 if index is not None else \
        min(max(int_param(request, "page") or 1, 1), pages)
    return render(request, "timeline.html", run=run, timeline=timeline,
                  rows=rows[(page - 1) * TIMELINE_PER_PAGE: page * TIMELINE_PER_PAGE],
                  shown_count=len(rows), hide_unchanged=hide_unchanged, page=page, pages=pages,
                  per_page=TIMELINE_PER_PAGE,
                  json_url=f"/api/runs/{path_segment(run.id)}/prompts/"
                           f"{path_segment(prompt_id)}/timeline")

