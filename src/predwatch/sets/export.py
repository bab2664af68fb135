"""Write set items back to files that ``read_items`` reads to the same items (and version)."""

from __future__ import annotations

import csv
import gzip
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any, Union

from predwatch.errors import ConfigError
from predwatch.sets.model import SetItem

FORMATS = ("jsonl", "json", "csv")
PathLike = Union[str, "os.PathLike[str]"]


def item_record(item: SetItem) -> dict[str, Any]:
    """An item as a record that ``read_items`` reads back to the same item.

    A chat is written as ``messages`` (the prompt turns); one whose prompt ends with an assistant
    turn is written as ``prompt`` (a list of turns, used whole), since a final assistant turn in
    ``messages`` would be read as the answer.
    """
    record: dict[str, Any] = {}
    if item.custom_id is not None:
        record["id"] = item.custom_id
    if item.messages is None:
        record["prompt"] = item.prompt
    elif item.messages and item.messages[-1].get("role") == "assistant":
        record["prompt"] = item.messages
    else:
        record["messages"] = item.messages
    if item.ground_truth is not None:
        record["ground_truth"] = item.ground_truth
    if item.validators:
        record["validators"] = item.validators
    if item.tags:
        record["tags"] = item.tags
    return record


def format_for(path: PathLike) -> str:
    """The export format a file name asks for (``.jsonl``, ``.json``, ``.csv``, maybe ``.gz``)."""
    suffixes = [s.lower() for s in Path(os.fspath(path)).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    return {".json": "json", ".csv": "csv"}.get(last, "jsonl")


def write_items(items: Iterable[SetItem], out: IO[str], fmt: str = "jsonl") -> int:
    """Write items to a text stream as JSON Lines, a JSON array or CSV; returns the count."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    items = list(items)
    records = [item_record(i) for i in items]
    if fmt == "json":
        json.dump(records, out, ensure_ascii=False, indent=2)
        out.write("\n")
    elif fmt == "jsonl":
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    else:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["id", "prompt", "messages", "ground_truth", "tags", "validators"])
        writer.writerows(_csv_row(item) for item in items)
    return len(records)


def _csv_row(item: SetItem) -> list[str]:
    # A JSON list when the plain form would read back otherwise: split at a separator inside a
    # tag, or read as JSON because it starts with "[".
    as_json = any("," in t or ";" in t or t.lstrip().startswith("[") for t in item.tags)
    tags = json.dumps(item.tags, ensure_ascii=False) if as_json else ";".join(item.tags)
    return [
        item.custom_id or "",
        item.prompt if item.messages is None else "",
        json.dumps(item.messages, ensure_ascii=False) if item.messages is not None else "",
        item.ground_truth if item.ground_truth is not None else "",
        tags,
        json.dumps(item.validators, ensure_ascii=False) if item.validators else "",
    ]


def export_file(items: list[SetItem], path: PathLike, fmt: str | None = None) -> int:
    """Write items to ``path`` (gzip-compressed when it ends in ``.gz``); returns the count."""
    p = Path(os.fspath(path)).expanduser()
    chosen = fmt or format_for(p)
    opener = gzip.open if p.suffix.lower() == ".gz" else open
    with opener(p, "wt", encoding="utf-8", newline="") as out:
        return write_items(items, out, chosen)
