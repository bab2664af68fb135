"""The store destination: rows go straight into a database (SQLite file or PostgreSQL).

Opening the store (connecting, creating or checking the schema) happens in ``open_run``, on the
delivery thread: a database that is down or locked when training starts costs the training loop
nothing, and the batches wait in the spool until it answers.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from predwatch.delivery.spool import Batch, Owner
from predwatch.records import Run

if TYPE_CHECKING:
    from predwatch.storage.base import Store

log = logging.getLogger(__name__)


class StoreDestination:
    """Delivers batches into the store at ``url`` (opened on first use), or into ``store``.

    Args:
        url: a database URL; the store is opened on the delivery thread when first needed.
        store: an open store to write to instead (it is not closed by ``close``).
    """

    def __init__(self, url: str | None = None, *, store: Store | None = None) -> None:
        if (url is None) == (store is None):
            raise ValueError("give a database url or a store")
        self._url = url
        self._store = store
        self._owned = store is None
        self.target = spool_target(url if url is not None else store.url)  # type: ignore[union-attr]

    @property
    def store(self) -> Store:
        """The store, opened now if it is not yet (connects; creates the schema if empty)."""
        if self._store is None:
            from predwatch.storage import open_store

            assert self._url is not None
            self._store = open_store(self._url)
        return self._store

    def open_run(self, run: Run) -> Run:
        return self.store.ensure_run(run)

    def deliver(self, batch: Batch, deadline: float) -> int:
        # ``deadline`` bounds HTTP retries; a database call is bounded by the engine's own
        # connect and busy timeouts.
        return int(self.store.write_eval_point(batch.point, batch.predictions))

    def finish_run(self, run_id: str, status: str, deadline: float) -> None:
        self.store.finish_run(run_id, status=status)

    def is_permanent(self, exc: Exception) -> bool:
        from predwatch.errors import NotFound
        from predwatch.storage.engine import is_permanent_error

        # NotFound: finishing a run that is not there (deleted meanwhile).
        return isinstance(exc, NotFound) or is_permanent_error(exc)

    def owns(self, owner: Owner, runs: set[str]) -> bool:
        """A store takes any run's batches headed for it (a run id there is the run's own)."""
        return owner.target in (None, self.target)

    def cancel(self) -> None:
        """Nothing to interrupt: database calls end within the engine's timeouts."""

    def close(self) -> None:
        if self._owned and self._store is not None:
            self._store.close()

    def replay_hint(self) -> str:
        return ""



def spool_target(url: str) -> str:
    """Where a store sink's spooled batches are headed: the URL with its password masked (spool
    files are not secret), a SQLite file made absolute (``predwatch replay`` may run from another
    directory). Parsed here, not by the storage layer: importing SQLAlchemy and Alembic takes
    seconds, and this runs on the training thread."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    if scheme.startswith("sqlite"):
        path, mark, query = rest.removeprefix("/").partition("?")
        if path in ("", ":memory:") or path.startswith("file:"):
            return url
        return f"sqlite:///{Path(path).expanduser().resolve()}{mark}{query}"
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
