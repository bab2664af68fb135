"""A field mapping: read a dataset of any schema without converting it first.

The config's ``fields`` names where each part of a sample lives in a record, as a key or a
dotted path (``meta.question``; a number indexes a list: ``turns.0.text``)::

    {"fields": {"prompt": "query.text", "completion": "labels.answer", "system": "sys"}}

``remap`` turns a record into the record predwatch already knows (``prompt`` / ``completion`` /
``messages`` / ``tools`` / ``chat_template_kwargs``) plus the system text, so every format rule
applies unchanged afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from predwatch.config import FIELD_NAMES, check_field_mapping
from predwatch.errors import DataError

__all__ = ["FIELD_NAMES", "MissingField", "check_field_mapping", "lookup", "remap"]

# Columns read from the record as they are when the mapping does not name them.
_PASSED_THROUGH = ("tools", "chat_template_kwargs")


class MissingField(DataError):
    """A mapped path that a record does not have (``reason`` is free of record content)."""

    def __init__(self, field: str, path: str) -> None:
        self.reason = f"no '{path}' (mapped to {field})"
        super().__init__(self.reason)


def remap(record: Mapping[str, Any], fields: Mapping[str, str]) -> tuple[dict[str, Any], Any]:
    """The record under predwatch's own keys, and the mapped system text (None when unmapped).

    Raises:
        MissingField: A mapped path (other than ``completion``/``system``/``tools``, which are
            optional) is absent or null in this record.
    """
    out: dict[str, Any] = {}
    for name in _PASSED_THROUGH:
        if name not in fields and record.get(name) is not None:
            out[name] = record[name]
    system = None
    for name, path in fields.items():
        value = lookup(record, path)
        if value is None:
            if name in ("prompt", "messages"):
                raise MissingField(name, path)
            continue
        if name == "system":
            system = value
        else:
            out[name] = value
    return out, system


def lookup(record: Any, path: str) -> Any:
    """The value at a dotted path (None when any step is missing); a key that itself holds
    dots is found whole first."""
    if isinstance(record, Mapping) and path in record:
        return record[path]
    value = record
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, (list, tuple)) and part.lstrip("-").isdigit():
            index = int(part)
            value = value[index] if -len(value) <= index < len(value) else None
        else:
            return None
        if value is None:
            return None
    return value
