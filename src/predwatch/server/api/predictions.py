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

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from predwatch.config import Settings
from predwatch.errors import PayloadTooLarge
from predwatch.records import TrendPoint
from predwatch.server import compat, sse
from predwatch.server.auth import Principal, Reader, Writer
from predwatch.server.commit import GroupCommit
from predwatch.server.ingest import parse_batch, read_body
from predwatch.server.responses import JSON
from predwatch.server.schemas import IngestResult, PredictionsPage
from predwatch.storage.base import Store

router = APIRouter(prefix="/api", tags=["predictions"])

# Ingest bodies up to this size are parsed on the event loop (~1.5 ms for 50 realistic rows,
# ~75 KB): handing them to a worker thread and back cost more than the parse under load.
INLINE_PARSE_BYTES = 256 * 1024


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
    if len(raw) <= INLINE_PARSE_BYTES:
        batch = parse_batch(raw, run, settings)
    else:  # a big batch would hold up every other request on the event loop meanwhile
        batch = await run_in_threadpool(parse_batch, raw, run, settings)
    # Stored together with the other requests waiting now, answered after the commit.
    committer: GroupCommit = request.app.state.group_commit
    inserted = await committer.write(batch.groups)
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


# The list filters both list routes take (one declaration each).
_Step = Annotated[int | None, Query(ge=0, le=2**31 - 1, description="one point")]
_FailedOnly = Annotated[bool, Query(description="failed validation/generation")]
_Validator = Annotated[str | None, Query(max_length=200, description="failing validator")]
_Search = Annotated[str | None, Query(max_length=1000, description="text substring")]
_Sort = Annotated[str | None, Query(max_length=100, description="score; '-' descending")]
_Limit = Annotated[int, Query(ge=1, le=1000)]
_Offset = Annotated[int, Query(ge=0, le=10_000_000)]
_Cursor = Annotated[str | None, Query(max_length=2000, description="a page's next_cursor")]


class _ListParams:
    """The filters and paging of a predictions list (one definition for both routes)."""

    def __init__(
        self,
        epoch: Annotated[float | None, Query(description="only this epoch (exact)")] = None,
        step: _Step = None,
        failed_only: _FailedOnly = False,
        validator: _Validator = None,
        search: _Search = None,
        sort: _Sort = None,
        limit: _Limit = 100,
        offset: _Offset = 0,
        cursor: _Cursor = None,
    ) -> None:
        self.values: dict[str, Any] = {
            "epoch": epoch, "step": step, "failed_only": failed_only, "validator": validator,
            "search": search, "sort": sort, "limit": limit, "offset": offset, "cursor": cursor}


class _OriginalListParams(_ListParams):
    """The original list's parameters (``epoch`` an integer epoch, 50 rows by default) plus
    predwatch's filters."""

    def __init__(
        self,
        epoch: Annotated[float | None, Query(
            description="only this integer epoch (a fraction is floored: 1.5 -> epoch 1)")] = None,
        step: _Step = None,
        failed_only: _FailedOnly = False,
        validator: _Validator = None,
        search: _Search = None,
        sort: _Sort = None,
        limit: _Limit = 50,
        offset: _Offset = 0,
        cursor: _Cursor = None,
    ) -> None:
        super().__init__(None, step, failed_only, validator, search, sort, limit, offset, cursor)
        self.values["epoch"] = None if epoch is None else compat.int_epoch(epoch)


@router.get("/training/predictions/{job_id}", response_model=compat.OriginalPredictionsPage)
def list_predictions(request: Request, job_id: str, who: Reader,
                     params: Annotated[_OriginalListParams, Depends()]) -> JSON:
    """Predictions of a run in the original shape (rows with ``id``, ``job_id``, ``user_id``
    and an integer ``epoch``), by evaluation point then ``sample_index``; ``total_count``
    honours the filters (keyset ``cursor`` or offset)."""
    store = _store(request)
    run = who.run(store, job_id)
    page = store.original_predictions(job_id, **params.values)
    epochs = compat.original_epochs(store.epochs(job_id))
    body = compat.OriginalPredictionsPage.model_validate({
        "job_id": job_id, "total_count": page.total or 0, "epoch_count": len(epochs),
        "next_cursor": page.next_cursor,
        "predictions": [compat.original_row(seq, p, run) for seq, p in page.items]})
    return JSON(body)


@router.get("/runs/{run_id}/predictions", response_model=PredictionsPage, tags=["runs"])
def run_predictions(request: Request, run_id: str, who: Reader,
                    params: Annotated[_ListParams, Depends()]) -> JSON:
    """Same as ``/api/training/predictions/{job_id}`` under the runs API."""
    return _list(request, run_id, who, **params.values)


@router.get("/training/predictions/{job_id}/epochs", response_model=compat.OriginalEpochs)
def epochs(request: Request, job_id: str, who: Reader) -> JSON:
    """Per integer epoch, ascending: how many predictions and the latest step."""
    store = _store(request)
    who.run(store, job_id)
    return JSON(compat.OriginalEpochs.model_validate(
        {"job_id": job_id, "epochs": compat.original_epochs(store.epochs(job_id))}))


@router.get("/training/predictions/{job_id}/trends", response_model=compat.OriginalTrends)
def trends(
    request: Request,
    job_id: str,
    who: Reader,
    per: Annotated[Literal["epoch", "point"], Query(
        description="epoch: one entry per integer epoch (the original); point: one entry per "
        "evaluation point, keyed by step, with the exact epoch")] = "epoch",
) -> JSON:
    """Aggregates per integer epoch (or per evaluation point with ``per=point``), in order,
    and the % drop of the mean character error rate from the first to the last entry."""
    store = _store(request)
    who.run(store, job_id)
    entries: list[compat.EpochTrend] | list[TrendPoint]
    if per == "point":
        entries = store.trends(job_id)
    else:
        entries = compat.epoch_trends(store.epoch_sums(job_id))
    improvement = compat.overall_improvement([t.avg_char_error_rate for t in entries])
    return JSON(compat.OriginalTrends(job_id=job_id, trends=entries, per=per,
                                      overall_improvement=improvement))


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
    """Live predictions in the original shape (server-sent events: ``connected``,
    ``prediction`` ``{prediction: <row as in the list>, total_count, timestamp}``,
    ``heartbeat``, ``error``)."""
    return await _stream(request, job_id, who, after, max_seconds, last_event_id, original=True)


async def _stream(request: Request, job_id: str, who: Principal, after: int | None,
                  max_seconds: float | None, last_event_id: str | None, *, original: bool
                  ) -> StreamingResponse:
    store = _store(request)
    settings: Settings = request.app.state.settings
    if who.user is not None or who.run_id is not None or settings.auth_required:
        await run_in_threadpool(who.run, store, job_id)
    start = await run_in_threadpool(sse.start_after, store, job_id, after, last_event_id)
    events = sse.prediction_events(
        store, job_id, after=start, heartbeat_seconds=settings.heartbeat_seconds,
        poll_seconds=request.app.state.poll_seconds, is_disconnected=request.is_disconnected,
        max_seconds=max_seconds, original=original)
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
    """Live predictions in predwatch's shape (each ``prediction`` is the record with ``id``)."""
    return await _stream(request, run_id, who, after, max_seconds, last_event_id,
                         original=False)
