"""``Store.write_eval_points``: several points in one transaction (real SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import event, insert, select, update

from predwatch.errors import PayloadError
from predwatch.records import EvalPoint, Prediction, utcnow
from predwatch.storage import SQLStore, queries
from predwatch.storage.tables import predictions, runs


def point(run_id: str, step: int, n: int = 3, **extra: object
          ) -> tuple[EvalPoint, list[Prediction]]:
    rows = [Prediction(run_id=run_id, step=step, prompt_id=f"p{i}", sample_index=i,
                       prompt=f"q{i}", prediction="a") for i in range(n)]
    return EvalPoint(run_id=run_id, step=step, **extra), rows


def test_counts_come_back_per_item_in_order_and_a_resend_inserts_nothing(store: SQLStore) -> None:
    items = [point("b", 2, 4), point("a", 1, 2), point("b", 1, 3), point("b", 2, 4)]
    assert store.write_eval_points(items) == [4, 2, 3, 0]  # the repeated point: deduplicated
    assert store.write_eval_points(items) == [0, 0, 0, 0]
    assert [p.sample_count for p in store.eval_points("b")] == [3, 4]
    assert store.list_predictions("a").total == 2


def test_one_bad_point_stores_none_of_them(store: SQLStore) -> None:
    with pytest.raises(PayloadError, match="attempt"):
        store.write_eval_points([point("a", 1), point("c", 1, attempt=-1)])
    assert store.list_predictions("a").total == 0
    assert store.write_eval_points([]) == []


def statements(store: SQLStore) -> list[str]:
    """The SQL statements the store's engine runs from now on (each is one round trip),
    besides the transaction's own (SQLite's ``BEGIN IMMEDIATE``)."""
    seen: list[str] = []

    def _seen(conn: object, cursor: object, sql: str, *_: object) -> None:
        if not sql.startswith("BEGIN"):
            seen.append(sql)

    event.listen(store.engine, "before_cursor_execute", _seen)
    return seen


def test_a_new_point_of_a_known_run_is_five_statements(store: SQLStore) -> None:
    """Each statement is a round trip to PostgreSQL (and an execute through SQLAlchemy): a new
    point of a run that exists took nine before its commit, now five (the run's row read and
    locked, the point, its attempt, its rows in one executemany, its aggregates)."""
    store.write_eval_points([point("a", 1, writer="w")])
    seen = statements(store)
    assert store.write_eval_points([point("a", 2, writer="w")]) == [3]
    assert len(seen) == 5, seen
    assert [(p.step, p.sample_count) for p in store.eval_points("a")] == [(1, 3), (2, 3)]


def test_a_due_heartbeat_is_still_written(store: SQLStore) -> None:
    store.write_eval_points([point("a", 1)])
    old = utcnow() - timedelta(seconds=queries.HEARTBEAT_S + 5)
    with store.engine.begin() as conn:
        conn.execute(update(runs).where(runs.c.id == "a").values(last_seen_at=old))
    store.write_eval_points([point("a", 2)])
    seen = store.get_run("a").last_seen_at
    assert seen is not None and seen > old + timedelta(seconds=5)
    fresh = seen
    store.write_eval_points([point("a", 3)])  # seen recently: not rewritten at every point
    assert store.get_run("a").last_seen_at == fresh


def test_rows_stored_without_their_point_are_counted_in_its_aggregates(store: SQLStore) -> None:
    """A point created now over rows that something else stored first (an older writer, a
    copy): its aggregates are recomputed from every stored row, not taken from the request."""
    store.write_eval_points([point("a", 1, 2)])
    with store.engine.begin() as conn:  # step 2's first row, stored around the point
        row = conn.execute(select(predictions).where(
            predictions.c.run_id == "a", predictions.c.step == 1, predictions.c.sample_index == 0
        )).mappings().one()
        copy = {k: v for k, v in row.items() if k != "id"} | {"step": 2, "prompt_id": "other"}
        conn.execute(insert(predictions).values(copy))
    assert store.write_eval_points([point("a", 2, 2)]) == [2]
    assert [p.sample_count for p in store.eval_points("a")] == [2, 3]
