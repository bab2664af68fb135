"""Queries of the original system's routes (``/api/training/*``): rows with their sequence
numbers, integer-epoch filters, and per-epoch sums for exact averages.

Used by ``SQLStore.original_predictions`` and ``SQLStore.epoch_sums``; every filter, order and
cursor is the one ``list_predictions`` uses (``queries``), so the two lists never disagree.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.engine import Connection

from predwatch.records import Prediction
from predwatch.storage import queries, rows
from predwatch.storage.base import EpochSums, Page
from predwatch.storage.tables import eval_points, predictions

P, E = predictions.c, eval_points.c
_SUMMED = ("exact_match", "char_error_rate", "length_ratio", "word_overlap", "latency_ms",
           "completion_tokens")


def integer_epoch_steps(conn: Connection, run_id: str, epoch: int, step: int | None
                        ) -> list[int]:
    """Steps of the points whose epoch is in ``[epoch, epoch + 1)`` (0: also no epoch)."""
    in_range = and_(E.epoch >= epoch, E.epoch < epoch + 1)
    q = select(E.step).where(E.run_id == run_id,
                             or_(in_range, E.epoch.is_(None)) if epoch == 0 else in_range)
    if step is not None:
        q = q.where(E.step == step)
    return list(conn.scalars(q.order_by(E.step)))


def page(conn: Connection, run_id: str, *, epoch: int | None, step: int | None,
         failed_only: bool, validator: str | None, search: str | None, sort: str | None,
         limit: int, offset: int, cursor: str | None) -> Page[tuple[int, Prediction]]:
    """One page of ``(sequence, prediction)``; see ``Store.original_predictions``."""
    f = queries.PredictionFilter(run_id, None, step, failed_only, validator, search)
    steps = (queries.point_steps(conn, f) if epoch is None
             else integer_epoch_steps(conn, run_id, epoch, step))
    shown, total, next_cursor = queries.prediction_page(
        conn, f, steps, sort=sort, limit=limit, offset=offset, cursor=cursor)
    items = [(r._mapping["id"], rows.row_to_prediction(r._mapping)) for r in shown]
    return Page(items=items, total=total, next_cursor=next_cursor)


def _count_if(cond: Any) -> Any:
    return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)


def epoch_sums(conn: Connection, run_id: str) -> list[EpochSums]:
    """Sums and non-null counts of the scores per exact epoch (one scan of the run's rows)."""
    columns = [P.epoch, func.count().label("rows"), func.max(P.step).label("last_step"),
               func.min(P.char_error_rate).label("min_cer"),
               func.max(P.char_error_rate).label("max_cer"),
               func.count(P.validation_pass).label("validated"),
               _count_if(P.validation_pass.is_(True)).label("passed"),
               _count_if(P.error.is_not(None)).label("failed")]
    for name in _SUMMED:
        columns += [func.sum(P[name]).label(f"sum_{name}"), func.count(P[name]).label(f"n_{name}")]
    q = select(*columns).where(P.run_id == run_id).group_by(P.epoch).order_by(P.epoch)
    found = []
    for r in conn.execute(q).mappings():
        sums = {name: (float(r[f"sum_{name}"] or 0.0), int(r[f"n_{name}"])) for name in _SUMMED
                if r[f"n_{name}"]}
        found.append(EpochSums(
            epoch=r["epoch"], rows=int(r["rows"]), last_step=int(r["last_step"]), sums=sums,
            min_cer=_float(r["min_cer"]), max_cer=_float(r["max_cer"]),
            validated=int(r["validated"]), passed=int(r["passed"]), failed=int(r["failed"]),
        ))
    return found


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
