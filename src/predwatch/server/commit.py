"""Group commit: the ingest requests of one server process share transactions.

Every ingest request is parsed and checked on its own (``ingest.parse_batch``), then handed to
the process's ``GroupCommit``: one writer thread that takes every request waiting at that
moment (up to ``MAX_GROUP_ROWS`` rows), writes all their evaluation points in one transaction
(``Store.write_eval_points``: the same per-point idempotency as one request alone) and commits
once. Each request is answered only after the commit of its rows: a count that says
"inserted" means stored, and a server killed mid-group loses no acknowledged row (the group's
transaction is rolled back as a whole; its requests got no answer and are re-sent).

No batching delay is added: requests arriving while a group is being written form the next
group, so a lone writer is served at once and a busy server writes larger groups.

When the combined transaction fails, no member is failed for another's fault: each member is
written again alone, in its own transaction, and answered with what that gives (one bad batch
its 4xx, the others their 200). A database that is down fails each retry the same way (503);
on SQLite, a database locked by another process past the busy timeout answers the members one
after another, each after its own wait.

One writer per process also removes the lock contention of concurrent SQLite writers inside a
process (their busy-handler sleeps made the slow tail); with several workers there is one
group writer per worker.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from predwatch.records import EvalPoint, Prediction
from predwatch.storage.base import Store

log = logging.getLogger(__name__)

MAX_GROUP_ROWS = 5000  # rows in one transaction: bounds how long a group holds the write lock
MAX_GROUP_REQUESTS = 100
IDLE_EXIT_S = 5.0  # an idle writer thread ends (the next request starts another)
PG_WRITERS = 4  # concurrent groups per process on PostgreSQL

Points = Sequence[tuple[EvalPoint, Sequence[Prediction]]]


@dataclass
class _Member:
    """One request waiting in the queue: its points and the future of its inserted count."""

    points: Points
    future: Future[int] = field(default_factory=Future)

    @property
    def rows(self) -> int:
        return sum(len(preds) for _, preds in self.points)


@dataclass
class CommitStats:
    """What the writer did (for tests and the bench): groups committed, requests in them, the
    largest group, and how many groups failed and were retried one member at a time."""

    groups: int = 0
    requests: int = 0
    largest: int = 0
    retried: int = 0


class GroupCommit:
    """The group writers of one process over ``store`` (started on first use, ended when idle).

    ``writers``: groups written at once. One on SQLite (one writer at a time anyway); on
    PostgreSQL ``PG_WRITERS``, so that the round trips of one group overlap another's.
    """

    def __init__(self, store: Store, *, writers: int | None = None,
                 max_rows: int = MAX_GROUP_ROWS, max_requests: int = MAX_GROUP_REQUESTS) -> None:
        self.store = store
        self.writers = writers or (1 if store.dialect == "sqlite" else PG_WRITERS)
        self.max_rows = max_rows
        self.max_requests = max_requests
        self.stats = CommitStats()
        self._queue: queue.SimpleQueue[_Member | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()  # the current writers': finish the queue, then end
        self._lock = threading.Lock()

    def submit(self, points: Points) -> Future[int]:
        """Queue one request's points; the future gives its inserted count once committed (or
        the request's own error)."""
        member = _Member(points)
        if not points:  # nothing to store (an empty body): nothing to wait for
            member.future.set_result(0)
            return member.future
        self._queue.put(member)
        self._ensure_writers()
        return member.future

    @property
    def pending(self) -> int:
        """Requests queued and not yet taken into a group (approximate while writing)."""
        return self._queue.qsize()

    async def write(self, points: Points) -> int:
        """``submit`` and wait (without holding a thread) for the commit."""
        return await asyncio.wrap_future(self.submit(points))

    def close(self, timeout: float = 30.0) -> None:
        """Answer every queued request, then stop the writers (a later ``submit`` restarts
        them)."""
        with self._lock:
            threads, self._threads = self._threads, []
            stop = self._stop
        stop.set()
        for _ in threads:
            self._queue.put(None)  # a wake-up; a writer that is not stopping ignores it
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _ensure_writers(self) -> None:
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            if not self._threads:
                self._stop = threading.Event()
            while len(self._threads) < self.writers:
                thread = threading.Thread(target=self._run, args=(self._stop,), daemon=True,
                                          name=f"predwatch-group-commit-{len(self._threads)}")
                self._threads.append(thread)
                thread.start()

    def _run(self, stop: threading.Event) -> None:
        me = threading.current_thread()
        while True:
            try:
                first = self._queue.get(timeout=0.1 if stop.is_set() else IDLE_EXIT_S)
            except queue.Empty:
                with self._lock:  # a submit after this finds a writer missing and starts one
                    if self._queue.empty():
                        if me in self._threads:
                            self._threads.remove(me)
                        return
                continue
            if first is None:
                continue
            group = [first]
            rows = first.rows
            while rows < self.max_rows and len(group) < self.max_requests:
                try:
                    member = self._queue.get_nowait()
                except queue.Empty:
                    break
                if member is not None:
                    group.append(member)
                    rows += member.rows
            # A request whose client went away before its group started is not written (it
            # was never answered, so never acknowledged); from here on none can be cancelled.
            group = [m for m in group if m.future.set_running_or_notify_cancel()]
            try:
                self._commit(group)
            except BaseException as exc:  # never leave a request waiting for an answer
                for member in group:
                    if not member.future.done():
                        member.future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                log.exception("group commit of %d ingest requests failed", len(group))

    def _commit(self, group: list[_Member]) -> None:
        if not group:
            return
        with self._lock:
            self.stats.groups += 1
            self.stats.requests += len(group)
            self.stats.largest = max(self.stats.largest, len(group))
        try:
            counts = self.store.write_eval_points([p for m in group for p in m.points])
        except Exception as exc:
            if len(group) == 1:
                group[0].future.set_exception(exc)
                return
            with self._lock:
                self.stats.retried += 1
            log.info("a group of %d ingest requests failed (%s: %s); writing each alone",
                     len(group), type(exc).__name__, exc)
            for member in group:
                self._alone(member)
            return
        start = 0
        for member in group:
            end = start + len(member.points)
            member.future.set_result(sum(counts[start:end]))
            start = end

    def _alone(self, member: _Member) -> None:
        try:
            member.future.set_result(sum(self.store.write_eval_points(member.points)))
        except Exception as exc:
            member.future.set_exception(exc)
