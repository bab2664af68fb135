"""Runs: list, detail, overview, create (returns a write token once), finish, delete, tokens,
points; and the metrics the server knows."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from predwatch import __version__, analysis
from predwatch.analysis.overview import summarise
from predwatch.errors import Conflict, Forbidden, NotFound, PayloadError, PredwatchError
from predwatch.records import Run, without_nul
from predwatch.scoring import metrics
from predwatch.server.auth import issue_run_token
from predwatch.server.deps import Access, ManageableRun, ReadableRun, SettingsDep, StoreDep
from predwatch.server.openapi import error
from predwatch.server.schemas import (
    Health,
    MetricsList,
    OverviewOut,
    PointsPage,
    RunCreate,
    RunCreated,
    RunDeleted,
    RunDetail,
    RunFinish,
    RunOut,
    RunsPage,
    TokenIssued,
    TokensRevoked,
    WhoAmI,
)

router = APIRouter(prefix="/api", tags=["runs"])


@router.get("/health", tags=["meta"])
def health(store: StoreDep, settings: SettingsDep) -> Health:
    """Liveness: answers without authentication (used to wait for a server to start)."""
    return Health(version=__version__, database=store.dialect,
                  auth_required=settings.auth_required)


@router.get("/whoami", tags=["meta"])
def whoami(access: Access, settings: SettingsDep) -> WhoAmI:
    """The caller: a key's user, or the run a write token belongs to."""
    run = access.run(access.who.run_id) if access.who.run_id else None
    return WhoAmI(user=access.who.user, run=RunOut.of(run) if run else None,
                  auth_required=settings.auth_required)


@router.get("/metrics", tags=["meta"])
def list_metrics(access: Access) -> MetricsList:
    """Every registered metric and how it is shown (label, direction, range, format)."""
    return MetricsList(metrics=metrics())


@router.get("/runs", responses=error(404))
def list_runs(
    access: Access,
    search: Annotated[str | None, Query(max_length=200, description="id/name/model substring")
                      ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=2000, description="a page's next_cursor")
                      ] = None,
) -> RunsPage:
    """Runs the caller may see, newest first (keyset paged)."""
    if not access.runs_visible():  # a run token sees its own run only
        run = access.run(str(access.who.run_id))
        return RunsPage(runs=[RunOut.of(run)], total_count=1, next_cursor=None)
    page = access.store.list_runs(owner=access.owner, search=search, limit=limit, cursor=cursor)
    return RunsPage(runs=[RunOut.of(r) for r in page.items], total_count=page.total or 0,
                    next_cursor=page.next_cursor)


@router.post("/runs", status_code=201, responses=error(403, 409))
def create_run(body: RunCreate, access: Access) -> RunCreated:
    """Create a run owned by the caller; the answer carries its write token, shown only once.

    An ``id`` already taken answers 409 only when the caller may see that run (their own, or
    any on an open server); an id taken by another user's run answers 403 "cannot be used",
    which says neither that a run exists nor whose (run ids are one space: omit ``id`` to get
    a fresh one)."""
    if not access.runs_visible():
        raise Forbidden("a run write token cannot create runs; use an API key",
                        detail={"field": "Authorization"})
    store = access.store
    clean = without_nul  # PostgreSQL cannot store NUL characters: stripped, as in ingest
    try:
        run = store.create_run(Run(
            id=body.id or uuid.uuid4().hex, name=clean(body.name), owner=access.who.user,
            model_name=clean(body.model_name), base_model=clean(body.base_model),
            config=clean(body.config),
        ))
    except Conflict:
        raise _taken_id(access, str(body.id)) from None
    token = issue_run_token(store, run.id)
    return RunCreated(run=RunOut.of(run), job_id=run.id, token=token)


def _taken_id(access: Access, run_id: str) -> PredwatchError:
    """409 naming the run when the caller may see it (their own, or any on an open server);
    otherwise a refusal that does not say a run exists, nor whose."""
    try:
        access.run(run_id)
    except NotFound:
        return Forbidden(f"run id {run_id!r} cannot be used; choose another id or omit it",
                         detail={"field": "id"})
    return Conflict(f"run {run_id!r} already exists", detail={"field": "id"})


@router.get("/runs/{run_id}")
def get_run(run: ReadableRun, access: Access) -> RunDetail:
    """One run, with a summary of its evaluation points."""
    summary = summarise(access.store.eval_points(run.id))
    return RunDetail(**RunOut.of(run).model_dump(), summary=summary)


@router.get("/runs/{run_id}/overview")
def run_overview(run: ReadableRun, access: Access) -> OverviewOut:
    """What the run page's head shows: points with their aggregates, trends, the metrics the
    run shows, headline cards and the overall improvement (the page renders this model)."""
    overview = analysis.run_overview(access.store, run)
    return OverviewOut(**dict(overview), job_id=run.id)


@router.post("/runs/{run_id}/finish")
def finish_run(run: ReadableRun, access: Access, body: RunFinish | None = None) -> RunOut:
    """Mark a run finished (or failed); its write token may do this too."""
    return RunOut.of(access.store.finish_run(run.id, status=(body or RunFinish()).status))


@router.delete("/runs/{run_id}")
def delete_run(run: ManageableRun, access: Access) -> RunDeleted:
    """Delete a run with its evaluation points, predictions, tokens and checkpoint jobs."""
    access.store.delete_run(run.id)
    return RunDeleted(job_id=run.id)


@router.post("/runs/{run_id}/tokens", status_code=201)
def issue_token(
    run: ManageableRun,
    access: Access,
    revoke_others: Annotated[bool, Query(description="revoke the run's other tokens")] = False,
) -> TokenIssued:
    """Issue a new write token for a run (rotation); shown once."""
    store = access.store
    revoked = store.revoke_run_tokens(run.id) if revoke_others else 0
    return TokenIssued(job_id=run.id, token=issue_run_token(store, run.id), revoked=revoked)


@router.delete("/runs/{run_id}/tokens")
def revoke_tokens(run: ManageableRun, access: Access) -> TokensRevoked:
    """Revoke every write token of a run: later ingest with them answers 401."""
    return TokensRevoked(job_id=run.id, revoked=access.store.revoke_run_tokens(run.id))


@router.get("/runs/{run_id}/points")
def list_points(
    run: ReadableRun,
    access: Access,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,10}$",
                                        description="a page's next_cursor (a step)")] = None,
) -> PointsPage:
    """Evaluation points in step order, each with failed-sample counts, overhead and aggregates."""
    after = _step_cursor(cursor)
    points = [p for p in access.store.eval_points(run.id) if after is None or p.step > after]
    page = points[:limit]
    next_cursor = str(page[-1].step) if len(points) > limit else None
    return PointsPage(job_id=run.id,
                      points=analysis.join_points(page, access.store.trends(run.id)),
                      next_cursor=next_cursor)


def _step_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        return int(cursor)
    except ValueError:
        raise PayloadError("invalid cursor", detail={"field": "cursor"}) from None
