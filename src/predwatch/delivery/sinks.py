"""Where a recorder sends its rows: straight into a store, or to the ingest API (``sinks_http``).

Training code only enqueues. ``submit`` first writes the evaluation point to an on-disk spool
(one fsync'ed JSON file per batch), then a background writer thread delivers it and removes the
file. So a crash, a ``kill -9`` or an exit without ``close()`` never loses a submitted row: what
was not delivered is still in the spool, and goes out at the next successful round, at close,
or with ``predwatch replay``. Delivery is idempotent (the store skips rows it already has), so a
batch may safely be sent twice.

```
Recorder.record() ──submit()──▶ Spool (dir of batch files) + queue
                                            │ writer thread
                                            ▼
                                 deliver() ──▶ store / HTTP ──ok──▶ file removed
                                            │ failure: the file stays
                                            ▼
                           next round / flush / `predwatch replay` ──▶ deliver()
```
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from predwatch.errors import PayloadError
from predwatch.records import EvalPoint, Prediction, Run

log = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.]")


@dataclass
class Batch:
    """One evaluation point's rows: the unit of delivery, spooling and replay."""

    run_id: str
    point: EvalPoint
    predictions: list[Prediction]
    batch_id: str = ""
    target: str | None = None  # where a spooled batch was headed (store URL or server URL)
    # Recorded while the server could not be reached to say which run a token writes to: the
    # rows carry the recorder's own run id and go to the token's run when delivered.
    provisional: bool = False

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
    def from_wire(cls, data: dict[str, Any], *, batch_id: str = "") -> Batch:
        point = EvalPoint.model_validate(data["eval_point"])
        preds = [Prediction.model_validate(p) for p in data["predictions"]]
        return cls(run_id=data["job_id"], point=point, predictions=preds, batch_id=batch_id)


class Spool:
    """A directory of undelivered batches, one JSON file each, written atomically with fsync."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.unreadable: set[Path] = set()  # files that could not be read (reported once)

    def put(self, batch: Batch, *, target: str | None = None) -> Path:
        """Persist a batch durably; returns its file. ``target`` records where it was headed."""
        self.directory.mkdir(parents=True, exist_ok=True)
        body = batch.to_wire()
        body["_spool"] = {"target": target, "spooled_at": time.time(),
                          "provisional": batch.provisional}
        # The run id is in the file; its name only orders and identifies it (any run id, even
        # one with "/" or of any length, makes a valid file name).
        run = _SAFE_NAME.sub("_", batch.run_id)[:64]
        name = f"{int(time.time() * 1000):015d}-{run}-{batch.point.step}-{batch.batch_id}.json"
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
        meta = data.get("_spool") or {}
        batch.target = meta.get("target")
        batch.provisional = bool(meta.get("provisional"))
        return batch

    def items(self) -> Iterator[tuple[Path, Batch]]:
        for path in self.files():
            try:
                yield path, self.load(path)
            except (OSError, ValueError, KeyError) as exc:
                if path not in self.unreadable:
                    self.unreadable.add(path)
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

    def flush(self, timeout: float | None = None) -> int:
        """Wait for queued batches (and the spool) to be delivered; returns how many remain."""
        ...

    def finish_run(self, run_id: str, status: str) -> None:
        """Mark the run finished (or failed) where rows go."""
        ...

    def close(self, timeout: float | None = None) -> int:
        """Flush with a bounded wait, stop the writer; returns batches still undelivered."""
        ...


class BackgroundSink:
    """Base for sinks: spool first, then a writer thread delivers each batch.

    ``submit`` writes the batch to the on-disk spool (fsync'ed) before it returns, so a crash, a
    ``kill -9`` or an exit without ``close()`` at any moment leaves every submitted row on disk;
    the file is removed only once the batch is delivered. A batch whose delivery fails stays in
    the spool and is sent at the next successful round, at ``flush``/``close`` and by
    ``predwatch replay``; one the target refuses for good (``_is_permanent``) is left there with
    its reason, and does not block the others. Subclasses implement ``deliver(batch)`` (raise on
    failure), ``open_run`` and ``finish_run``.
    """

    target: str = "?"

    def __init__(self, spool_dir: str | os.PathLike[str]) -> None:
        self.spool = Spool(spool_dir)
        self._queue: queue.Queue[Batch | None] = queue.Queue()
        self._pending = 0
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._cap: float | None = None  # a flush()'s deadline: replays stop there
        self._queued: dict[str, Path] = {}  # batch_id -> spool file, for batches in the queue
        self._rejected: set[str] = set()  # refused for good: left for `predwatch replay`
        # Spool files are immutable: whose each one is, is read once (a long spool is not
        # parsed again after every delivery).
        self._foreign: set[Path] = set()  # other targets' or runs' batches: left alone
        self._known_mine: set[Path] = set()
        self._replay_lock = threading.Lock()
        self.delivered_batches = 0
        self.delivered_rows = 0

    # -- subclass API --------------------------------------------------------------------------
    def deliver(self, batch: Batch) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def finish_run(self, run_id: str, status: str) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _is_permanent(self, exc: Exception) -> bool:
        """True when retrying ``exc`` cannot help (the batch itself is refused)."""
        return False

    def _batch(self, point: EvalPoint, predictions: Sequence[Prediction]) -> Batch:
        return Batch(run_id=point.run_id, point=point, predictions=list(predictions))

    def _mine(self, batch: Batch) -> bool:
        """Spooled batches this sink sends (others are left for ``predwatch replay``)."""
        return batch.target in (None, self.target)

    # -- Sink ------------------------------------------------------------------------------------
    def submit(self, point: EvalPoint, predictions: Sequence[Prediction]) -> None:
        """Spool the batch durably, then queue it for the writer; never raises."""
        batch = self._batch(point, predictions)
        try:
            path: Path | None = self.spool.put(batch, target=self.target)
        except (OSError, ValueError, TypeError) as exc:  # disk full...: deliver from memory
            log.error("predwatch: could not spool step %s of run %s (%s); delivering it from "
                      "memory only", point.step, point.run_id, exc)
            path = None
        with self._lock:
            if self._closed:
                if path is None:
                    log.error("predwatch: sink closed and spool unwritable: %d rows of step %s "
                              "lost", len(batch.predictions), point.step)
                return  # it is in the spool for `predwatch replay`
            self._pending += 1
            if path is not None:
                self._queued[batch.batch_id] = path
        self._ensure_thread()
        self._queue.put(batch)

    def flush(self, timeout: float | None = None) -> int:
        """Wait for queued batches, then send spooled ones, all within ``timeout``; returns how
        many batches remain undelivered."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._cap = deadline
        try:
            with self._lock:
                while self._pending:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        break
                    self._lock.wait(remaining)
                pending = self._pending
            if pending == 0:
                self.replay_spool()
            return self.pending_in_spool() + self._unspooled()
        finally:
            self._cap = None

    def close(self, timeout: float | None = None) -> int:
        """Deliver what it can within ``timeout``, stop the writer, say loudly what is left."""
        remaining = self.flush(timeout)
        self._stopping()
        with self._lock:
            self._closed = True
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=5)
        remaining = self.pending_in_spool() + self._unspooled()
        if remaining:
            log.error(
                "predwatch: %d batch(es) NOT delivered to %s after waiting %.0fs; they are "
                "safe in %s. Send them with: %s",
                remaining, self.target, timeout or 0, self.spool.directory, self._replay_hint(),
            )
        return remaining

    # -- internals ---------------------------------------------------------------------------
    def _stopping(self) -> None:
        """Called by ``close`` before the writer is stopped (e.g. to end retries)."""

    def _replay_hint(self) -> str:
        return f"predwatch replay --spool {self.spool.directory}"

    def _unspooled(self) -> int:
        """Queued batches that exist only in memory (their spool write failed)."""
        with self._lock:
            return max(0, self._pending - len(self._queued))

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
            except Exception:  # noqa: BLE001 - the writer thread must outlive any failure
                log.exception("predwatch: unexpected error delivering a batch (it stays spooled)")
            finally:
                with self._lock:
                    self._pending -= 1
                    self._queued.pop(batch.batch_id, None)
                    self._lock.notify_all()

    def _deliver_or_spool(self, batch: Batch) -> None:
        try:
            inserted = self.deliver(batch)
        except Exception as exc:  # noqa: BLE001 - delivery failed: keep the rows, say so loudly
            if self._is_permanent(exc):
                self._rejected.add(batch.batch_id)
            with self._lock:
                path = self._queued.pop(batch.batch_id, None)
            if path is None:
                self._spool_batch(batch, f"{type(exc).__name__}: {exc}")
            else:
                log.error(
                    "predwatch: delivery of step %s of run %s (%d rows) to %s failed (%s); kept "
                    "in %s: retried at the next evaluation point, at the end of training, and "
                    "by `predwatch replay`", batch.point.step, batch.run_id,
                    len(batch.predictions), self.target, exc, path)
            return
        with self._lock:
            path = self._queued.pop(batch.batch_id, None)
        if path is not None:
            self._remove(path)
        self.delivered_batches += 1
        self.delivered_rows += inserted
        if self._backlog():  # the target is back: send what earlier failures left
            self.replay_spool()

    def _backlog(self) -> bool:
        """Whether the spool holds batches this sink may still send, besides queued ones."""
        with self._lock:
            queued = set(self._queued.values())
        return any(path not in queued and path.stem.rsplit("-", 1)[-1] not in self._rejected
                   for path in self._spooled_mine())

    def _spooled_mine(self) -> Iterator[Path]:
        """This sink's spooled batch files, oldest first."""
        for path in self.spool.files():
            if path in self._foreign or path in self.spool.unreadable:
                continue
            if path not in self._known_mine:
                try:
                    batch = self.spool.load(path)
                except (OSError, ValueError, KeyError) as exc:
                    if path.exists():
                        self.spool.unreadable.add(path)
                        log.error("spool file %s cannot be read (%s); left in place", path, exc)
                    continue
                if not self._mine(batch):
                    self._foreign.add(path)
                    continue
                self._known_mine.add(path)
            yield path

    def _spool_batch(self, batch: Batch, reason: str) -> None:
        """Spool a batch that was delivered from memory (its first spool write had failed)."""
        try:
            path = self.spool.put(batch, target=self.target)
        except (OSError, ValueError, TypeError):
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
        """Send this sink's spooled batches, oldest first; returns (delivered, still pending).

        A retryable failure stops the replay (the target is still down); a batch refused for
        good is left in the spool with its reason logged and skipped from then on. A replay
        stops at the deadline of the ``flush`` that started it.
        """
        delivered = 0
        with self._replay_lock:
            for path in list(self._spooled_mine()):
                if self._cap is not None and time.monotonic() >= self._cap:
                    break
                with self._lock:
                    queued = path in self._queued.values()
                if queued or path.stem.rsplit("-", 1)[-1] in self._rejected:
                    continue
                try:
                    batch = self.spool.load(path)
                except (OSError, ValueError, KeyError):
                    continue  # delivered meanwhile by the writer (removed), or unreadable
                try:
                    self.deliver(batch)
                except Exception as exc:  # noqa: BLE001 - keep the batch; say why
                    if self._is_permanent(exc):
                        self._rejected.add(batch.batch_id)
                        log.error("predwatch: %s was refused (%s); left in the spool",
                                  path.name, exc)
                        continue
                    log.warning("predwatch: replay of %s failed (%s); kept", path.name, exc)
                    break
                self._remove(path)
                delivered += 1
        return delivered, self.pending_in_spool()

    def _remove(self, path: Path) -> None:
        self.spool.remove(path)
        self._known_mine.discard(path)

    def pending_in_spool(self) -> int:
        """Spooled batches this sink still has to deliver (including refused ones)."""
        return sum(1 for _ in self._spooled_mine())


class StoreSink(BackgroundSink):
    """Writes straight into a store (SQLite file or PostgreSQL)."""

    def __init__(
        self, store: Any, *, spool_dir: str | os.PathLike[str] = ".predwatch/spool"
    ) -> None:
        super().__init__(spool_dir)
        self.store = store
        self.target = _store_target(store)

    def open_run(self, run: Run) -> Run:
        return self.store.ensure_run(run)

    def _is_permanent(self, exc: Exception) -> bool:
        # Refused rows (bad payload, a value the database rejects) fail the same way every
        # time; an unreachable or locked database (OperationalError) is worth retrying.
        from sqlalchemy.exc import DataError, IntegrityError

        return isinstance(exc, (PayloadError, DataError, IntegrityError, ValueError, TypeError))

    def deliver(self, batch: Batch) -> int:
        return int(self.store.write_eval_point(batch.point, batch.predictions))

    def finish_run(self, run_id: str, status: str) -> None:
        self.store.finish_run(run_id, status=status)


def _store_target(store: Any) -> str:
    """Where a store sink's spooled batches go: the store's URL, with a SQLite file made
    absolute (``predwatch replay`` may run from another directory)."""
    url = str(getattr(store, "url", "store"))
    engine = getattr(store, "engine", None)
    if engine is None or engine.url.get_backend_name() != "sqlite":
        return url
    database = engine.url.database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return url
    return f"sqlite:///{Path(database).expanduser().resolve()}"


def open_sink(settings: Any) -> BackgroundSink:
    """The sink ``settings`` asks for: the ingest API when ``server_url`` is set, else a store."""
    if settings.server_url:
        from predwatch.delivery.http import HttpSink

        return HttpSink(
            settings.server_url,
            token=settings.run_token,
            api_key=settings.api_key,
            spool_dir=settings.spool_dir,
            total_timeout=settings.delivery_timeout_seconds,
        )
    from predwatch.storage import open_store

    return StoreSink(open_store(settings.database_url), spool_dir=settings.spool_dir)
