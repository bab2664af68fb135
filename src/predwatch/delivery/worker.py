"""One durable worker: spooled batches go to a ``Destination`` on a thread of their own.

```
Recorder.start() ─open_run()─▶ remembered (no I/O)         ┌─ worker thread ───────────────┐
Recorder.record() ─submit()──▶ Spool (fsync) + wake ──────▶│ open the run (once it answers)│
                                                            │ deliver spooled batches, oldest│
Recorder.close() ─finish_run()─▶ Spool (fsync) + wake ───▶│ first, then the run's finish; │
                 ─close()─▶ waits for them (bounded)        │ on failure keep them and retry│
                                                            │ with backoff                  │
                                                            └────────────────────────────────┘
```
The training thread only writes the spool and wakes the worker: opening the run (connecting,
migrating, the server handshake) happens on the worker, so a destination that is down, locked
or stalled when training starts costs training nothing. Until the destination confirmed the run,
batches are *provisional*: they carry the recorder's run id and are moved to the confirmed run
when delivered (a write token's run is known only once the server answered). The run's end
(finished or failed) travels the same way: spooled, delivered after the run's batches, retried,
and replayed. Both destinations, the store and the API, get this, and the same retry and replay.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from predwatch.delivery.base import Destination, send
from predwatch.delivery.spool import (
    Batch,
    Entry,
    Finish,
    Owner,
    Spool,
    SpoolIndex,
    batch_id_of,
    is_finish,
)
from predwatch.records import EvalPoint, Prediction, Run

log = logging.getLogger(__name__)

FLUSH_RETRY_S = 1.0  # longest wait between retries while a flush (train end) is waiting


class SpooledSink:
    """A spool, one worker thread and a destination: the ``Sink`` every recorder uses.

    Args:
        destination: a ``StoreDestination`` or an ``ApiDestination``.
        spool_dir: where undelivered batches wait.
        batch_timeout: seconds one delivery may spend retrying (HTTP) before the worker gives up
            for this round; also the default bound of ``close``.
        retry_base, retry_max: first and longest wait between the worker's own rounds after a
            failure (doubling; a new evaluation point or a flush tries at once).
    """

    def __init__(self, destination: Destination, *,
                 spool_dir: str | os.PathLike[str] = ".predwatch/spool",
                 batch_timeout: float = 60.0, retry_base: float = 0.5,
                 retry_max: float = 30.0) -> None:
        self.destination = destination
        self.target = destination.target
        self.spool = Spool(spool_dir)
        self.batch_timeout = batch_timeout
        self.retry_base, self.retry_max = retry_base, retry_max
        self.delivered_batches = 0
        self.delivered_rows = 0
        # The index is read and pruned by the worker; ``submit`` only adds to it (single dict
        # operations, atomic under the GIL): no lock is held around spool I/O.
        self._index = SpoolIndex(self.spool)
        self._cond = threading.Condition()
        self._memory: list[Entry] = []  # their spool write failed: delivered from memory
        self._rejected: set[str] = set()  # batch ids refused for good (left for replay)
        self._asked: Run | None = None  # the run the recorder opened (its own id)
        self._opened: Run | None = None  # that run as the destination confirmed it
        self._wake = False
        self._retry_at: float | None = None  # the worker's next try after a failed round
        self._failures = 0
        self._cap: float | None = None  # deadline of a waiting flush: retries end there
        self._started_rounds = 0
        self._done_rounds = 0
        self._left = 0  # batches the last round could not deliver (refused ones excluded)
        self._closing = False
        self._thread: threading.Thread | None = None
        self._outage: str | None = None  # the failure already reported (logged once)
        self._spool_failing = False  # the spool could not be written (reported once)

    # -- Sink ------------------------------------------------------------------------------------
    @property
    def run_id(self) -> str | None:
        opened = self._opened
        return opened.id if opened is not None else None

    def open_run(self, run: Run) -> Run:
        with self._cond:
            self._asked = run
            self._wake = True
            self._cond.notify_all()
        self._ensure_thread()
        return run

    def submit(self, point: EvalPoint, predictions: Sequence[Prediction]) -> None:
        """Spool the batch durably (fsync), then wake the worker; never raises."""
        self._enqueue(self._batch(point, predictions), f"step {point.step}")

    def finish_run(self, run_id: str, status: str) -> None:
        """Spool the run's finish (after the batches spooled before it), then wake the worker;
        never raises. A destination down now gets it from the worker's retries or ``replay``."""
        finish = Finish(run_id=run_id, status=status, target=self.target)
        asked, opened = self._asked, self._opened
        if asked is not None and run_id == asked.id:
            if opened is not None:
                finish = finish.adopt(opened.id)
            else:
                finish.provisional = True
        self._enqueue(finish, f"the run's end ({status})")

    def _enqueue(self, entry: Entry, what: str) -> None:
        try:
            path: Path | None = self.spool.put(entry, target=self.target)
        except (OSError, ValueError, TypeError) as exc:  # read-only, disk full...: keep in memory
            # Once per spell of failures, not at every point.
            report = log.debug if self._spool_failing else log.error
            report("predwatch: could not spool %s of run %s into %s (%s); delivering it "
                   "from memory (lost if this process dies first), and the next points too "
                   "until the spool can be written", what, entry.run_id,
                   self.spool.directory, exc)
            self._spool_failing = True
            path = None
        else:
            self._spool_failing = False
        with self._cond:
            if path is not None:
                self._index.add(path, entry)
            else:
                self._memory.append(entry)
            if self._closing:
                log.error("predwatch: %s recorded after the sink was closed; %s",
                          what, f"left in {path}" if path else "it is lost")
                return
            self._wake = True
            self._cond.notify_all()
        self._ensure_thread()

    def flush(self, timeout: float | None = None, *, retry: bool = False) -> int:
        """Wake the worker and wait for one delivery round (``retry``: for rounds until all is
        delivered), at most ``timeout`` seconds (retries end there); returns the batches still
        undelivered."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._ensure_thread()
        with self._cond:
            self._cap = deadline
            self._wake = True
            want = self._started_rounds + 1
            self._cond.notify_all()
            try:
                while not (self._done_rounds >= want and (self._left == 0 or not retry)):
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if (remaining is not None and remaining <= 0) or not self._alive():
                        break
                    self._cond.wait(remaining)
            finally:
                self._cap = None
        return self.pending()

    def close(self, timeout: float | None = None) -> int:
        """Deliver what it can within ``timeout`` (default ``batch_timeout``), stop the worker,
        and say loudly what is left (and how to send it)."""
        wait = self.batch_timeout if timeout is None else timeout
        self.flush(wait, retry=True)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self.destination.cancel()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)
        if thread is None or not thread.is_alive():
            self.destination.close()  # (a worker stuck in a database call keeps its store)
        remaining = self.pending()
        if remaining:
            finishes = sum(1 for path, owner in self._index.entries()
                           if self._mine(owner) and is_finish(path)) + sum(
                isinstance(e, Finish) for e in self._memory)
            log.error(
                "predwatch: %d batch(es) NOT delivered to %s after waiting %.0fs%s; they are "
                "safe in %s. Send them with: predwatch replay --spool %s%s", remaining,
                self.target, wait,
                " (with the run's finish: the run shows as running until then)" if finishes
                else "", self.spool.directory, self.spool.directory,
                self.destination.replay_hint())
        lost = len(self._memory)
        if lost:
            log.error("predwatch: %d batch(es) could neither be spooled nor delivered: LOST",
                      lost)
        return remaining

    def pending(self) -> int:
        """Batches of this sink not delivered yet (spooled, refused or only in memory); a run's
        finish waiting to be delivered counts as one."""
        return sum(1 for path, owner in self._index.entries() if self._mine(owner)) + len(
            self._memory)

    # -- the worker ------------------------------------------------------------------------------
    def _batch(self, point: EvalPoint, predictions: Sequence[Prediction]) -> Batch:
        batch = Batch(run_id=point.run_id, point=point, predictions=list(predictions),
                      target=self.target)
        asked, opened = self._asked, self._opened
        if asked is not None and batch.run_id == asked.id:
            if opened is not None:
                return batch.adopt(opened.id)  # the run is known: spool it under its own id
            batch.provisional = True
        return batch

    def _alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _ensure_thread(self) -> None:
        with self._cond:
            if self._closing or self._alive():
                return
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"predwatch-delivery-{id(self):x}")
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._wake or self._closing or self._due()):
                    wait = None if self._retry_at is None else self._retry_at - time.monotonic()
                    self._cond.wait(wait)
                if self._closing:
                    self._cond.notify_all()
                    return
                self._wake = False
                self._started_rounds += 1
            try:
                left = self._round()
            except Exception:  # noqa: BLE001 - the worker must outlive any failure
                log.exception("predwatch: unexpected error in the delivery worker (the "
                              "batches stay spooled)")
                left = max(1, self._left)
            with self._cond:
                self._done_rounds += 1
                self._left = left
                if left:
                    self._failures += 1
                    delay = min(self.retry_max, self.retry_base * 2 ** min(self._failures - 1, 30))
                    if self._cap is not None:
                        delay = min(delay, FLUSH_RETRY_S)
                    self._retry_at = time.monotonic() + delay
                else:
                    self._failures, self._retry_at = 0, None
                self._cond.notify_all()

    def _due(self) -> bool:
        return self._retry_at is not None and time.monotonic() >= self._retry_at

    def _round(self) -> int:
        """Deliver this sink's batches, oldest first, and then the finishes (a run is marked
        finished once its batches are in); returns how many are left (refused ones not
        counted). The first failure that retrying may fix ends the round."""
        self._respool()
        mine = [path for path, owner in self._index.entries()
                if self._mine(owner) and batch_id_of(path) not in self._rejected]
        with self._cond:
            memory = [e for e in self._memory if e.batch_id not in self._rejected]
        todo = len(mine) + len(memory)
        if not todo and self._opened is not None:
            return 0
        if not self._ensure_open():
            return todo
        queue: list[Path | Entry] = [
            *(p for p in mine if not is_finish(p)), *(e for e in memory if isinstance(e, Batch)),
            *(p for p in mine if is_finish(p)), *(e for e in memory if isinstance(e, Finish))]
        for item in queue:
            if isinstance(item, Path):
                try:
                    entry = self._index.batch(item)
                except (OSError, ValueError, KeyError):
                    # Delivered meanwhile by `predwatch replay`, or unreadable.
                    self._index.forget(item)
                    todo -= 1
                    continue
                outcome = self._send(entry, item.name)
            else:
                outcome = self._send(item, f"{_what(item)} (in memory)")
            if outcome == "failed":
                return todo
            if outcome == "ok":
                if isinstance(item, Path):
                    self.spool.remove(item)
                    self._index.forget(item)
                else:
                    with self._cond:
                        self._memory.remove(item)
            todo -= 1
        return todo

    def _respool(self) -> None:
        """Batches kept in memory go to the spool as soon as it is writable again."""
        with self._cond:
            memory = [b for b in self._memory if b.batch_id not in self._rejected]
        for batch in memory:
            try:
                path = self.spool.put(batch, target=self.target)
            except (OSError, ValueError, TypeError):
                return
            with self._cond:
                self._memory.remove(batch)
                self._index.add(path, batch)

    def _mine(self, owner: Owner) -> bool:
        runs = {r.id for r in (self._asked, self._opened) if r is not None}
        return self.destination.owns(owner, runs)

    def _ensure_open(self) -> bool:
        """Open the run the recorder asked for, once; False while the destination fails."""
        asked = self._asked
        if asked is None or self._opened is not None:
            return True
        try:
            confirmed = self.destination.open_run(asked)
        except Exception as exc:  # noqa: BLE001 - retried; the batches wait in the spool
            self._failed(f"opening run {asked.id}", exc)
            return False
        with self._cond:
            self._opened = confirmed
        if confirmed.id != asked.id:
            log.info("predwatch: %s writes to run %s (recorded as %s until it answered)",
                     self.target, confirmed.id, asked.id)
        self._recovered()
        return True

    def _send(self, batch: Entry, name: str) -> str:
        """Deliver one entry: ``ok``, ``refused`` (for good; kept for replay) or ``failed``."""
        asked, opened = self._asked, self._opened
        if batch.provisional and asked is not None and opened is not None \
                and batch.run_id == asked.id:
            batch = batch.adopt(opened.id)
        deadline = time.monotonic() + self.batch_timeout
        cap = self._cap
        if cap is not None:
            deadline = min(deadline, cap)
        try:
            inserted = send(self.destination, batch, deadline)
        except Exception as exc:  # noqa: BLE001 - delivery failed: keep the rows, say so
            if self.destination.is_permanent(exc):
                self._rejected.add(batch.batch_id)
                log.error("predwatch: %s (%s) was refused by %s (%s); left in %s for "
                          "`predwatch replay`", name, _what(batch), self.target, exc,
                          self.spool.directory)
                return "refused"
            self._failed(f"delivering {_what(batch)}", exc)
            return "failed"
        self._recovered()
        if isinstance(batch, Batch):
            self.delivered_batches += 1
            self.delivered_rows += inserted
        return "ok"

    def _failed(self, what: str, exc: Exception) -> None:
        problem = f"{type(exc).__name__}: {exc}"
        if self._outage is not None:
            log.debug("predwatch: %s still failing: %s", what, problem)
            return
        self._outage = problem
        log.error("predwatch: %s to %s failed (%s); every evaluation point is kept in %s and "
                  "retried automatically (and by `predwatch replay --spool %s%s`); training "
                  "continues", what, self.target, problem, self.spool.directory,
                  self.spool.directory, self.destination.replay_hint())

    def _recovered(self) -> None:
        if self._outage is not None:
            self._outage = None
            log.warning("predwatch: %s answers again; delivering the spooled batches",
                        self.target)


def _what(entry: Entry) -> str:
    """An entry, in a log line."""
    if isinstance(entry, Finish):
        return f"marking run {entry.run_id} {entry.status}"
    return f"step {entry.point.step} of run {entry.run_id} ({len(entry.predictions)} rows)"
