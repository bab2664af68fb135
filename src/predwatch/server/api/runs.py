"""Runs: list, detail, create (returns a write token once), finish, delete, tokens, points."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from predwatch import __version__
from predwatch.errors import Forbidden, PayloadError
from predwatch.records import EvalPoint, Run, TrendPoint, without_nul
from predwatch.server.auth import Reader, issue_run_token
from predwatch.server.responses import JSON
from predwatch.server.schemas import (
    PointsPage,
    RunCreate,
    RunCreated,
    RunFinish,
    RunOut,
    RunsPage,
    TokenIssued,
    TokensRevoked,
    WhoAmI,
)
from predwatch.storage.base import Store

router = APIRouter(prefix="/api", tags=["runs"])


def _store(request: Request) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


def run_out(run: Run) -> dict[str, Any]:
    """A run on the wire: the record plus ``job_id`` (the original system's name for its id)
    and ``stale`` (still running, but its writer has not written for long: probably crashed)."""
    return {**run.model_dump(mode="json"), "job_id": run.id, "stale": run.is_stale()}


@router.get("/health", tags=["meta"])
def health(request: Request) -> JSON:
    """Liveness: answers without authentication (used to wait for a server to start)."""
    state = request.app.state
    return JSON({"status": "ok", "version": __version__, "database": state.store.dialect,
                 "auth_required": state.settings.auth_required})


@router.get("/whoami", response_model=WhoAmI, tags=["meta"])
def whoami(request: Request, who: Reader) -> JSON:
    """The caller: a key's user, or the run a write token belongs to."""
    run = _store(request).get_run(who.run_id) if who.run_id else None
    return JSON({"user": who.user, "run": run_out(run) if run else None,
                 "auth_required": request.app.state.settings.auth_required})


@router.get("/runs", response_model=RunsPage)
def list_runs(
    request: Request,
    who: Reader,
    search: Annotated[str | None, Query(max_length=200, description="id/name/model substring")
                      ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=2000, description="a page's next_cursor")
                      ] = None,
) -> JSON:
    """Runs the caller may see, newest first (keyset paged)."""
    store = _store(request)
    if who.run_id is not None:  # a run token sees its own run only
        runs = [store.get_run(who.run_id)]
        return JSON({"runs": [run_out(r) for r in runs], "total_count": 1, "next_cursor": None})
    page = store.list_runs(owner=who.owner, search=search, limit=limit, cursor=cursor)
    return JSON({"runs": [run_out(r) for r in page.items], "total_count": page.total,
                 "next_cursor": page.next_cursor})


@router.post("/runs", status_code=201, response_model=RunCreated)
def create_run(request: Request, body: RunCreate, who: Reader) -> JSON:
    """Create a run owned by the caller; the answer carries its write token, shown only once."""
    if who.run_id is not None:
        raise Forbidden("a run write token cannot create runs; use an API key",
                        detail={"field": "Authorization"})
    store = _store(request)
    clean = without_nul  # PostgreSQL cannot store NUL characters: stripped, as in ingest
    run = store.create_run(Run(
        id=body.id or uuid.uuid4().hex, name=clean(body.name), owner=who.user,
        model_name=clean(body.model_name), base_model=clean(body.base_model),
        config=clean(body.config),
    ))
    token = issue_run_token(store, run.id)
    return JSON({"run": run_out(run), "job_id": run.id, "token": token}, status_code=201)


@router.get("/runs/{run_id}", response_model=RunOut)
def get_run(request: Request, run_id: str, who: Reader) -> JSON:
    """One run, with a summary of its evaluation points."""
    store = _store(request)
    run = who.run(store, run_id)
    points = store.eval_points(run_id)
    summary = {
        "point_count": len(points),
        "prediction_count": sum(p.sample_count for p in points),
        "failed_count": sum(p.failed_count for p in points),
        "first_step": points[0].step if points else None,
        "last_step": points[-1].step if points else None,
    }
    return JSON({**run_out(run), "summary": summary})


@router.post("/runs/{run_id}/finish", response_model=RunOut)
def finish_run(request: Request, run_id: str, who: Reader, body: RunFinish | None = None
               ) -> JSON:
    """Mark a run finished (or failed); its write token may do this too."""
    store = _store(request)
    who.run(store, run_id)
    run = store.finish_run(run_id, status=(body or RunFinish()).status)
    return JSON(run_out(run))


@router.delete("/runs/{run_id}")
def delete_run(request: Request, run_id: str, who: Reader) -> JSON:
    """Delete a run with its evaluation points, predictions and tokens."""
    store = _store(request)
    who.manageable_run(store, run_id)
    store.delete_run(run_id)
    return JSON({"deleted": True, "job_id": run_id})


@router.post("/runs/{run_id}/tokens", status_code=201, response_model=TokenIssued)
def issue_token(
    request: Request,
    run_id: str,
    who: Reader,
    revoke_others: Annotated[bool, Query(description="revoke the run's other tokens")] = False,
) -> JSON:
    """Issue a new write token for a run (rotation); shown once."""
    store = _store(request)
    who.manageable_run(store, run_id)
    revoked = store.revoke_run_tokens(run_id) if revoke_others else 0
    token = issue_run_token(store, run_id)
    return JSON({"job_id": run_id, "token": token, "revoked": revoked}, status_code=201)


@router.delete("/runs/{run_id}/tokens", response_model=TokensRevoked)
def revoke_tokens(request: Request, run_id: str, who: Reader) -> JSON:
    """Revoke every write token of a run: later ingest with them answers 401."""
    store = _store(request)
    who.manageable_run(store, run_id)
    return JSON({"job_id": run_id, "revoked": store.revoke_run_tokens(run_id)})


@router.get("/runs/{run_id}/points", response_model=PointsPage)
def list_points(
    request: Request,
    run_id: str,
    who: Reader,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    cursor: Annotated[str | None, Query(max_length=32, description="a page's next_cursor")
                      ] = None,
) -> JSON:
    """Evaluation points in step order, each with failed-sample counts, overhead and aggregates."""
    store = _store(request)
    who.run(store, run_id)
    after = _step_cursor(cursor)
    points = [p for p in store.eval_points(run_id) if after is None or p.step > after]
    trends = {t.step: t for t in store.trends(run_id)}
    page = points[:limit]
    next_cursor = str(page[-1].step) if len(points) > limit else None
    return JSON({"job_id": run_id, "points": [point_out(p, trends.get(p.step)) for p in page],
                 "next_cursor": next_cursor})


def point_out(point: EvalPoint, trend: TrendPoint | None) -> dict[str, Any]:
    return {**point.model_dump(mode="json"), "overhead_ms": point.generation_ms,
            "trend": trend.model_dump(mode="json") if trend is not None else None}


def _step_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        return int(cursor)
    except ValueError:
        raise PayloadError("invalid cursor", detail={"field": "cursor"}) from None
