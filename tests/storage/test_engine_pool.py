"""Connections are kept: a server's concurrent requests do not reopen the database each time."""

from __future__ import annotations

from contextlib import ExitStack

from sqlalchemy import event

from predwatch.storage import SQLStore


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
