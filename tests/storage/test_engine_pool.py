"""Connections are kept: a server's concurrent requests do not reopen the database each time."""

from __future__ import annotations

import time
from contextlib import ExitStack

import psycopg
import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import make_url

from predwatch.errors import StorageUnavailable
from predwatch.records import EvalPoint, Prediction, Run
from predwatch.storage import SQLStore, engine, open_store
from predwatch.testing import TcpProxy


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


def _point(step: int) -> tuple[EvalPoint, list[Prediction]]:
    rows = [Prediction(run_id="r", step=step, prompt_id=f"p{i}", sample_index=i, prompt="q",
                       prediction="a") for i in range(3)]
    return EvalPoint(run_id="r", step=step), rows


@pytest.mark.postgres
def test_a_write_right_after_a_postgresql_restart_is_made_again_on_a_new_connection(
    pg_proxy: tuple[TcpProxy, str], caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The recorder's direct writes: the write after a restart used the dead connection (not
    pinged: it was used under ``PG_PING_IDLE_S`` ago) and failed as unavailable, so the
    point waited in the spool for the next delivery round. Now it is written again once, on a
    new connection, and stored once. (A close that already reached the socket is found at
    checkout, see the read test below; this is the one that had not: one the server ends
    while the connection is checked out, or whose end is still on its way.)"""
    monkeypatch.setattr(engine, "_closed_by_server", lambda dbapi_conn: False)
    proxy, url = pg_proxy
    store = open_store(url)
    try:
        assert store.write_eval_point(*_point(1)) == 3
        proxy.cut()
        proxy.restore()
        with caplog.at_level("INFO", logger="predwatch.storage.sql"):
            assert store.write_eval_point(*_point(2)) == 3
        assert "writing again on a new connection" in caplog.text
        assert [p.sample_count for p in store.eval_points("r")] == [3, 3]
    finally:
        store.close()


@pytest.mark.postgres
def test_a_read_right_after_a_postgresql_restart_gets_a_new_connection(
    pg_proxy: tuple[TcpProxy, str],
) -> None:
    """A pooled connection used under ``PG_PING_IDLE_S`` ago was not pinged, so the first read
    after a restart failed on it (a 503 for a dashboard). A connection the server closed has
    something to read on its socket (its FATAL message, then the end): that one is pinged,
    found gone, and the pool reconnects before the read."""
    proxy, url = pg_proxy
    store = open_store(url)
    try:
        store.create_run(Run(id="r"))
        assert store.get_run("r").id == "r"
        proxy.cut()
        proxy.restore()
        time.sleep(0.05)  # the close reaches the client's socket (loopback: at once)
        assert store.get_run("r").id == "r"
    finally:
        store.close()


@pytest.mark.postgres
def test_a_database_still_down_is_reported_after_one_more_try(
    pg_proxy: tuple[TcpProxy, str], caplog: pytest.LogCaptureFixture,
) -> None:
    """Only a lost connection is tried again, and only once: a server that stays down still
    answers ``StorageUnavailable`` (the delivery thread spools and retries later)."""
    proxy, url = pg_proxy
    store = open_store(url)
    try:
        assert store.write_eval_point(*_point(1)) == 3
        proxy.cut()  # and not restored
        started = time.monotonic()
        with caplog.at_level("INFO", logger="predwatch.storage.sql"), \
                pytest.raises(StorageUnavailable):
            store.write_eval_point(*_point(2))
        assert time.monotonic() - started < 30
        assert caplog.text.count("writing again on a new connection") <= 1
        proxy.restore()  # back up: the point that was refused was not half-stored
        assert [p.step for p in store.eval_points("r")] == [1]
    finally:
        proxy.restore()
        store.close()
