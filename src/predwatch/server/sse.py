"""Live predictions as server-sent events.

Events: ``connected`` (once: ``{job_id, after, heartbeat_seconds}``), ``prediction`` (one per
row; ``id:`` and ``data.id`` are the row's sequence number), ``heartbeat`` (every
``Settings.heartbeat_seconds``: ``{time, after}``) and ``error`` (``{error, message}``; the stream
ends after it).

The stream polls ``store.predictions_after`` about twice a second, so it sees rows written by
any worker process or any server on the same database; the store commits a run's rows in
sequence order (writers of one run take turns), so reading by sequence misses none. Where it
starts: ``?after=N``, else the ``Last-Event-ID`` header of a reconnecting browser, else the
run's newest row (only new rows are sent; ``?after=0`` replays the whole run).

A run with no rows yet streams normally and sends its rows as they arrive. A run that does not
exist yet is waited for only on an open server to an anonymous caller (a training job may start
after the page opened); with authentication, a run the caller cannot see — including one that
does not exist yet — answers 404 before the stream starts, like every other route.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from anyio import sleep, to_thread
from fastapi.responses import StreamingResponse
from pydantic_core import to_json

from predwatch.errors import PayloadError
from predwatch.storage.base import Store

log = logging.getLogger(__name__)

BATCH = 500  # rows per poll; a longer backlog is sent without waiting between polls
MAX_SEQUENCE = 2**63 - 1  # sequence numbers are 64-bit integers in the database


def format_event(event: str, data: Any, event_id: int | None = None) -> bytes:
    """One SSE message (data is JSON on a single line)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return (f"{head}event: {event}\ndata: ".encode() + to_json(data, inf_nan_mode="null")
            + b"\n\n")


def start_after(store: Store, run_id: str, after: int | None, last_event_id: str | None
                ) -> int:
    """Where a stream starts: ``after``, else ``Last-Event-ID``, else the run's newest row."""
    if after is not None:
        return after
    last = (last_event_id or "").strip()
    if last.isascii() and last.isdecimal():  # anything else is ignored, as browsers may send it
        if int(last) > MAX_SEQUENCE:
            raise PayloadError(f"Last-Event-ID {last} is out of range",
                               detail={"field": "Last-Event-ID"})
        return int(last)
    newest: Callable[[str], int] | None = getattr(store, "last_sequence", None)
    if newest is not None:
        return newest(run_id)
    seq = 0
    while rows := store.predictions_after(run_id, seq, limit=BATCH):
        seq = rows[-1][0]
    return seq


async def prediction_events(
    store: Store,
    run_id: str,
    *,
    after: int,
    heartbeat_seconds: float,
    poll_seconds: float,
    is_disconnected: Callable[[], Awaitable[bool]],
    max_seconds: float | None = None,
) -> AsyncIterator[bytes]:
    """The event stream of one run, from the row after ``after`` on."""
    read_after = functools.partial(store.predictions_after, limit=BATCH)
    started = last_beat = time.monotonic()
    yield b"retry: 2000\n\n"
    yield format_event("connected", {"job_id": run_id, "after": after,
                                     "heartbeat_seconds": heartbeat_seconds})
    while True:
        now = time.monotonic()
        if max_seconds is not None and now - started >= max_seconds:
            return
        if await is_disconnected():
            return
        try:
            rows = await to_thread.run_sync(read_after, run_id, after)
        except Exception as exc:
            log.exception("live stream of run %s failed", run_id)
            yield format_event("error", {"error": type(exc).__name__,
                                         "message": "reading new predictions failed"})
            return
        for seq, prediction in rows:
            after = seq
            data = prediction.model_dump(mode="json")
            data["id"] = seq
            data["job_id"] = run_id
            yield format_event("prediction", data, event_id=seq)
        if time.monotonic() - last_beat >= heartbeat_seconds:
            last_beat = time.monotonic()
            yield format_event("heartbeat", {"time": time.time(), "after": after})
        if len(rows) < BATCH:
            await sleep(poll_seconds)


def stream_response(events: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers={
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",  # reverse proxies must not buffer the stream
    })
