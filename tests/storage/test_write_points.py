"""``Store.write_eval_points``: several points in one transaction (real SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from predwatch.errors import PayloadError
from predwatch.records import EvalPoint, Prediction
from predwatch.storage import SQLStore


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
