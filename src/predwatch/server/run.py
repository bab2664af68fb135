"""``serve()``: run the server with uvicorn, one process or several workers on one database.

With ``workers > 1`` uvicorn starts each worker from the import string
``predwatch.server.run:app_from_env`` (a factory), so the settings travel through
``PREDWATCH_*`` environment variables (``Settings.to_env``) and every worker opens its own store.
Live streams poll the database, so they see rows written through any worker. Several workers
want PostgreSQL; SQLite works (one writer at a time) but is warned about.
"""

from __future__ import annotations

import gc
import logging
import os
from typing import Any

from fastapi import FastAPI

from predwatch.config import Settings, is_loopback
from predwatch.errors import ConfigError
from predwatch.storage import open_store
from predwatch.storage.base import Store

log = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN_S = 5  # open live streams are cut after this on shutdown
# The server process's collector thresholds (youngest, middle, oldest); Python's are (700, 10,
# 10). See ``freeze_start_up_heap``.
GC_THRESHOLDS = (50_000, 20, 100)


def app_from_env() -> FastAPI:
    """The uvicorn factory of worker processes: settings and database from ``PREDWATCH_*``."""
    settings = Settings.from_env()
    return _frozen_app(open_store(settings.database_url), settings)


def _frozen_app(store: Store, settings: Settings) -> FastAPI:
    """The app over ``store``, built, with the process's start-up heap frozen after it."""
    from predwatch.server.app import create_app

    app = create_app(store, settings)
    freeze_start_up_heap()
    return app


def freeze_start_up_heap() -> None:
    """Exempt what the server holds for its whole life from the cyclic garbage collector, and
    collect the young generation less often.

    The modules, routes, OpenAPI schema and store built at start-up (~80k objects) never become
    garbage, yet every full collection walks them. A request that builds many objects (a
    1,000-answer timeline makes ~10k) triggers a full pass every few requests, and walking the
    start-up heap made those requests 2-4x slower than the rest (timeline p95 70-97 ms against
    p50 30-36 ms; frozen: p95 40-45 ms). ``gc.freeze`` after a collection moves the live
    start-up objects out of the collector's generations (they are still freed by reference
    counting); called once per server process, never in the library.

    Such a request also allocates past the youngest generation's threshold (700 objects) a
    dozen times, and each pass walks the rows built so far: ``GC_THRESHOLDS`` collects it
    every 50,000 allocations instead (the cyclic garbage waiting meanwhile is a few MB; what
    was measured is in docs/server.md).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    log.debug("predwatch: %d start-up objects exempted from garbage collection",
              gc.get_freeze_count())


def check_bind(settings: Settings, store: Store) -> None:
    """Refuse to serve where anyone could read without a key.

    Without authentication the server binds only to loopback; with authentication at least one
    API key must exist (or no one could read). ``ConfigError`` says how to fix either.
    """
    create = f"predwatch keys create --user NAME --db {store.url}"
    if not settings.auth_required:
        if not is_loopback(settings.host):
            raise ConfigError(
                f"refusing to serve on {settings.host} without authentication: anyone who can "
                f"reach it could read every run. Bind to 127.0.0.1, or turn auth on (--auth on, "
                f"the default off loopback) after creating an API key: {create}",
                detail=[{"field": "host", "reason": "not loopback while auth is off"}],
            )
        return
    from predwatch.server.auth import has_api_keys

    if not has_api_keys(store):
        raise ConfigError(
            f"refusing to serve on {settings.host} with authentication but no API key: no one "
            f"could read anything. Create one first: {create}",
            detail=[{"field": "auth", "reason": "no API key exists"}],
        )


def serve(
    database_url: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    settings: Settings | None = None,
    *,
    log_level: str = "info",
) -> None:
    """Serve the API and UI over ``database_url`` until interrupted.

    Args:
        database_url: SQLite file URL or ``postgresql+psycopg://...``.
        host, port: where to listen (loopback by default).
        workers: uvicorn worker processes (use PostgreSQL for more than one).
        settings: limits and auth (default ``Settings.from_env()``); the arguments above win.

    Raises:
        ConfigError: the bind is refused (see ``check_bind``).
        SchemaOutdated: the database needs ``predwatch db upgrade``.
    """
    import uvicorn

    base = settings or Settings.from_env()
    settings = base.model_copy(update={"database_url": database_url, "host": host, "port": port})
    store = open_store(database_url)
    try:
        check_bind(settings, store)
        if workers > 1 and store.dialect == "sqlite":
            log.warning("predwatch: %d workers on SQLite share one writer; use PostgreSQL to "
                        "scale out", workers)
        common: dict[str, Any] = {"host": host, "port": port, "log_level": log_level,
                                  "access_log": False,
                                  "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S}
        if workers <= 1:
            uvicorn.run(_frozen_app(store, settings), **common)
            return
    finally:
        store.close()
    # Workers are separate processes: hand them the settings through the environment.
    os.environ.update(settings.to_env())
    uvicorn.run("predwatch.server.run:app_from_env", factory=True, workers=workers, **common)
