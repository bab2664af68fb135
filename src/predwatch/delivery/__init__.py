"""Delivery: how recorded evaluation points reach a store or a predwatch server, never lost.

A spool on disk (``spool``), one durable worker (``worker``) and two destinations: the store
(``store``) and the ingest API (``api``, through ``predwatch.client``). ``open_sink(settings)``
puts them together; ``predwatch replay`` (``replay``) uses the same pieces.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from predwatch.delivery.base import Destination, Sink
from predwatch.delivery.spool import Batch, Spool
from predwatch.delivery.worker import SpooledSink

if TYPE_CHECKING:
    from predwatch.config import Settings
    from predwatch.storage.base import Store

__all__ = ["ApiSink", "Batch", "Destination", "Sink", "Spool", "SpooledSink", "StoreSink",
           "open_sink", "preload"]


class StoreSink(SpooledSink):
    """A sink writing into a store: ``store`` (an open one) or the database at ``url``, which is
    opened on the delivery thread."""

    def __init__(self, store: Store | None = None, *, url: str | None = None,
                 spool_dir: str | os.PathLike[str] = ".predwatch/spool",
                 batch_timeout: float = 60.0, retry_base: float = 0.5,
                 retry_max: float = 30.0) -> None:
        from predwatch.delivery.store import StoreDestination

        super().__init__(StoreDestination(url, store=store), spool_dir=spool_dir,
                         batch_timeout=batch_timeout, retry_base=retry_base,
                         retry_max=retry_max)


class ApiSink(SpooledSink):
    """A sink posting to the ingest API of the server at ``server_url``.

    Args:
        token: the run's write token; without one, the run is created through the API (an open
            loopback server, or ``api_key``) and the token it is given is kept.
        api_key: a read API key, used only to create a run (default ``PREDWATCH_API_KEY``).
        total_timeout: seconds one batch (or the run's opening) may spend retrying.
        request_timeout: seconds one HTTP request may take.
        backoff_base, backoff_max: first and longest wait between retries (seconds).
        max_rows: rows per request.
    """

    def __init__(self, server_url: str, *, token: str | None = None,
                 api_key: str | None = None,
                 spool_dir: str | os.PathLike[str] = ".predwatch/spool",
                 total_timeout: float = 60.0, request_timeout: float = 30.0,
                 backoff_base: float = 0.5, backoff_max: float = 30.0,
                 max_rows: int = 1000) -> None:
        from predwatch.client import ApiClient
        from predwatch.delivery.api import ApiDestination

        if api_key is None:
            from predwatch.config import Settings

            api_key = Settings.from_env(only=("api_key",)).api_key
        client = ApiClient(server_url, token=token, api_key=api_key,
                           request_timeout=request_timeout, total_timeout=total_timeout,
                           backoff_base=backoff_base, backoff_max=backoff_max)
        self.api = ApiDestination(client, max_rows=max_rows)
        super().__init__(self.api, spool_dir=spool_dir, batch_timeout=total_timeout,
                         retry_base=backoff_base, retry_max=max(backoff_max, backoff_base))

    @property
    def token(self) -> str | None:
        return self.api.token


def open_sink(settings: Settings) -> SpooledSink:
    """The sink ``settings`` asks for: the ingest API when ``server_url`` is set, else the
    database at ``database_url``. Nothing is connected here: that happens on the worker."""
    if settings.server_url:
        return ApiSink(settings.server_url, token=settings.run_token, api_key=settings.api_key,
                       spool_dir=settings.spool_dir,
                       total_timeout=settings.delivery_timeout_seconds)
    return StoreSink(url=settings.database_url, spool_dir=settings.spool_dir,
                     batch_timeout=settings.delivery_timeout_seconds)


def preload(settings: Settings) -> None:
    """Import now, on the calling thread, what ``open_sink(settings)``'s delivery thread will.

    The store path needs SQLAlchemy, Alembic and the SQL store (~300 modules). Imported by the
    delivery thread once training runs, they hold the GIL for a few hundred milliseconds in
    the middle of training; a recorder built before ``trainer.train()`` calls this so that the
    one-time cost is paid at set-up. Connects nothing and never raises: a module that cannot be
    imported is imported (and reported) where it is used.
    """
    if settings.server_url:
        return  # the API sink's client is built with the sink
    try:
        import predwatch.storage.migrate  # noqa: F401  (Alembic, SQLAlchemy)
        import predwatch.storage.sql  # noqa: F401
    except Exception:  # noqa: BLE001 - reported by the delivery thread when it opens the store
        return
