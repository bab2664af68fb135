"""Schema versions: Alembic migrations shipped in the package, configured in code (no alembic.ini).

``ensure_schema`` is what ``open_store`` runs: an empty database is migrated to head; a database
at an older revision is refused with the exact upgrade command (upgrading is a deliberate act:
``predwatch db upgrade --db URL``); a database newer than this predwatch is refused too.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Engine, inspect
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from predwatch.errors import SchemaOutdated
from predwatch.storage.engine import WRITE, display_url, make_engine, normalize_url, sqlite_file
from predwatch.storage.tables import metadata

try:
    import fcntl
except ImportError:  # Windows: concurrent first opens are not serialised there
    fcntl = None  # type: ignore[assignment]

SCHEMA_LOCK_KEY = 0x7072_6564_7761  # "predwa": the advisory lock id of schema creation
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str | URL | None = None, connection: Connection | None = None) -> Config:
    """An Alembic ``Config`` pointing at the packaged migrations."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        u = normalize_url(url) if isinstance(url, str) else url
        # ConfigParser interpolation: a literal "%" (URL-encoded passwords) must be doubled.
        rendered = u.render_as_string(hide_password=False)
        cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest schema revision this predwatch knows."""
    return _head_of(MIGRATIONS_DIR)


@functools.lru_cache(maxsize=4)
def _head_of(migrations: Path) -> str:
    # Cached: reading the script directory imports every migration (every open_store asks).
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations))
    rev = ScriptDirectory.from_config(cfg).get_current_head()
    assert rev is not None, "predwatch ships at least one migration"
    return rev


def current(url: str) -> str | None:
    """The database's schema revision, or None when it has none (empty or not predwatch's)."""
    engine = make_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return _current(conn)
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision`` (``predwatch db upgrade``)."""
    command.upgrade(alembic_config(url), revision)


def upgrade_command(url: str | URL) -> str:
    """The command that upgrades the database at ``url``."""
    u = normalize_url(url) if isinstance(url, str) else url
    return f"predwatch db upgrade --db {display_url(u)}"


def ensure_schema(engine: Engine, *, create: bool = True) -> None:
    """Make sure the database behind ``engine`` is at head.

    An empty database is created at head (by running the migrations, so every new database goes
    through the same path as an upgraded one) unless ``create`` is False.

    Raises:
        SchemaOutdated: the database is at an older revision (the message gives the upgrade
            command), at a revision this predwatch does not know (upgrade predwatch), holds
            predwatch tables without a revision, or is empty and ``create`` is False.
    """
    target = head()
    rev = _revision(engine)
    if rev is None:
        # Two jobs opening one new database at once (a sweep started in one directory) would
        # both create the schema; one would fail ("database is locked"), or see the other's
        # half-made tables. The second waits for the first here, then finds the schema made.
        with schema_lock(engine):
            rev = _revision(engine)
            if rev is None:
                with engine.connect() as conn:
                    _create_at_head(engine, conn, create=create)
                return
    if rev != target:
        _refuse(engine.url, rev, target)


def _revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        rev = _current(conn)
        conn.rollback()
    return rev


@contextlib.contextmanager
def schema_lock(engine: Engine) -> Iterator[None]:
    """Hold the lock that serialises schema creation of one database across processes.

    SQLite: an exclusive ``flock`` on ``<database>-schema.lock`` beside the file (not on the
    database file itself: closing any descriptor of it would drop SQLite's own POSIX locks).
    PostgreSQL: a session advisory lock. Other cases (memory, URIs) need none.
    """
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({SCHEMA_LOCK_KEY})")
            try:
                yield
            finally:
                conn.exec_driver_sql(f"SELECT pg_advisory_unlock({SCHEMA_LOCK_KEY})")
                conn.commit()
        return
    path = sqlite_file(engine.url)
    if path is None or fcntl is None:
        yield
        return
    lock = path.with_name(path.name + "-schema.lock")
    with open(lock, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _create_at_head(engine: Engine, conn: Connection, *, create: bool) -> None:
    ours = set(metadata.tables) & set(inspect(conn).get_table_names())
    conn.rollback()
    if ours:
        raise SchemaOutdated(
            f"database {display_url(engine.url)} has predwatch tables ({', '.join(sorted(ours))}) "
            "but no schema revision; it was not created by this predwatch. Use an empty database."
        )
    if not create:
        raise SchemaOutdated(
            f"database {display_url(engine.url)} has no predwatch schema; create it with: "
            f"{upgrade_command(engine.url)}"
        )
    try:
        # One transaction around every migration (Alembic would commit each one on its own on
        # SQLite): a process killed while creating the schema, e.g. a training job that ends
        # while its delivery thread opens the store, leaves an empty database, never one at a
        # partial revision that would then be refused.
        with conn.execution_options(**{WRITE: True}).begin():
            command.upgrade(alembic_config(connection=conn), "head")
    except (DBAPIError, CommandError):
        # Another process may have created the schema at the same moment; that is fine.
        conn.rollback()
        if _current(conn) != head():
            raise
        conn.rollback()


def _refuse(url: URL, rev: str, target: str) -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    try:
        known = scripts.get_revision(rev) is not None
    except CommandError:
        known = False
    if not known:
        raise SchemaOutdated(
            f"database {display_url(url)} is at schema revision {rev}, newer than this predwatch "
            f"knows (head {target}); upgrade predwatch: pip install --upgrade predwatch",
            detail={"current": rev, "head": target},
        )
    raise SchemaOutdated(
        f"database {display_url(url)} is at schema revision {rev}; this predwatch needs {target}. "
        f"Upgrade it with: {upgrade_command(url)}",
        detail={"current": rev, "head": target, "command": upgrade_command(url)},
    )
