"""The two seams of delivery: a ``Destination`` (where batches go) and a ``Sink`` (what a
recorder hands evaluation points to). ``worker.SpooledSink`` is the one ``Sink``; the store
(``store.StoreDestination``) and the ingest API (``api.ApiDestination``) are the destinations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from predwatch.delivery.spool import Batch, Entry, Finish, Owner
from predwatch.records import EvalPoint, Prediction, Run


class Destination(Protocol):
    """Where batches go: a store or the ingest API. Calls come from the worker thread only."""

    target: str  # recorded with each spooled batch: where it is headed

    def open_run(self, run: Run) -> Run:
        """Make sure the run exists; returns it as the destination knows it (its id may differ:
        a write token decides the run)."""
        ...

    def deliver(self, batch: Batch, deadline: float) -> int:
        """Store one batch (idempotent; retries end by ``deadline``); returns rows new."""
        ...

    def finish_run(self, run_id: str, status: str, deadline: float) -> None:
        """Mark the run ``status`` (idempotent); retries end by ``deadline``."""
        ...

    def is_permanent(self, exc: Exception) -> bool:
        """Whether retrying cannot help (the batch itself is refused)."""
        ...

    def owns(self, owner: Owner, runs: set[str]) -> bool:
        """Whether a spooled batch (whose ``owner`` says where it was headed, under which run)
        is this destination's to send, given the ids of the runs this job writes (empty when
        no run was opened)."""
        ...

    def cancel(self) -> None:
        """End retries in progress (close is waiting)."""
        ...

    def close(self) -> None: ...

    def replay_hint(self) -> str:
        """Options ``predwatch replay`` needs to reach this destination."""
        ...


@runtime_checkable
class Sink(Protocol):
    """What a recorder hands evaluation points to."""

    @property
    def run_id(self) -> str | None:
        """The run the destination confirmed (None until it answered)."""
        ...

    def open_run(self, run: Run) -> Run:
        """Ask for ``run`` to be opened; returns at once (no I/O)."""
        ...

    def submit(self, point: EvalPoint, predictions: Sequence[Prediction]) -> None:
        """Spool one evaluation point and wake the worker; never blocks on I/O, never raises."""
        ...

    def flush(self, timeout: float | None = None, *, retry: bool = False) -> int:
        """Wait (bounded) for a delivery attempt (``retry``: for delivery); returns how many
        batches remain."""
        ...

    def finish_run(self, run_id: str, status: str) -> None:
        """Mark the run finished (or failed) where rows go, after the points submitted before;
        like ``submit``: spooled, delivered by the worker (or ``replay``), never blocks on I/O,
        never raises."""
        ...

    def close(self, timeout: float | None = None) -> int:
        """Flush (bounded), stop the worker; returns batches still undelivered (spooled)."""
        ...


def send(destination: Destination, entry: Entry, deadline: float) -> int:
    """Deliver one spool entry: a batch's rows (returns rows new) or a run's finish (0)."""
    if isinstance(entry, Finish):
        destination.finish_run(entry.run_id, entry.status, deadline)
        return 0
    return destination.deliver(entry, deadline)
