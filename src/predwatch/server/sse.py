"""Live predictions as server-sent events, in two shapes.

The original shape (``/api/training/predictions/{job_id}/stream``, what the original UI's hook
parses): ``connected`` ``{jobId, timestamp, job_id, after, heartbeat_seconds}``; ``prediction``
``{prediction: <the row exactly as the list route renders it, same id>, total_count,
timestamp}``; ``heartbeat`` ``{timestamp, time, after}`` every ``Settings.heartbeat_seconds``
(15 s by default); ``error`` ``{error: <a sentence>, code, message, timestamp}``, after which
the stream ends. Timestamps are ISO 8601 (UTC).

predwatch's shape (``/api/runs/{run_id}/stream``): ``connected`` ``{job_id, after,
heartbeat_seconds}``, ``prediction`` = the record itself plus ``id`` (the sequence number) and
``job_id``, ``heartbeat`` ``{time, after}``, ``error`` ``{error, message}``.

In both, each event is one write (the original hook drops an event split across reads) and
the ``id:`` field is the row's sequence number.

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
from datetime import datetime, timezone
from typing import Any

from anyio import sleep, to_thread
from fastapi.responses import StreamingResponse
from pydantic_core import to_json

from predwatch.errors import NotFound, PayloadError
from predwatch.records import Prediction, Run
from predwatch.server import compat
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
    return store.last_sequence(run_id)


def iso_now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class PredwatchShape:
    """predwatch's own event payloads."""

    original = False

    def __init__(self, store: Store, run_id: str, start: int) -> None:
        self.run_id = run_id

    def connected(self, after: int, heartbeat_seconds: float) -> dict[str, Any]:
        return {"job_id": self.run_id, "after": after, "heartbeat_seconds": heartbeat_seconds}

    def rows(self, rows: list[tuple[int, Prediction]]) -> list[tuple[int, dict[str, Any]]]:
        found = []
        for seq, prediction in rows:
            data = prediction.model_dump(mode="json")
            data["id"] = seq
            data["job_id"] = self.run_id
            found.append((seq, data))
        return found

    def heartbeat(self, after: int) -> dict[str, Any]:
        return {"time": time.time(), "after": after}

    def error(self, exc: Exception) -> dict[str, Any]:
        return {"error": type(exc).__name__, "message": "reading new predictions failed"}


class OriginalShape(PredwatchShape):
    """The original system's event payloads (see the module docstring).

    ``total_count`` is the number of the run's rows up to and including the event's row: the
    rows before the stream's start, counted once, plus one per row sent (so it never goes
    back and ends at the run's total).
    """

    original = True

    def __init__(self, store: Store, run_id: str, start: int) -> None:
        super().__init__(store, run_id, start)
        self.store = store
        self.run: Run | None = None
        self.start = start
        self.count: int | None = None

    def connected(self, after: int, heartbeat_seconds: float) -> dict[str, Any]:
        return {"jobId": self.run_id, "timestamp": iso_now(),
                **super().connected(after, heartbeat_seconds)}

    def rows(self, rows: list[tuple[int, Prediction]]) -> list[tuple[int, dict[str, Any]]]:
        """Runs in a worker thread: reads the run (its owner is ``user_id``) and the count."""
        if not rows:
            return []
        if self.run is None or self.run.owner is None:
            try:  # a stream may start before its run exists (open server): look it up late
                self.run = self.store.get_run(self.run_id)
            except NotFound:
                self.run = Run(id=self.run_id)
        if self.count is None:
            self.count = self._rows_up_to_start()
        stamp = iso_now()
        found = []
        for seq, prediction in rows:
            self.count += 1
            found.append((seq, {"prediction": compat.original_row(seq, prediction, self.run),
                                "total_count": self.count, "timestamp": stamp}))
        return found

    def _rows_up_to_start(self) -> int:
        if self.start == 0:
            return 0
        total = self.store.list_predictions(self.run_id, limit=0).total or 0
        later = len(self.store.predictions_after(self.run_id, self.start, limit=100_000))
        return max(0, total - later)

    def heartbeat(self, after: int) -> dict[str, Any]:
        return {"timestamp": iso_now(), **super().heartbeat(after)}

    def error(self, exc: Exception) -> dict[str, Any]:
        return {"error": "reading new predictions failed", "code": type(exc).__name__,
                "message": "reading new predictions failed", "timestamp": iso_now()}


async def prediction_events(
    store: Store,
    run_id: str,
    *,
    after: int,
    heartbeat_seconds: float,
    poll_seconds: float,
    is_disconnected: Callable[[], Awaitable[bool]],
    max_seconds: float | None = None,
    original: bool = False,
) -> AsyncIterator[bytes]:
    """The event stream of one run, from the row after ``after`` on (``original``: in the
    original system's shape)."""
    shape = (OriginalShape if original else PredwatchShape)(store, run_id, after)
    read_after = functools.partial(store.predictions_after, limit=BATCH)

    def read(after_seq: int) -> list[tuple[int, dict[str, Any]]]:
        return shape.rows(read_after(run_id, after_seq))

    started = last_beat = time.monotonic()
    yield b"retry: 2000\n\n"
    yield format_event("connected", shape.connected(after, heartbeat_seconds))
    while True:
        now = time.monotonic()
        if max_seconds is not None and now - started >= max_seconds:
            return
        if await is_disconnected():
            return
        try:
            rows = await to_thread.run_sync(read, after)
        except Exception as exc:
            log.exception("live stream of run %s failed", run_id)
            yield format_event("error", shape.error(exc))
            return
        for seq, data in rows:
            after = seq
            yield format_event("prediction", data, event_id=seq)
        if time.monotonic() - last_beat >= heartbeat_seconds:
            last_beat = time.monotonic()
            yield format_event("heartbeat", shape.heartbeat(after))
        if len(rows) < BATCH:
            await sleep(poll_seconds)


def stream_response(events: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers={
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",  # reverse proxies must not buffer the stream
    })
