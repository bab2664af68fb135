"""The spool: a directory of undelivered batches, one fsync'ed JSON file each.

A batch is written (and fsync'ed, file and directory) before ``record`` returns, and its file is
removed only once a destination stored it; so a crash or a ``kill -9`` at any moment leaves every
recorded row on disk for the worker's next round or ``predwatch replay``. A run's end (its
``Finish``: finished or failed) is spooled the same way, after its last batch, and delivered after
the run's batches. The ``SpoolIndex`` says whose each file is (target, run) and reads each file
once: spool files never change.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from pydantic_core import to_json

from predwatch.records import EvalPoint, Prediction

log = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.]")
_READ_ERRORS = (OSError, ValueError, KeyError, TypeError)


def wire_body(run_id: str, point: EvalPoint, predictions: list[Prediction]) -> bytes:
    """The ingest API body, ``{job_id, eval_point, predictions}`` (the original contract plus
    ``eval_point``): built here only, for the wire and for spool files alike."""
    return to_json({"job_id": run_id, "eval_point": point, "predictions": predictions},
                   inf_nan_mode="null")


@dataclass
class Batch:
    """One evaluation point's rows: the unit of delivery, spooling and replay."""

    run_id: str
    point: EvalPoint
    predictions: list[Prediction]
    batch_id: str = ""
    target: str | None = None  # where a spooled batch was headed (store URL or server URL)
    # Recorded before the destination confirmed which run the rows belong to (a token's run is
    # known only once the server answers): the rows carry the recorder's own run id and are
    # moved to the confirmed run when delivered (``adopt``).
    provisional: bool = False

    def __post_init__(self) -> None:
        if not self.batch_id:
            self.batch_id = uuid.uuid4().hex

    def to_wire(self) -> dict[str, Any]:
        """The ingest API body as a dict (see ``wire_body``)."""
        return dict(json.loads(wire_body(self.run_id, self.point, self.predictions)))

    @classmethod
    def from_wire(cls, data: dict[str, Any], *, batch_id: str = "") -> Batch:
        point = EvalPoint.model_validate(data["eval_point"])
        preds = [Prediction.model_validate(p) for p in data["predictions"]]
        return cls(run_id=data["job_id"], point=point, predictions=preds, batch_id=batch_id)

    def adopt(self, run_id: str) -> Batch:
        """This batch as rows of ``run_id`` (the run the destination confirmed)."""
        if self.run_id == run_id:
            return self
        change = {"run_id": run_id}
        return Batch(run_id=run_id, point=self.point.model_copy(update=change),
                     predictions=[p.model_copy(update=change) for p in self.predictions],
                     batch_id=self.batch_id, target=self.target)


@dataclass
class Finish:
    """A run's end (``finished`` or ``failed``), spooled after its last batch so that a
    destination down when training ends still learns it (from the worker, or ``replay``)."""

    run_id: str
    status: str
    batch_id: str = ""
    target: str | None = None
    provisional: bool = False  # spooled before the destination confirmed the run (see Batch)

    def __post_init__(self) -> None:
        if not self.batch_id:
            self.batch_id = uuid.uuid4().hex

    def adopt(self, run_id: str) -> Finish:
        """This finish for ``run_id`` (the run the destination confirmed)."""
        if self.run_id == run_id:
            return self
        return Finish(run_id=run_id, status=self.status, batch_id=self.batch_id,
                      target=self.target)


# What a spool file holds: one evaluation point's rows, or a run's end.
Entry: TypeAlias = Batch | Finish
FINISH_MARK = "finish"  # in a finish's file name, where a batch's has its step


@dataclass(frozen=True)
class Owner:
    """Whose a spooled batch is: where it was headed and under which run."""

    target: str | None
    run_id: str
    provisional: bool


class Spool:
    """A directory of undelivered batches, one JSON file each, written atomically with fsync."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.unreadable: set[Path] = set()  # files that could not be read (reported once)

    def put(self, batch: Entry, *, target: str | None = None) -> Path:
        """Persist a batch (or a finish) durably; returns its file. ``target`` records where it
        was headed."""
        self.directory.mkdir(parents=True, exist_ok=True)
        meta = to_json({"target": target, "spooled_at": time.time(),
                        "provisional": batch.provisional})
        if isinstance(batch, Finish):
            body = to_json({"job_id": batch.run_id, "finish": {"status": batch.status}})
            what = FINISH_MARK
        else:
            body = wire_body(batch.run_id, batch.point, batch.predictions)
            what = str(batch.point.step)
        # The run id is in the file; its name only orders and identifies it (any run id, even
        # one with "/" or of any length, makes a valid file name).
        run = _SAFE_NAME.sub("_", batch.run_id)[:64]
        name = f"{time.time_ns() // 1000:017d}-{run}-{what}-{batch.batch_id}.json"
        final = self.directory / name
        tmp = final.with_suffix(".tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.write(body[:-1] + b',"_spool":' + meta + b"}")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)  # atomic: a reader never sees half a batch
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.directory)
        return final

    def files(self) -> list[Path]:
        """Spooled files, oldest first, finishes after every batch: a run is marked finished
        only once the batches before it are delivered (a batch respooled after its spool write
        first failed is newer than its run's finish)."""
        try:
            return sorted(self.directory.glob("*.json"), key=lambda p: (is_finish(p), p.name))
        except OSError:
            return []

    def __len__(self) -> int:
        return len(self.files())

    def load(self, path: Path) -> Entry:
        data = json.loads(path.read_text(encoding="utf-8"))
        batch: Entry
        if "finish" in data:
            batch = Finish(run_id=str(data["job_id"]), status=str(data["finish"]["status"]),
                           batch_id=batch_id_of(path))
        else:
            batch = Batch.from_wire(data, batch_id=batch_id_of(path))
        meta = data.get("_spool") or {}
        batch.target = meta.get("target")
        batch.provisional = bool(meta.get("provisional"))
        return batch

    def items(self) -> Iterator[tuple[Path, Entry]]:
        """Every readable entry, oldest first (finishes last); an unreadable file is logged
        once and left."""
        for path in self.files():
            try:
                yield path, self.load(path)
            except _READ_ERRORS as exc:
                self._unreadable(path, exc)

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def _unreadable(self, path: Path, exc: Exception) -> None:
        if path.exists() and path not in self.unreadable:
            self.unreadable.add(path)
            log.error("predwatch: spool file %s cannot be read (%s); left in place", path, exc)


class SpoolIndex:
    """Whose each spooled batch is, read once per file (a long spool shared by several jobs is
    not parsed again at every round); batches this process spooled are known without reading."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self._owners: dict[Path, Owner] = {}
        self._batches: dict[Path, Entry] = {}  # spooled by us and not delivered yet

    def add(self, path: Path, batch: Entry) -> None:
        self._owners[path] = Owner(batch.target, batch.run_id, batch.provisional)
        self._batches[path] = batch

    def forget(self, path: Path) -> None:
        self._owners.pop(path, None)
        self._batches.pop(path, None)

    def entries(self) -> Iterator[tuple[Path, Owner]]:
        """Every readable spooled batch with its owner, oldest first."""
        for path in self.spool.files():
            if path in self.spool.unreadable:
                continue
            owner = self._owners.get(path)
            if owner is None:
                try:
                    batch = self.spool.load(path)
                except _READ_ERRORS as exc:
                    self.spool._unreadable(path, exc)
                    continue
                owner = self._owners[path] = Owner(batch.target, batch.run_id, batch.provisional)
            yield path, owner

    def batch(self, path: Path) -> Entry:
        """The entry in ``path`` (from memory when this process spooled it)."""
        found = self._batches.get(path)
        return found if found is not None else self.spool.load(path)


def batch_id_of(path: Path) -> str:
    return path.stem.rsplit("-", 1)[-1]


def is_finish(path: Path) -> bool:
    """Whether the spool file ``path`` holds a run's finish (told by its name, not read)."""
    parts = path.stem.rsplit("-", 2)
    return len(parts) == 3 and parts[1] == FINISH_MARK


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
