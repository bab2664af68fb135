"""Predictions: the original system's routes (kept exactly) and the run-scoped list.

```
POST /api/training/local/predictions     ingest (Bearer run token) -> {success, count}
GET  /api/training/predictions/{job_id}  {job_id, predictions, total_count, epoch_count}
GET  .../{job_id}/epochs                 {job_id, epochs: [{epoch, prediction_count, latest_step}]}
GET  .../{job_id}/trends                 {job_id, trends: [...], overall_improvement}
GET  .../{job_id}/stream                 server-sent events
```
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from predwatch.analysis import overall_improvement
from predwatch.config import Settings
from predwatch.errors import PayloadTooLarge
from predwatch.records import Run
from predwatch.server import sse
from predwatch.server.auth import Reader, Writer
from predwatch.server.ingest import parse_batch, read_body
from predwatch.server.responses import JSON
from predwatch.server.schemas import EpochsResponse, IngestResult, PredictionsPage, TrendsResponse
from predwatch.storage.base import Store

router = APIRouter(prefix="/api", tags=["predictions"])


def _store(request: Request) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


@router.post("/training/local/predictions", response_model=IngestResult,
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": {"$ref": "#/components/schemas/IngestBody"}}}}})
async def ingest(request: Request, run: Writer) -> JSON:
    """Store predictions for the run of the write token (``Authorization: Bearer``).

    Body: ``{job_id, predictions: [...], eval_point?}`` (``Content-Encoding: gzip`` accepted).
    Re-sending rows is safe: rows already stored are skipped, and ``count`` still reports every
    row accepted (``inserted`` the new ones).
    """
    settings: Settings = request.app.state.settings
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > settings.max_body_bytes:
        raise PayloadTooLarge(f"request body exceeds {settings.max_body_bytes} bytes",
                              detail={"field": "body", "limit": settings.max_body_bytes})
    raw = await read_body(request.stream(), request.headers.get("content-encoding"),
                          settings.max_body_bytes)
    return await run_in_threadpool(_ingest, _store(request), raw, run, settings)


def _ingest(store: Store, raw: bytes, run: Run, settings: Settings) -> JSON:
    batch = parse_batch(raw, run, settings)
    inserted = sum(store.write_eval_point(point, rows) for point, rows in batch.groups)
    return JSON({"success": True, "count": batch.count, "inserted": inserted,
                 "truncated": batch.truncated, "job_id": run.id})


def _list(
    request: Request,
    run_id: str,
    who: Reader,
    *,
    epoch: float | None,
    step: int | None,
    failed_only: bool,
    validator: str | None,
    search: str | None,
    sort: str | None,
    limit: int,
    offset: int,
    cursor: str | None,
) -> JSON:
    store = _store(request)
    who.run(store, run_id)
    page = store.list_predictions(run_id, epoch=epoch, step=step, failed_only=failed_only,
                                  validator=validator, search=search, sort=sort, limit=limit,
                                  offset=offset, cursor=cursor)
    return JSON({"job_id": run_id, "predictions": page.items, "total_count": page.total or 0,
                 "epoch_count": len(store.epochs(run_id)), "next_cursor": page.next_cursor})


class _ListParams:
    """The filters and paging of a predictions list (one definition for both routes)."""

    def __init__(
        self,
        epoch: Annotated[float | None, Query(description="only this epoch (exact)")] = None,
        step: Annotated[int | None, Query(ge=0, le=2**31 - 1, description="one point")] = None,
        failed_only: Annotated[bool, Query(description="failed validation/generation")] = False,
        validator: Annotated[str | None, Query(max_length=200, description="failing validator")
                             ] = None,
        search: Annotated[str | None, Query(max_length=1000, description="text substring")
                          ] = None,
        sort: Annotated[str | None, Query(max_length=100, description="score; '-' descending")
                        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
        cursor: Annotated[str | None, Query(max_length=2000, description="a page's next_cursor")
                          ] = None,
    ) -> None:
        self.values: dict[str, Any] = {
            "epoch": epoch, "step": step, "failed_only": failed_only, "validator": validator,
            "search": search, "sort": sort, "limit": limit, "offset": offset, "cursor": cursor}


@router.get("/training/predictions/{job_id}", response_model=PredictionsPage)
def list_predictions(request: Request, job_id: str, who: Reader,
                     params: Annotated[_ListParams, Depends()]) -> JSON:
    """Predictions of a run; ``total_count`` honours the filters (keyset ``cursor`` or offset)."""
    return _list(request, job_id, who, **params.values)


@router.get("/runs/{run_id}/predictions", response_model=PredictionsPage, tags=["runs"])
def run_predictions(request: Request, run_id: str, who: Reader,
                    params: Annotated[_ListParams, Depends()]) -> JSON:
    """Same as ``/api/training/predictions/{job_id}`` under the runs API."""
    return _list(request, run_id, who, **params.values)


@router.get("/training/predictions/{job_id}/epochs", response_model=EpochsResponse)
def epochs(request: Request, job_id: str, who: Reader) -> JSON:
    """Per epoch: how many predictions and the latest step."""
    store = _store(request)
    who.run(store, job_id)
    return JSON({"job_id": job_id, "epochs": store.epochs(job_id)})


@router.get("/training/predictions/{job_id}/trends", response_model=TrendsResponse)
def trends(request: Request, job_id: str, who: Reader) -> JSON:
    """One aggregate entry per evaluation point (keyed by step), in step order."""
    store = _store(request)
    who.run(store, job_id)
    points = store.trends(job_id)
    return JSON({"job_id": job_id, "trends": points,
                 "overall_improvement": overall_improvement(points)})


@router.get("/training/predictions/{job_id}/stream", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def stream(
    request: Request,
    job_id: str,
    who: Reader,
    after: Annotated[int | None, Query(ge=0, le=sse.MAX_SEQUENCE,
                                       description="start after this sequence number")] = None,
    max_seconds: Annotated[float | None, Query(gt=0, le=86400, description="end the stream")
                           ] = None,
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
) -> StreamingResponse:
    """Live predictions (server-sent events: connected, prediction, heartbeat, error)."""
    store = _store(request)
    settings: Settings = request.app.state.settings
    if who.user is not None or who.run_id is not None or settings.auth_required:
        await run_in_threadpool(who.run, store, job_id)
    start = await run_in_threadpool(sse.start_after, store, job_id, after, last_event_id)
    events = sse.prediction_events(
        store, job_id, after=start, heartbeat_seconds=settings.heartbeat_seconds,
        poll_seconds=request.app.state.poll_seconds, is_disconnected=request.is_disconnected,
        max_seconds=max_seconds)
    return sse.stream_response(events)


@router.get("/runs/{run_id}/stream", response_class=StreamingResponse, tags=["runs"],
            responses={200: {"content": {"text/event-stream": {}}}})
async def run_stream(
    request: Request,
    run_id: str,
    who: Reader,
    after: Annotated[int | None, Query(ge=0, le=sse.MAX_SEQUENCE)] = None,
    max_seconds: Annotated[float | None, Query(gt=0, le=86400)] = None,
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
) -> StreamingResponse:
    """Same as ``/api/training/predictions/{job_id}/stream``."""
    return await stream(request, run_id, who, after, max_seconds, last_event_id)
