"""Records <-> rows: the one place a ``Prediction``, ``EvalPoint`` or ``Run`` meets a table.

Every ``Prediction`` field is a column of ``predictions`` with the same name (a test checks the
two lists stay equal), so a field added to the record fails loudly here instead of being dropped.
"""

from __future__ import annotations

from typing import Any, Mapping

from predwatch.records import EvalPoint, Prediction, Run, TrendPoint
from predwatch.storage import tables

PREDICTION_FIELDS: tuple[str, ...] = tuple(Prediction.model_fields)
# Columns that hold a list of records; dumped to plain dicts for JSON.
_RECORD_LISTS = ("validation_errors", "validation_results")
# Columns of ``predictions`` that are derived at write time and are not record fields.
DERIVED_COLUMNS = ("id", "failed_validators")

_missing = set(PREDICTION_FIELDS) - set(tables.predictions.c.keys())
if _missing:  # pragma: no cover - a developer error, caught at import by every test
    raise RuntimeError(f"predictions table lacks columns for Prediction fields: {sorted(_missing)}")


def failed_validators(p: Prediction) -> str | None:
    """``|kind|name|...`` of every validator that failed, for ``LIKE '%|kind|%'`` filtering."""
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


def prediction_to_row(p: Prediction) -> dict[str, Any]:
    """The column values of one prediction (JSON columns as plain Python objects)."""
    # Attribute access instead of model_dump(): this runs once per ingested row and dominates
    # the Python side of ingest.
    row = {name: getattr(p, name) for name in PREDICTION_FIELDS}
    for name in _RECORD_LISTS:
        row[name] = [item.model_dump(mode="json") for item in row[name]]
    row["failed_validators"] = failed_validators(p)
    return row


def row_to_prediction(row: Mapping[str, Any]) -> Prediction:
    """A ``Prediction`` from a ``predictions`` row (extra columns are ignored)."""
    return Prediction.model_validate({name: row[name] for name in PREDICTION_FIELDS})


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


def row_to_eval_point(row: Mapping[str, Any]) -> EvalPoint:
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
    )


def row_to_trend_point(row: Mapping[str, Any]) -> TrendPoint:
    """The trends entry of one evaluation point, from its stored aggregates."""
    validated = row["validated_count"]
    metric_avgs = row["metric_avgs"] or {}
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
    )


def run_to_row(run: Run) -> dict[str, Any]:
    return run.model_dump()


def row_to_run(row: Mapping[str, Any]) -> Run:
    return Run.model_validate({name: row[name] for name in Run.model_fields})
