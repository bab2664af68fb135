"""Where a recorder sends its rows: straight into a store, or to the ingest API (``sinks_http``).

Training code only enqueues. A background writer thread delivers each evaluation point as one
batch. A batch that cannot be delivered is kept in an on-disk spool (one fsync'ed JSON file per
batch) and delivered later: at the next round, at close, or by ``predwatch replay``. Delivery is
idempotent (the store skips rows it already has), so a batch may safely be sent twice.

```
Recorder.record() ──submit()──▶ queue ──writer thread──▶ deliver() ──▶ store / HTTP
                                            │ failure
                                            ▼
                                     Spool (dir of batch files) ──replay()──▶ deliver()
```
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Protocol, Sequence, runtime_checkable

from predwatch.records import EvalPoint, Prediction, Run

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """One evaluation point's rows: the unit of delivery, spooling and replay."""

    run_id: str
    point: EvalPoint
    predictions: list[Prediction]
    batch_id: str = ""
    target: Optional[str] = None  # where a spooled batch was headed (store URL or server URL)

    def __post_init__(self) -> None:
        if not self.batch_id:
            self.batch_id = uuid.uuid4().hex

    def to_wire(self) -> dict[str, Any]:
        """The ingest API body: the original ``{job_id, predictions}`` plus ``eval_point``."""
        return {
            "job_id": self.run_id,
            "eval_point": self.point.model_dump(mode="json"),
            "predictions": [p.model_dump(mode="json") for p in self.predictions],
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any], *, batch_id: str = "") -> "Batch":
        point = EvalPoint.model_validate(data["eval_point"])
        preds = [Prediction.model_validate(p) for p in data["predictions"]]
        return cls(run_id=data["job_id"], point=point, predictions=preds, batch_id=batch_id)


class Spool:
    """A directory of undelivered batches, one JSON file each, written atomically with fsync."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def put(self, batch: Batch, *, target: Optional[str] = None) -> Path:
        """Persist a batch durably; returns its file. ``target`` records where it was headed."""
        self.directory.mkdir(parents=True, exist_ok=True)
        body = batch.to_wire()
        body["_spool"] = {"target": target, "spooled_at": time.time()}
        name = (
            f"{int(time.time() * 1000):015d}-{batch.run_id}-{batch.point.step}-"
            f"{batch.batch_id}.json"
        )
        final = self.directory / name
        tmp = final.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(body, fh, ensure_ascii=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)  # atomic: a reader never sees half a batch
        _fsync_dir(self.directory)
        return final

    def files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob("*.json"))

    def __len__(self) -> int:
        return len(self.files())

    def load(self, path: Path) -> Batch:
        data = json.loads(path.read_text(encoding="utf-8"))
        batch_id = path.stem.rsplit("-", 1)[-1]
        batch = Batch.from_wire(data, batch_id=batch_id)
        batch.target = (data.get("_spool") or {}).get("target")
        return batch

    def items(self) -> Iterator[tuple[Path, Batch]]:
        for path in self.files():
            try:
                yield path, self.load(path)
            except (OSError, ValueError, KeyError) as exc:
                log.error("spool file %s cannot be read (%s); left in place", path, exc)

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@runtime_checkable
class Sink(Protocol):
    """Receives evaluation points from a recorder."""

    def open_run(self, run: Run) -> Run:
        """Make sure the run exists where rows go; returns the run as stored."""
        ...

    def submit(self, point: EvalPoint, predictions: Sequence[Prediction]) -> None:
        """Enqueue one evaluation point; never blocks on I/O, never raises."""
        ...

    def flush(self, timeout: Optional[float] = None) -> int:
        """Wait for queued batches (and the spool) to be delivered; returns how many remain."""
        ...

    def finish_run(self, run_id: str, status: str) -> None:
        """Mark the run finished (or failed) where rows go."""
        ...

    def close(self, timeout: Optional[float] = None) -> int:
        """Flush with a bounded wait, stop the writer; returns batches still undelivered."""
        ...


class BackgroundSink:
    """Base for sinks: a writer thread that delivers batches and spools what fails.

    Subclasses implement ``deliver(batch)`` (raise on failure) and ``open_run``/``finish_run``.
    """

    target: str = "?"

    def __init__(self, spool_dir: str | os.PathLike[str]) -> None:
        self.spool = Spool(spool_dir)
        self._queue: "queue.Queue[Optional[Batch]]" = queue.Queue()
        self._pending = 0
        self._lock = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        self._closed = False
        self.delivered_batches = 0
        self.delivered_rows = 0

    # -- subclass API --------------------------------------------------------------------------
    def deliver(self, batch: Batch) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def finish_run(self, run_id: str, status: str) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- Sink ------------------------------------------------------------------------------------
    def submit(self, point: EvalPoint, predictions: Sequence[Prediction]) -> None:
        batch = Batch(run_id=point.run_id, point=point, predictions=list(predictions))
        with self._lock:
            if self._closed:
                # Too late for the writer: keep the rows on disk rather than dropping them.
                self._spool_batch(batch, "sink already closed")
                return
            self._pending += 1
        self._ensure_thread()
        self._queue.put(batch)

    def flush(self, timeout: Optional[float] = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._pending:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._lock.wait(remaining)
            pending = self._pending
        if pending == 0:
            self.replay_spool()
        return pending + self.pending_in_spool()

    def close(self, timeout: Optional[float] = None) -> int:
        remaining = self.flush(timeout)
        with self._lock:
            self._closed = True
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=5)
        if remaining:
            log.error(
                "predwatch: %d batch(es) still undelivered after %.0fs; they are kept in %s "
                "and can be sent with `predwatch replay --spool %s`",
                remaining, timeout or 0, self.spool.directory, self.spool.directory,
            )
        return remaining

    # -- internals ---------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name=f"predwatch-{type(self).__name__}", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            try:
                self._deliver_or_spool(batch)
            finally:
                with self._lock:
                    self._pending -= 1
                    self._lock.notify_all()

    def _deliver_or_spool(self, batch: Batch) -> None:
        try:
            inserted = self.deliver(batch)
        except Exception as exc:  # delivery failed: keep the rows, say so once, loudly
            self._spool_batch(batch, f"{type(exc).__name__}: {exc}")
            return
        self.delivered_batches += 1
        self.delivered_rows += inserted
        # A success means the target is back: send what an earlier failure left behind.
        if len(self.spool):
            self.replay_spool()

    def _spool_batch(self, batch: Batch, reason: str) -> None:
        try:
            path = self.spool.put(batch, target=self.target)
        except OSError:
            log.exception(
                "predwatch: could not deliver NOR spool step %s of run %s (%d rows lost): %s",
                batch.point.step, batch.run_id, len(batch.predictions), reason,
            )
            return
        log.error(
            "predwatch: delivery of step %s of run %s (%d rows) to %s failed (%s); "
            "kept in %s for a later retry",
            batch.point.step, batch.run_id, len(batch.predictions), self.target, reason, path,
        )

    def replay_spool(self) -> tuple[int, int]:
        """Deliver every spooled batch; returns (delivered batches, still pending)."""
        delivered = 0
        for path, batch in list(self.spool.items()):
            if batch.target not in (None, self.target):
                # another sink's batch (e.g. another database): `predwatch replay` sends it
                continue
            try:
                self.deliver(batch)
            except Exception as exc:
                log.warning("predwatch: replay of %s failed (%s); kept", path.name, exc)
                break  # the target is still down; keep order and try again later
            self.spool.remove(path)
            delivered += 1
        return delivered, len(self.spool)

    def pending_in_spool(self) -> int:
        """Spooled batches headed for this sink's target."""
        return sum(1 for _, b in self.spool.items() if b.target in (None, self.target))


class StoreSink(BackgroundSink):
    """Writes straight into a store (SQLite file or PostgreSQL)."""

    def __init__(
        self, store: Any, *, spool_dir: str | os.PathLike[str] = ".predwatch/spool"
    ) -> None:
        super().__init__(spool_dir)
        self.store = store
        self.target = getattr(store, "url", "store")

    def open_run(self, run: Run) -> Run:
        return self.store.ensure_run(run)

    def deliver(self, batch: Batch) -> int:
        return int(self.store.write_eval_point(batch.point, batch.predictions))

    def finish_run(self, run_id: str, status: str) -> None:
        self.store.finish_run(run_id, status=status)


def open_sink(settings: Any) -> BackgroundSink:
    """The sink ``settings`` asks for: the ingest API when ``server_url`` is set, else a store."""
    if settings.server_url:
        from predwatch.sinks_http import HttpSink

        return HttpSink(
            settings.server_url,
            token=settings.run_token,
            api_key=settings.api_key,
            spool_dir=settings.spool_dir,
            total_timeout=settings.delivery_timeout_seconds,
        )
    from predwatch.storage import open_store

    return StoreSink(open_store(settings.database_url), spool_dir=settings.spool_dir)
