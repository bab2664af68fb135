"""Stored rows that cannot be decoded become marked placeholders, never a failed list.

A database may hold values this predwatch cannot read: JSON nested deeper than the decoder
allows, text that is not JSON (SQLite stores any text), a status or trigger that a newer
version wrote, a column of the wrong type written by hand. One such row must not turn every
list, home page and comparison that includes it into a 500 for everyone who can see it, so:

- ``load_json`` (the engines' JSON decoder) answers ``{UNDECODABLE: reason}`` for a JSON value
  it cannot decode, instead of raising in the middle of a fetch;
- ``@tolerant(model)`` wraps a row -> record converter: a row that fails to convert
  becomes a placeholder of ``model`` that keeps every field that is valid on its own and says
  why in a marked field (``Run.config``, ``EvalPoint.card``, ``Prediction.generation_params``
  carry ``{UNDECODABLE: reason}``; a prediction's ``error`` says so in words too).

Each undecodable row is logged once per process (a warning naming the table's key and why).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import from_json

from predwatch.records import EvalPoint, Prediction, Run

log = logging.getLogger(__name__)

UNDECODABLE = "predwatch_undecodable"
"""The key that marks a placeholder: ``{UNDECODABLE: "why it could not be read"}``."""

M = TypeVar("M", bound=BaseModel)
_logged: set[tuple[str, ...]] = set()
# Where a placeholder says why, and what a required field holds when the row's value is bad.
_MARKED_FIELD: dict[type[BaseModel], str] = {Run: "config", EvalPoint: "card",
                                              Prediction: "generation_params"}
_REQUIRED: dict[type[BaseModel], dict[str, Any]] = {
    Run: {"id": "?"},
    EvalPoint: {"run_id": "?", "step": 0},
    Prediction: {"run_id": "?", "step": 0, "prompt_id": "?"},
}


def load_json(text: str | bytes) -> Any:
    """Decode a stored JSON value; a value that cannot be decoded becomes a marker."""
    try:
        return from_json(text)
    except ValueError as exc:
        return {UNDECODABLE: f"stored JSON could not be decoded: {exc}"}


def is_placeholder(value: Any) -> bool:
    """Whether a decoded JSON value (or a record's marked field) is the undecodable marker."""
    return isinstance(value, dict) and UNDECODABLE in value


def tolerant(model: type[M]) -> Callable[[Callable[[Mapping[Any, Any]], M]],
                                         Callable[[Mapping[Any, Any]], M]]:
    """Decorate a row -> ``model`` converter: a row it cannot convert becomes a placeholder."""

    def wrap(convert: Callable[[Mapping[Any, Any]], M]) -> Callable[[Mapping[Any, Any]], M]:
        @functools.wraps(convert)
        def converted(row: Mapping[Any, Any]) -> M:
            try:
                return convert(row)
            except (ValidationError, ValueError, TypeError, KeyError) as exc:
                return placeholder(model, row, _reason(row, exc))

        return converted

    return wrap


def placeholder(model: type[M], row: Mapping[Any, Any], reason: str) -> M:
    """A valid ``model`` from what ``row`` holds, marked undecodable with ``reason``."""
    data: dict[str, Any] = dict(_REQUIRED.get(model, {}))
    for name in model.model_fields:
        if name not in row:
            continue
        trial = {**data, name: row[name]}
        try:
            model.model_validate(trial)
        except (ValidationError, ValueError, TypeError):
            continue
        data = trial
    marked = _MARKED_FIELD.get(model)
    if marked is not None:
        data[marked] = {UNDECODABLE: reason}
    if model is Prediction:
        data["error"] = f"this stored row could not be read: {reason}"
    key = tuple(str(data.get(k)) for k in ("run_id", "id", "step", "prompt_id") if k in data)
    if (model.__name__, *key) not in _logged:
        _logged.add((model.__name__, *key))
        log.warning("predwatch: a stored %s row (%s) could not be read and is shown as a "
                    "placeholder: %s", model.__name__, ", ".join(key), reason)
    return model.model_validate(data)


def _reason(row: Mapping[Any, Any], exc: Exception) -> str:
    for value in row.values():
        if is_placeholder(value):
            return str(value[UNDECODABLE])
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"{where}: {first['msg']}" + (f" (and {exc.error_count() - 1} more)"
                                              if exc.error_count() > 1 else "")
    return f"{type(exc).__name__}: {exc}"
