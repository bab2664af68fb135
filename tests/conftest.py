"""Shared fixtures: real SQLite files, a real PostgreSQL database per test, a real tiny model.

PostgreSQL: ``PREDWATCH_TEST_POSTGRES_URL`` (CI sets it; locally the default below is tried).
When no server answers, the PostgreSQL half of the storage/API suite is skipped with a message,
unless ``PREDWATCH_REQUIRE_POSTGRES=1`` (CI), where it fails instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from predwatch.testing import TcpProxy

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def _pg_admin_url() -> str:
    return os.environ.get("PREDWATCH_TEST_POSTGRES_URL") or DEFAULT_PG_URL


_pg_reachable: bool | None = None


def _postgres_reachable() -> bool:
    global _pg_reachable
    if _pg_reachable is None:
        try:
            import psycopg
            from sqlalchemy.engine import make_url

            u = make_url(_pg_admin_url())
            with psycopg.connect(
                host=u.host, port=u.port or 5432, user=u.username, dbname=u.database,
                password=u.password, connect_timeout=3,
            ):
                pass
            _pg_reachable = True
        except Exception:
            _pg_reachable = False
    return _pg_reachable


def _skip_or_fail_postgres() -> None:
    msg = (
        f"PostgreSQL not reachable at {_pg_admin_url()} "
        "(start it: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start)"
    )
    if os.environ.get("PREDWATCH_REQUIRE_POSTGRES") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


CHECKOUT = Path(__file__).resolve().parent.parent
_IN_CHECKOUT = (".predwatch", "predwatch.db", "spool")  # what a careless test would leave here


@pytest.fixture(autouse=True)
def _nothing_written_into_the_checkout(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Every test gets its own spool directory and database default in tmp, and fails if it
    leaves files in the checkout (a spool or database there would leak into later tests)."""
    home = tmp_path_factory.mktemp("predwatch-home")
    monkeypatch.setenv("PREDWATCH_SPOOL_DIR", str(home / "spool"))
    monkeypatch.setenv("PREDWATCH_DATABASE_URL", f"sqlite:///{home / 'predwatch.db'}")
    before = {name for name in _IN_CHECKOUT if (CHECKOUT / name).exists()}
    yield
    left = {name for name in _IN_CHECKOUT if (CHECKOUT / name).exists()} - before
    assert not left, f"the test wrote {sorted(left)} into the checkout {CHECKOUT}"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'predwatch.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    if not _postgres_reachable():
        _skip_or_fail_postgres()
    import psycopg
    from sqlalchemy.engine import make_url

    admin = make_url(_pg_admin_url())
    name = f"predwatch_t_{uuid.uuid4().hex[:12]}"
    kwargs = dict(host=admin.host, port=admin.port or 5432, user=admin.username,
                  dbname=admin.database, password=admin.password, autocommit=True)
    with psycopg.connect(**kwargs) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(**kwargs) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_proxy(postgres_url: str) -> Iterator[tuple[TcpProxy, str]]:
    """A TCP proxy in front of a fresh PostgreSQL database, and the URL through it (faults:
    ``cut``, ``stall``, ``restore``)."""
    from sqlalchemy.engine import make_url

    from predwatch.testing import TcpProxy

    parsed = make_url(postgres_url)
    with TcpProxy(f"{parsed.host}:{parsed.port or 5432}") as proxy:
        yield proxy, parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(
            hide_password=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Run a storage/API test once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(db_url: str):
    """An open store on an empty database (both backends)."""
    from predwatch.storage import open_store

    s = open_store(db_url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="session")
def tiny_model():
    """A tiny locally built causal LM and its tokenizer (random init; nothing downloaded)."""
    from predwatch.generation.tiny import build_tiny_model

    return build_tiny_model(seed=0)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """A git-ignored folder for screenshots and other test artifacts."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
