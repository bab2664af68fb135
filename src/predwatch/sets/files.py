"""Read set items from files and datasets (JSON, JSON Lines, CSV; gzip) — ``export`` writes them.

An item is a record in any format ``predwatch.sampling`` understands (``messages``; ``prompt`` +
``completion``; ``instruction`` + ``output``; ``question`` + ``answer``; ...) plus optional keys:

- ``id``: the item's own id (a string of at most 200 characters); it becomes the item and prompt id.
- ``ground_truth``: the expected answer; wins over the answer the format carries.
- ``validators``: a validator spec or a list of them (``{"kind": ..., **options}``), run on
  this item's answers in addition to the run's validators.
- ``tags``: a list of strings, or one string separated by commas or semicolons.

CSV files (``.csv``, ``.csv.gz``) have a header row with ``prompt`` (or ``messages``: a JSON
list, the prompt conversation), ``ground_truth`` (or ``completion`` / ``answer``), and optionally
``id``, ``tags`` and ``validators`` (JSON). Other columns are ignored.

Importing is strict: a golden set must be exactly what its file says, so every problem (a bad
line, an unknown format, a bad validator, two items with the same id or prompt) is an error that
names the file and line; up to ``MAX_PROBLEMS`` are listed in one ``DataError``.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from predwatch.errors import ConfigError, DataError
from predwatch.sampling import LineProblem, SkipRecord, open_records, parse_record
from predwatch.sampling.formats import _drop_nulls
from predwatch.sets.model import SetItem

MAX_PROBLEMS = 10
MAX_ID_CHARS = 200
_GZIP_MAGIC = b"\x1f\x8b"
_TRUTH_COLUMNS = ("ground_truth", "completion", "answer")
_CSV_PROMPT_COLUMNS = ("prompt", "messages")
_CSV_FIELD_LIMIT = 2**31 - 1  # csv's default is 131072 characters; sys.maxsize overflows a C long


class _Problems:
    """Problems found while reading, reported together (the first ``MAX_PROBLEMS`` in full)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[str] = []
        self.count = 0

    def add(self, where: str, reason: str) -> None:
        self.count += 1
        if len(self.items) < MAX_PROBLEMS:
            self.items.append(f"{where}: {reason}")

    def raise_if_any(self) -> None:
        if not self.count:
            return
        more = (
            f"\n  ... and {self.count - len(self.items)} more" if self.count > MAX_PROBLEMS else ""
        )
        listed = "\n".join(f"  - {p}" for p in self.items)
        raise DataError(
            f"{self.source}: {self.count} problem{'s' if self.count != 1 else ''} in the set "
            f"items:\n{listed}{more}",
            detail={"problems": self.items, "problem_count": self.count},
        )


def read_items(source: Any, *, source_id: str | None = None) -> list[SetItem]:
    """Read set items from a file (JSON, JSON Lines, CSV; optionally gzip), a list of dicts or a
    ``datasets.Dataset``, in order.

    Raises:
        DataError: Listing every problem with its file and line (or index), or no item at all.
    """
    path = Path(os.fspath(source)).expanduser() if isinstance(source, (str, os.PathLike)) else None
    base = path.resolve().parent if path is not None else None
    if path is not None and _is_csv(path):
        name = source_id or path.name
        entries: Iterable[tuple[str, Any]] = _csv_entries(path, name)
    else:
        stream = open_records(source, source_id=source_id)
        name = stream.source_id
        entries = (_located(entry) for entry in stream.entries)
        if type(source).__module__.startswith("datasets"):  # duck-typed, as open_records does
            entries = (_arrow_row(where, record) for where, record in entries)
    problems = _Problems(name)
    items: list[SetItem] = []
    places: list[str] = []
    for where, record in entries:
        if isinstance(record, LineProblem):
            problems.add(where, record.reason)
            continue
        try:
            items.append(item_from_record(record, base=base))
            places.append(where)
        except (DataError, ConfigError) as exc:
            problems.add(where, exc.message)
    _check_unique(items, places, problems)
    problems.raise_if_any()
    if not items:
        raise DataError(f"{name}: no items (a set needs at least one)")
    return items


def item_from_record(record: Mapping[str, Any], *, base: Path | None = None) -> SetItem:
    """One item from one record (see the module docstring for the keys).

    Args:
        record: One record.
        base: The folder of the set file: a validator's ``schema_path`` is read from there and
            stored inline. Without one, ``schema_path`` is refused (see ``check_portable``).

    Raises:
        DataError: The record is in no known format or a field is invalid (names the field).
    """
    try:
        parsed = parse_record(record)
    except SkipRecord as skip:
        raise DataError(skip.reason) from None
    truth = record.get("ground_truth")
    truth = parsed.ground_truth if truth is None else truth
    if truth is not None and not isinstance(truth, str):
        truth = json.dumps(truth, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return SetItem.build(
        parsed.prompt,
        messages=parsed.messages,
        ground_truth=truth,
        validators=_validators(record.get("validators"), base),
        tags=_tags(record.get("tags")),
        custom_id=_custom_id(record.get("id")),
    )


def _located(entry: Any) -> tuple[str, Any]:
    """``(where, record or LineProblem)``: "line N" in a file, "item N" in a list or dataset."""
    where = f"line {entry.line}" if entry.line is not None else f"item {entry.index}"
    return where, entry if isinstance(entry, LineProblem) else entry.record


def _arrow_row(where: str, record: Any) -> tuple[str, Any]:
    """A ``datasets`` row with the null keys of its validator specs dropped: Arrow merges the
    specs of all rows into one struct and fills the keys a spec does not have with None (a
    ``regex`` spec gets ``value: None`` from a ``contains`` spec in another row)."""
    if isinstance(record, dict) and isinstance(record.get("validators"), (dict, list)):
        record = dict(record, validators=_drop_nulls(record["validators"]))
    return where, record


def _custom_id(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(f"field 'id' must be a string, not {type(value).__name__}")
    text = str(value).strip()
    if not text or len(text) > MAX_ID_CHARS:
        raise DataError(f"field 'id' must have 1 to {MAX_ID_CHARS} characters")
    return text


def _validators(value: Any, base: Path | None = None) -> list[dict[str, Any]]:
    if value is None:
        return []
    specs = [value] if isinstance(value, dict) else value
    if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
        raise DataError("field 'validators' must be a validator spec or a list of them")
    specs = [_inline_schema(dict(s), base) for s in specs]
    check_portable(specs)
    from predwatch.scoring import build_validators

    try:
        build_validators(specs)  # a bad spec fails here, at import, not at every evaluation
    except ConfigError as exc:
        raise DataError(f"field 'validators': {exc.message}") from None
    return specs


def check_portable(specs: list[dict[str, Any]]) -> None:
    """Refuse validators that a stored set must not carry.

    A set is shared through the database and the API and run on other machines: a ``python``
    validator would run code chosen by whoever wrote the set, and a ``schema_path`` names a
    file of one machine. Both belong in a run's own config (``validators.rules``).
    """
    for index, spec in enumerate(specs):
        if spec.get("kind") == "python":
            raise DataError(
                f"field 'validators': validator {index} is a 'python' validator, which runs "
                "code; set items carry declarative validators only (put it in the run's "
                "config: validators.rules)"
            )
        if "schema_path" in spec:
            raise DataError(
                f"field 'validators': validator {index} has 'schema_path'; give the schema "
                "inline ('schema'), or import the set from a file next to the schema"
            )


def _inline_schema(spec: dict[str, Any], base: Path | None) -> dict[str, Any]:
    """A ``schema_path`` relative to the set file becomes an inline ``schema``."""
    path = spec.get("schema_path")
    if base is None or not isinstance(path, str) or spec.get("schema") is not None:
        return spec
    target = base / Path(path).expanduser()
    try:
        schema = json.loads(target.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"field 'validators': schema_path {target}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"field 'validators': schema_path {target}: line {exc.lineno} column "
                        f"{exc.colno}: {exc.msg}") from None
    return {k: v for k, v in spec.items() if k != "schema_path"} | {"schema": schema}


def _tags(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [t.strip() for t in value.replace(";", ",").split(",") if t.strip()]
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return [t.strip() for t in value if t.strip()]
    raise DataError("field 'tags' must be a list of strings or a comma-separated string")


def _check_unique(items: list[SetItem], places: list[str], problems: _Problems) -> None:
    """Item ids and prompt ids are unique in a version (a repeated prompt would share rows)."""
    seen_items: dict[str, str] = {}
    seen_prompts: dict[str, str] = {}
    for item, where in zip(items, places, strict=True):
        if item.custom_id is not None and item.item_id in seen_items:
            problems.add(where, f"duplicate item id {item.item_id!r} (first at "
                                f"{seen_items[item.item_id]})")
            continue
        # Without an own id, the item id is the prompt's: a repeated prompt repeats it.
        first = seen_prompts.get(item.prompt_id) or seen_items.get(item.item_id)
        if first is not None:
            problems.add(where, f"same prompt as {first} ({item.prompt[:60]!r}); give the "
                                "items different 'id's to keep both")
            continue
        seen_items[item.item_id] = where
        seen_prompts[item.prompt_id] = where


# --- CSV --------------------------------------------------------------------------------------


def _is_csv(path: Path) -> bool:
    return ".csv" in [s.lower() for s in path.suffixes[-2:]]


def _open_text(path: Path) -> IO[str]:
    try:
        with open(path, "rb") as raw:
            compressed = raw.read(2) == _GZIP_MAGIC
        binary = gzip.open(path, "rb") if compressed else open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file: {exc}") from None
    return io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")


def _csv_entries(path: Path, name: str) -> Iterator[tuple[str, Any]]:
    # Process-wide; raised, never lowered, so that a long prompt or schema can be read.
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    with _open_text(path) as text:
        reader = csv.DictReader(text)
        try:
            header = reader.fieldnames or []
        except (UnicodeDecodeError, csv.Error, OSError) as exc:
            raise DataError(f"{name}:1: cannot read the header row: {exc}") from None
        if not set(_CSV_PROMPT_COLUMNS) & set(header):
            raise DataError(
                f"{name}:1: the header has no 'prompt' (or 'messages') column "
                f"(columns: {', '.join(header) or 'none'})"
            )
        line = reader.line_num + 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except (UnicodeDecodeError, csv.Error) as exc:
                raise DataError(f"{name}:{line}: cannot read the row: {exc}") from None
            where = f"line {line}"
            line = reader.line_num + 1
            try:
                yield where, _csv_record(row)
            except DataError as exc:
                yield where, LineProblem(name, None, exc.message)


def _csv_record(row: Mapping[str, str | None]) -> dict[str, Any]:
    def cell(column: str) -> str | None:
        value = row.get(column)
        return value if value not in (None, "") else None

    tags = cell("tags")
    record: dict[str, Any] = {
        "prompt": cell("prompt"),
        "ground_truth": next((cell(c) for c in _TRUTH_COLUMNS if cell(c) is not None), None),
        "id": cell("id"),
        "tags": _json_cell(tags, "tags") if tags is not None and tags.startswith("[") else tags,
        "validators": _json_cell(cell("validators"), "validators"),
    }
    messages = _json_cell(cell("messages"), "messages")
    if messages is not None:
        if not isinstance(messages, list) or not messages:
            raise DataError("column 'messages' must be a JSON list of {role, content} objects")
        record["prompt"] = messages  # the prompt conversation, used whole (TRL's format)
    return record


def _json_cell(value: str | None, column: str) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"column '{column}': not valid JSON ({exc.msg}, column {exc.colno})"
        ) from None
