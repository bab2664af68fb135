"""Connections are kept: a server's concurrent requests do not reopen the database each time."""

from __future__ import annotations

import time
from contextlib import ExitStack

import psycopg
import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import make_url

from predwatch.records import Run
from predwatch.storage import SQLStore, engine, open_store


def test_ten_concurrent_connections_are_reused_not_reopened(store: SQLStore) -> None:
    opened: list[object] = []
    event.listen(store.engine, "connect", lambda conn, record: opened.append(conn))
    store.engine.dispose()  # start from an empty pool
    for _ in range(3):  # three bursts of ten requests at once
        with ExitStack() as stack:
            for _ in range(10):
                stack.enter_context(store.engine.connect())
    # Before: a pool of 5, so each burst closed 5 on return and reopened them (20 opened).
    assert len(opened) == 10


@pytest.mark.postgres
def test_postgresql_pings_only_connections_that_sat_idle_and_replaces_a_dead_one(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``pool_pre_ping`` pinged at every checkout: a round trip more per request. Now only a
    connection idle over ``PG_PING_IDLE_S`` is pinged, and one the server closed meanwhile is
    replaced before the request uses it."""
    store = open_store(postgres_url)
    try:
        pings: list[object] = []
        dialect = store.engine.dialect
        real_ping = dialect.do_ping
        monkeypatch.setattr(dialect, "do_ping",
                            lambda conn: pings.append(conn) or real_ping(conn))
        store.ensure_run(Run(id="r"))
        for _ in range(5):  # back to back: no pings
            assert store.get_run("r") is not None
        assert pings == []

        monkeypatch.setattr(engine, "PG_PING_IDLE_S", 0.05)
        with store.engine.connect() as conn:  # the pooled connection's server process
            backend = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with psycopg.connect(make_url(postgres_url).set(drivername="postgresql")
                             .render_as_string(hide_password=False)) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [backend])
        time.sleep(0.2)
        assert store.get_run("r") is not None  # pinged, found dead, reconnected
        assert len(pings) == 1
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() != backend
    finally:
        store.close()


@pytest.mark.postgres
def test_the_token_lookup_runs_without_a_transaction_and_leaves_none_in_autocommit(
    postgres_url: str,
) -> None:
    """The token lookup of every ingest request runs in autocommit (one round trip, no BEGIN and
    ROLLBACK around it); the pooled connection goes back to transactions for every other use."""
    store = open_store(postgres_url)
    try:
        store.engine.dispose()
        modes: list[bool] = []
        event.listen(store.engine, "before_cursor_execute",
                     lambda conn, *_: modes.append(conn.connection.driver_connection.autocommit))
        assert store.run_for_token("unknown") is None
        assert modes == [True]
        with store.engine.connect() as conn:  # the same pooled connection
            assert conn.connection.driver_connection.autocommit is False
            conn.execute(text("SELECT 1"))
            status = conn.connection.driver_connection.info.transaction_status
            assert status == psycopg.pq.TransactionStatus.INTRANS
    finally:
        store.close()
