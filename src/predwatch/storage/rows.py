"""Records <-> rows: the one place a ``Prediction``, ``EvalPoint`` or ``Run`` meets a table.

Every ``Prediction`` field is a column of ``predictions`` with the same name (a test checks the
two lists stay equal), so a field added to the record fails loudly here instead of being dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from operator import itemgetter
from typing import Any

from pydantic_core import from_json
from sqlalchemy import JSON, Boolean, Text, cast, type_coerce
from sqlalchemy.engine import Dialect
from sqlalchemy.types import NullType

from predwatch.records import CORE_METRICS, EvalPoint, Prediction, Run, TrendPoint, without_nul
from predwatch.storage import tables
from predwatch.storage.columns import as_utc
from predwatch.storage.engine import json_dumps
from predwatch.storage.undecodable import load_json, tolerant

PREDICTION_FIELDS: tuple[str, ...] = tuple(Prediction.model_fields)
ATTEMPT_INDEX = PREDICTION_FIELDS.index("attempt")  # where an encoded row holds its attempt
# Columns of ``predictions`` that are not record fields: the sequence and derived values.
DERIVED_COLUMNS = ("id", "failed_validators")
# The columns an insert supplies, in parameter order.
INSERT_COLUMNS: tuple[str, ...] = PREDICTION_FIELDS + ("failed_validators",)

_columns = set(tables.predictions.c.keys())
if _columns != set(PREDICTION_FIELDS) | set(DERIVED_COLUMNS):  # pragma: no cover - developer error
    raise RuntimeError(
        "predictions columns and Prediction fields differ: "
        f"{sorted(_columns ^ (set(PREDICTION_FIELDS) | set(DERIVED_COLUMNS)))}"
    )
_JSON_FIELDS = tuple(
    i for i, name in enumerate(PREDICTION_FIELDS)
    if isinstance(tables.predictions.c[name].type, JSON)
)

_JSON_FIELD_SET = frozenset(_JSON_FIELDS)

_BOOL_FIELDS = tuple(
    i for i, name in enumerate(PREDICTION_FIELDS)
    if isinstance(tables.predictions.c[name].type, Boolean)
)


def failed_validators(p: Prediction) -> str | None:
    """``|kind|name|...`` of every validator that failed, for ``LIKE '%|kind|%'`` filtering."""
    if not p.validation_errors:
        # The common case (nothing failed) without building a set.
        for r in p.validation_results:
            if not r.passed or r.error:
                break
        else:
            return None
    names: set[str] = set()
    for r in p.validation_results:
        if not r.passed or r.error:
            names.add(r.validator)
            if r.name:
                names.add(r.name)
    names.update(issue.validator for issue in p.validation_errors)
    if not names:
        return None
    return "|" + "|".join(sorted(names)) + "|"


# Empty JSON containers (the default of most JSON fields) as constants: no serialiser call.
_EMPTY_JSON: dict[type, str] = {list: "[]", dict: "{}"}


class PredictionEncoder:
    """``Prediction`` -> the parameter tuple of a driver-level insert (``INSERT_COLUMNS`` order).

    This is the ingest hot path, so it avoids ``model_dump``: field values are read straight from
    the model's ``__dict__``, JSON columns are serialised by pydantic-core (NaN/inf become null,
    which PostgreSQL's jsonb requires; unserialisable validator details become strings; empty
    lists and maps are constants) and the timestamp goes through the column type's own bind
    processor for the dialect (on SQLite, UTC values take a shortcut to the same text; a test
    keeps the two equal). On SQLite booleans are bound as the 1/0 they are stored as (what
    SQLAlchemy binds too): Python's ``sqlite3`` binds exact ``int``/``float``/``str`` directly but
    sends every other type through its adapter lookup, which costs about a microsecond each.
    """

    def __init__(self, dialect: Dialect) -> None:
        self._values = itemgetter(*PREDICTION_FIELDS)
        self._created_at = PREDICTION_FIELDS.index("created_at")
        ts_type = tables.predictions.c.created_at.type.dialect_impl(dialect)
        bind = ts_type.bind_processor(dialect)
        self._bind_ts: Callable[[Any], Any] = bind if bind is not None else (lambda v: v)
        self._sqlite = dialect.name == "sqlite"
        self._bools = _BOOL_FIELDS if self._sqlite else ()
        # PostgreSQL refuses NUL in text and jsonb: stripped here, as the ingest API does.
        self._strip_nul = dialect.name == "postgresql"

    def __call__(self, p: Prediction) -> tuple[Any, ...]:
        values = list(self._values(p.__dict__))
        empty = _EMPTY_JSON
        for i in _JSON_FIELDS:
            v = values[i]
            if v is not None:
                values[i] = (empty.get(type(v)) if not v else None) or json_dumps(v)
        for i in self._bools:
            v = values[i]
            if v is not None:
                values[i] = 1 if v else 0
        at = self._created_at
        ts = values[at]
        if self._sqlite and type(ts) is datetime and ts.tzinfo is timezone.utc:
            # SQLAlchemy's SQLite text: "YYYY-MM-DD HH:MM:SS.ffffff", UTC, no offset.
            values[at] = ts.isoformat(" ", "microseconds")[:26]
        else:
            values[at] = self._bind_ts(ts)
        values.append(failed_validators(p))
        if self._strip_nul:
            _strip_nul(values)
        return tuple(values)


def _strip_nul(values: list[Any]) -> None:
    """Remove NUL characters from text and JSON-text parameters (in place)."""
    for i, v in enumerate(values):
        if type(v) is str and "\x00" in v:
            values[i] = v.replace("\x00", "")
        elif i in _JSON_FIELD_SET and type(v) is str and "\\u0000" in v:
            values[i] = json_dumps(without_nul(from_json(v)))


@tolerant(Prediction)  # an unreadable row becomes a marked placeholder
def row_to_prediction(row: Mapping[Any, Any]) -> Prediction:
    """A ``Prediction`` from a ``predictions`` row (extra columns are ignored)."""
    return Prediction.model_validate({name: row[name] for name in PREDICTION_FIELDS})


PREDICTION_COLUMNS = tuple(
    cast(tables.predictions.c[name], Text) if i in _JSON_FIELD_SET
    else type_coerce(tables.predictions.c[name], NullType()) if name == "created_at"
    else tables.predictions.c[name]
    for i, name in enumerate(PREDICTION_FIELDS)
)
"""What ``select(*PREDICTION_COLUMNS)`` reads, for ``predictions_from``: the record's fields in
``PREDICTION_FIELDS`` order, with JSON as text and the timestamp as the driver returns it, so
``predictions_from`` decodes them itself (see there)."""
_CREATED_AT = PREDICTION_FIELDS.index("created_at")


@tolerant(Prediction)
def _fields_to_prediction(fields: Mapping[Any, Any]) -> Prediction:
    return Prediction.model_validate(fields)


def predictions_from(result: Iterable[Sequence[Any]]) -> list[Prediction]:
    """``Prediction``s from rows of ``select(*PREDICTION_COLUMNS, ...)``: the bulk read path
    (a prompt's timeline, a point's answers). An unreadable row becomes a marked placeholder,
    as with ``row_to_prediction``.

    Plain tuples zipped with the field names skip the result's per-row mapping, and the JSON
    columns (read as text) and the timestamp are decoded here in one loop rather than by the
    column types' result processors: on SQLite those are three Python calls deep per JSON
    value and parse the timestamp with a regular expression; on PostgreSQL psycopg's jsonb
    loader is a Python method per value. Measured on a 1,000-answer timeline (1M-row bench
    store, medians of 3 paired runs of 60): p50 33.8 -> 30.4 ms on SQLite, 51.8 -> 41.8 ms on
    PostgreSQL; validation (~11 ms) and decoding (~6 ms) are most of what remains.
    """
    fields = PREDICTION_FIELDS
    json_fields = _JSON_FIELDS
    at = _CREATED_AT
    out = []
    for row in result:
        values = list(row)
        for i in json_fields:
            v = values[i]
            if v is not None:
                values[i] = load_json(v)
        values[at] = _utc(values[at])
        out.append(_fields_to_prediction(dict(zip(fields, values, strict=True))))
    return out


def _utc(value: Any) -> datetime | None:
    """A stored timestamp as an aware UTC ``datetime``, as ``UTCDateTime`` reads it: SQLite's
    text (UTC without an offset) or the driver's ``datetime``; None for anything else (SQLite
    stores any text), which makes the row a marked placeholder."""
    if type(value) is str:
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    return as_utc(value) if isinstance(value, datetime) else None


def eval_point_to_row(point: EvalPoint) -> dict[str, Any]:
    """The writer-supplied columns of an evaluation point (aggregates are computed by the store)."""
    return {
        "run_id": point.run_id,
        "step": point.step,
        "epoch": point.epoch,
        "trigger": point.trigger,
        "generation_ms": point.generation_ms,
        "card": point.card,
        "created_at": point.created_at,
    }


@tolerant(EvalPoint)  # an unreadable row becomes a marked placeholder
def row_to_eval_point(row: Mapping[Any, Any]) -> EvalPoint:
    """An ``EvalPoint`` whose counts are those of the stored predictions."""
    return EvalPoint(
        run_id=row["run_id"],
        step=row["step"],
        epoch=row["epoch"],
        trigger=row["trigger"],
        sample_count=row["sample_count"],
        failed_count=row["failed_count"],
        generation_ms=row["generation_ms"],
        card=row["card"] or {},
        created_at=row["created_at"],
        attempt=row["attempt"] or 0,
    )


def row_to_attempt(row: Mapping[Any, Any]) -> EvalPoint:
    """One attempt of a point (a ``point_attempts`` row with its row counts)."""
    return EvalPoint(
        run_id=row["run_id"],
        step=row["step"],
        epoch=row["epoch"],
        trigger=row["trigger"],
        sample_count=row["sample_count"] or 0,
        failed_count=row["failed_count"] or 0,
        generation_ms=row["generation_ms"],
        card=row["card"] or {},
        created_at=row["created_at"],
        attempt=row["attempt"],
        writer=row["writer"],
    )


TREND_COLUMNS = (
    "epoch", "step", "sample_count", "failed_count", "validated_count", "validation_pass_count",
    "avg_exact_match", "avg_char_error_rate", "avg_length_ratio", "avg_word_overlap",
    "min_char_error_rate", "max_char_error_rate", "avg_latency_ms", "avg_completion_tokens",
    "metric_avgs",
)


def row_to_trend_point(row: Mapping[Any, Any]) -> TrendPoint:
    """The trends entry of one evaluation point, from its stored aggregates (``TREND_COLUMNS``)."""
    validated = row["validated_count"]
    metric_avgs = row["metric_avgs"] or {}
    columns = {name: row[f"avg_{name}"] for name in CORE_METRICS}
    return TrendPoint(
        epoch=row["epoch"],
        step=row["step"],
        sample_count=row["sample_count"],
        avg_exact_match=row["avg_exact_match"],
        avg_char_error_rate=row["avg_char_error_rate"],
        avg_length_ratio=row["avg_length_ratio"],
        avg_word_overlap=row["avg_word_overlap"],
        min_char_error_rate=row["min_char_error_rate"],
        max_char_error_rate=row["max_char_error_rate"],
        validation_pass_rate=(row["validation_pass_count"] / validated) if validated else None,
        avg_token_f1=metric_avgs.get("token_f1"),
        avg_rouge_l=metric_avgs.get("rouge_l"),
        failed_count=row["failed_count"],
        avg_latency_ms=row["avg_latency_ms"],
        avg_completion_tokens=row["avg_completion_tokens"],
        averages={**metric_avgs, **columns},
    )


def run_to_row(run: Run) -> dict[str, Any]:
    return run.model_dump()


@tolerant(Run)  # an unreadable row becomes a marked placeholder
def row_to_run(row: Mapping[Any, Any]) -> Run:
    return Run.model_validate({name: row[name] for name in Run.model_fields})
