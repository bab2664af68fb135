"""Engines for the two supported databases, configured once (used by the store and migrations)."""

from __future__ import annotations

import select
import sqlite3
import time
from pathlib import Path
from typing import Any

from pydantic_core import to_json
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    DBAPIError,
    IntegrityError,
    InvalidatePoolError,
)
from sqlalchemy.pool import Pool, StaticPool

from predwatch.errors import ConfigError, MissingDependency, PayloadError
from predwatch.storage.checkpoint import FALLBACK_PAGES
from predwatch.storage.undecodable import load_json  # from_json, or a marked placeholder

# Execution option naming a write transaction: SQLite then takes the write lock at BEGIN
# (BEGIN IMMEDIATE) instead of upgrading a read lock mid-transaction, which fails with
# SQLITE_BUSY without waiting when another connection wrote in between.
WRITE = "predwatch_write"
SQLITE_BUSY_TIMEOUT_S = 30.0
SQLITE_POOL_SIZE = 20  # connections a file database keeps open (each caches pages it read)
# PostgreSQL connections a process keeps open (up to as many again while busy): 4 server workers
# stay within PostgreSQL's default max_connections of 100. Beyond the pool, a connection is
# closed on return and a new one (a new backend process) opened for the next request.
PG_POOL_SIZE = 10
PG_CONNECT_TIMEOUT_S = 10  # a PostgreSQL host that drops packets fails a connect in bounded time
# A pooled PostgreSQL connection idle longer than this is pinged before use (a server restart
# or an idle timeout may have closed it). One used more recently is not: a ping is a round trip,
# and under load it was one of ~16 per ingest request (see ``_ping_when_idle``).
PG_PING_IDLE_S = 1.0


def json_dumps(value: Any) -> str:
    """JSON for JSON columns, as the ingest encoder writes it: pydantic-core (several times faster
    than ``json``), NaN/inf as null (PostgreSQL's jsonb has neither), unknown objects as str."""
    return to_json(value, inf_nan_mode="null", fallback=str).decode()


def normalize_url(url: str) -> URL:
    """Parse a database URL; plain ``postgresql://`` (and ``postgres://``) use psycopg 3."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(f"invalid database URL {url!r}: {exc}") from None
    # Plain postgresql:// would pick psycopg2; predwatch ships with psycopg 3.
    if parsed.get_backend_name() in ("postgres", "postgresql") and (
        parsed.get_backend_name() == "postgres" or "+" not in parsed.drivername
    ):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"unsupported database {parsed.get_backend_name()!r}: use sqlite:///path.db "
            "or postgresql+psycopg://user@host/db"
        )
    return parsed


def display_url(url: URL) -> str:
    """The URL as shown to people (password masked)."""
    return url.render_as_string(hide_password=True)


def make_engine(
    url: str | URL, *, foreign_keys: bool = True, poolclass: type[Pool] | None = None,
    background_checkpoints: bool = False,
) -> Engine:
    """An engine for ``url`` with predwatch's connection settings.

    SQLite: WAL journal (readers never block the writer), ``synchronous=NORMAL`` (durable at
    checkpoints; a power cut can lose the last transactions, never corrupt), foreign keys on, a
    busy timeout, 16 KiB pages for new files (a prediction row is ~1.5 KB and would otherwise
    spill into overflow pages), and driver-level autocommit so that SQLAlchemy's transactions
    are real ``BEGIN``/``COMMIT`` pairs, and a pool of ``SQLITE_POOL_SIZE`` connections.
    PostgreSQL: psycopg 3, a pool of ``PG_POOL_SIZE`` and a ping before reusing a connection
    idle over ``PG_PING_IDLE_S`` (``_ping_when_idle``). Both:
    JSON columns (de)serialised by pydantic-core, which dominates reading rows otherwise.
    ``poolclass`` overrides the pool (migrations use a one-shot ``NullPool``).
    ``background_checkpoints``: the caller runs a ``WalCheckpointer`` on a SQLite file, so the
    connections' own automatic checkpoint is only a fallback (see ``storage/checkpoint.py``).
    """
    u = normalize_url(url) if isinstance(url, str) else url
    kwargs: dict[str, Any] = {"json_serializer": json_dumps, "json_deserializer": load_json}
    if poolclass is not None:
        kwargs["poolclass"] = poolclass
    if u.get_backend_name() == "postgresql":
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise MissingDependency("psycopg", "postgres") from None
        kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
        if poolclass is None:
            kwargs["pool_size"] = PG_POOL_SIZE
        engine = create_engine(u, **kwargs)
        _ping_when_idle(engine)
        return engine
    return _sqlite_engine(u, foreign_keys=foreign_keys, kwargs=kwargs,
                          background_checkpoints=background_checkpoints)


def _ping_when_idle(engine: Engine) -> None:
    """SQLAlchemy's ``pool_pre_ping``, for connections that sat idle in the pool or that the
    server has closed.

    ``pool_pre_ping`` pings at every checkout: one more round trip per request, which on this
    machine's loopback costs ~0.1 ms of client CPU (mostly the kernel's) and as much again in
    the PostgreSQL backend. A connection checked in less than ``PG_PING_IDLE_S`` ago is pinged
    only when its socket has something to read (``_closed_by_server``: one poll, no round
    trip): nothing arrives on an idle connection unless the server ends it, as a restart does.
    One the server closed while it was checked out fails its statement as a disconnect and
    SQLAlchemy invalidates the pool: a write is then made again once on a new connection
    (``SQLStore.write_eval_points``, ``is_connection_lost``), a read fails
    (``StorageUnavailable``) and the caller's retry gets fresh connections. A failed ping
    invalidates the pool and reconnects, as ``pool_pre_ping`` does.
    """
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        if record is not None:
            record.info["predwatch_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("predwatch_idle_since")
        if since is None:  # just opened
            return
        if time.monotonic() - since > PG_PING_IDLE_S or _closed_by_server(dbapi_conn):
            try:
                dialect.do_ping(dbapi_conn)
            except dialect.loaded_dbapi.Error as exc:  # closed by the server: reconnect
                raise InvalidatePoolError(f"connection idle in the pool is gone: {exc}") from exc


def _closed_by_server(dbapi_conn: Any) -> bool:
    """Whether an idle connection's socket has something to read (or no socket): between
    statements the server sends nothing unless it ends the connection (a restart or an admin's
    ``pg_terminate_backend`` sends its FATAL message and closes), so the caller pings it."""
    try:
        fd = dbapi_conn.fileno()
    except Exception:  # closed already
        return True
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([fd], [], [], 0)[0])  # pragma: no cover - Windows


def _bind_none_directly() -> None:
    """Give ``None`` an (identity) ``sqlite3`` adapter unless the process already has one.

    CPython's ``sqlite3`` (3.11 and older) looks every parameter that is not an exact
    int/float/str up in its adapter registry; a miss then asks the protocol type for
    ``__adapt__``, which builds and discards a formatted ``AttributeError``: about 1 µs per
    NULL parameter, the largest single cost of an insert of mostly-NULL optional columns.
    Found in the registry, NULL is bound as before, without the failed lookup.
    """
    key = (type(None), sqlite3.PrepareProtocol)
    if key not in sqlite3.adapters:
        sqlite3.register_adapter(type(None), _null)


def _null(value: None) -> None:
    return value


def _sqlite_engine(u: URL, *, foreign_keys: bool, kwargs: dict[str, Any],
                   background_checkpoints: bool) -> Engine:
    database = u.database or ""
    if database in ("", ":memory:"):
        # One shared connection, or every connection would see its own empty database.
        kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        if not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # Connections stay open: a server's concurrent requests (ingest token lookups, pages,
        # live streams) would otherwise pass the default 5 and every one beyond it would be
        # closed on return, so the next one reopens the file and starts with a cold page cache
        # (measured: 167 reconnects in one bench/load.py run, 11 with this pool).
        if "poolclass" not in kwargs:
            kwargs["pool_size"] = SQLITE_POOL_SIZE
    _bind_none_directly()
    engine = create_engine(u, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see _on_begin)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cur.execute("PRAGMA page_size = 16384")  # only takes effect on a new, empty file
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
        cur.execute("PRAGMA cache_size = -65536")  # 64 MiB: keeps index pages hot during ingest
        cur.execute("PRAGMA temp_store = MEMORY")
        if background_checkpoints:
            # SQLStore checkpoints on a thread of its own (storage/checkpoint.py); SQLite's
            # automatic one inside a commit stays as the bound if that thread lags.
            cur.execute(f"PRAGMA wal_autocheckpoint = {FALLBACK_PAGES}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get(WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def sqlite_file(url: str | URL) -> Path | None:
    """The file behind a SQLite URL, made absolute (None for other databases, memory, URIs)."""
    u = normalize_url(url) if isinstance(url, str) else url
    database = u.database or ""
    if u.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    if database.startswith("file:"):
        return None
    return Path(database).expanduser().resolve()


def is_permanent_error(exc: BaseException) -> bool:
    """Whether a store call failing with ``exc`` fails the same way every time.

    Refused rows (a bad payload, a value the database rejects) are permanent; an unreachable,
    locked or restarting database (``OperationalError``, ``InterfaceError``) is worth retrying,
    and so is a schema that is not there yet.
    """
    return isinstance(exc, (PayloadError, DataError, IntegrityError, ValueError, TypeError))


def is_connection_lost(exc: BaseException) -> bool:
    """Whether a store call failed with ``exc`` because its database connection was found dead
    (a restarted or failed-over server): SQLAlchemy has then discarded that connection and the
    others of its pool, so the same call made again gets a new connection."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return True
        seen = seen.__cause__
    return False
