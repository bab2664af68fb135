"""Stream the records of a source, one at a time, with their position and line.

A source is a path to a JSON array or JSON Lines file (either may be gzip-compressed: detected
from the content, not the name), an in-memory list, any iterable of dicts, or a
``datasets.Dataset`` (iterated row by row). Nothing is read into memory whole: JSON arrays are
decoded element by element with ``json.JSONDecoder.raw_decode`` over chunks.

``index`` counts entries: non-blank lines of a JSON Lines file, elements of a JSON array, items
of a list. A malformed entry keeps its index, so fixing a bad line never moves the ones after it.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Union, cast

from predwatch.errors import DataError

_CHUNK_CHARS = 64 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
_JSONL_SUFFIXES = {".jsonl", ".ndjson"}
_BOM = b"\xef\xbb\xbf"
# An error this far before the end of the buffer cannot be cured by reading more of the file.
_ERROR_MARGIN = 64
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


@dataclass(slots=True)
class SourceRecord:
    """One well-formed record: its position in the source and (for files) its first line."""

    index: int
    line: int | None
    record: dict[str, Any]


@dataclass(frozen=True)
class LineProblem:
    """An entry that is not a JSON object: bad JSON, or a value of another type."""

    file: str
    line: int | None  # 1-based; None for in-memory sources
    reason: str
    index: int | None = None  # the entry's position, when it has one

    def __str__(self) -> str:
        if self.line is not None:
            return f"{self.file}:{self.line}: {self.reason}"
        return f"{self.file}[{self.index}]: {self.reason}"


Entry = SourceRecord | LineProblem
Source = Union[str, "os.PathLike[str]", Iterable[Any]]


@dataclass
class RecordStream:
    """The entries of one source, in order, and the name it is recorded under."""

    source_id: str
    entries: Iterator[Entry]


def open_records(source: Source, *, source_id: str | None = None) -> RecordStream:
    """Open a source for streaming.

    Args:
        source: A file path, a list or iterable of dicts, or a ``datasets.Dataset``.
        source_id: The name to record; defaults to the file name, ``"dataset"`` or ``"list"``.

    Raises:
        DataError: The file does not exist, cannot be read, or is not JSON / JSON Lines; or the
            source is a ``DatasetDict`` (the message names its splits and which to pass).
        TypeError: The source is none of the supported kinds.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(os.fspath(source)).expanduser()
        name = source_id or path.name
        return RecordStream(name, _read_file(path, name))
    _refuse_dataset_dict(source)
    if isinstance(source, (bytes, bytearray, dict)) or not isinstance(source, Iterable):
        raise TypeError(
            "a sample source is a file path, a list or iterable of dicts, or a "
            f"datasets.Dataset; got {type(source).__name__}"
        )
    # Duck-typed on the module name so that predwatch never imports ``datasets`` itself.
    default = "dataset" if type(source).__module__.startswith("datasets") else "list"
    name = source_id or default
    return RecordStream(name, _read_iterable(source, name))


def _refuse_dataset_dict(source: Any) -> None:
    """``load_dataset(name)`` without ``split=`` gives a dict of splits: say which to pass."""
    kind = type(source).__name__
    if kind not in ("DatasetDict", "IterableDatasetDict") or not isinstance(source, Mapping):
        return
    splits = [str(name) for name in source]
    if not splits:
        raise DataError(f"got an empty {kind} (no splits): pass a Dataset with records")
    pick = next((s for s in ("train", "test", "validation") if s in splits), splits[0])
    raise DataError(
        f"got a {kind} with splits {', '.join(map(repr, splits))}, not one dataset: pass one "
        f"split, e.g. dataset[{pick!r}] (or load_dataset(..., split={pick!r}))",
        detail={"splits": splits},
    )


def _read_iterable(items: Iterable[Any], name: str) -> Iterator[Entry]:
    for index, item in enumerate(items):
        if isinstance(item, dict):
            yield SourceRecord(index, None, item)
        elif isinstance(item, Mapping):
            yield SourceRecord(index, None, dict(item))
        else:
            yield LineProblem(name, None, f"not a JSON object (got {_json_type(item)})", index)


def _read_file(path: Path, name: str) -> Iterator[Entry]:
    """Check the file now (so errors surface at ``open_records``), then stream it lazily."""
    compressed, first = _sniff(path)
    if first == b"[":
        return _json_array_entries(path, name, compressed)
    # A .jsonl file is read line by line even when its first line is broken (and reported).
    if first == b"{" or (first and _JSONL_SUFFIXES & set(path.suffixes)):
        return _jsonl_entries(path, name, compressed)
    if first == b"":
        raise DataError(f"{path}: the file is empty (expected a JSON array or JSON Lines)")
    raise DataError(
        f"{path}: unsupported file: expected a JSON array or JSON Lines "
        f"(it starts with {first!r}); load other formats with datasets.load_dataset(...) "
        "and pass the Dataset"
    )


def _open_binary(path: Path, compressed: bool) -> IO[bytes]:
    return cast(IO[bytes], gzip.open(path, "rb") if compressed else open(path, "rb"))


def _sniff(path: Path) -> tuple[bool, bytes]:
    """Whether the file is gzip, and its first significant byte (b"" when there is none)."""
    try:
        with open(path, "rb") as raw:
            compressed = raw.read(2) == _GZIP_MAGIC
        with _open_binary(path, compressed) as f:
            head = f.read(len(_BOM))
            head = head.removeprefix(_BOM)
            while True:
                stripped = head.lstrip()
                if stripped:
                    return compressed, stripped[:1]
                head = f.read(_CHUNK_CHARS)
                if not head:
                    return compressed, b""
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read the file: {_describe(exc)}") from None


def _jsonl_entries(path: Path, name: str, compressed: bool) -> Iterator[Entry]:
    index = 0
    lineno = 0
    try:
        with _open_binary(path, compressed) as f:
            for lineno, raw in enumerate(f, 1):
                if not raw or raw.isspace():
                    continue
                try:
                    # Decoding here, not in json.loads(bytes), skips its per-line encoding sniff.
                    value = _DECODER.decode(raw.decode("utf-8-sig" if lineno == 1 else "utf-8"))
                except json.JSONDecodeError as exc:
                    yield LineProblem(name, lineno, f"invalid JSON: {exc.msg} "
                                      f"(column {exc.colno})", index)
                except UnicodeDecodeError:
                    yield LineProblem(name, lineno, "not valid UTF-8 text", index)
                else:
                    if isinstance(value, dict):
                        yield SourceRecord(index, lineno, value)
                    else:
                        yield LineProblem(
                            name, lineno, f"not a JSON object (got {_json_type(value)})", index
                        )
                index += 1
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read past line {lineno}: {_describe(exc)}") from None


def _json_array_entries(path: Path, name: str, compressed: bool) -> Iterator[Entry]:
    try:
        with _open_binary(path, compressed) as raw:
            reader = _ArrayReader(io.TextIOWrapper(raw, encoding="utf-8-sig"), name)
            try:
                yield from reader.entries()
            except UnicodeDecodeError:
                # The decoder fails on a whole chunk, so the bad byte is somewhere after here.
                yield reader.problem("not valid UTF-8 text after this point; the rest of the "
                                     "file was not read")
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read the file: {_describe(exc)}") from None


class _ArrayReader:
    """Decodes the elements of a top-level JSON array from a text stream, chunk by chunk.

    A syntax error inside the array ends the reading (there is no reliable way to find the next
    element) and is reported as a ``LineProblem``; the elements before it are kept.
    """

    def __init__(self, stream: IO[str], name: str) -> None:
        self._stream = stream
        self._name = name
        self._buf = ""
        self._pos = 0
        self._line = 1  # the line number at self._pos
        self._column_base = 0  # the 0-based column of self._buf[0]
        self._eof = False

    def entries(self) -> Iterator[Entry]:
        self._peek()  # the sniffer saw "[" first
        self._advance(self._pos + 1)
        index = 0
        if self._peek() == "]":
            return
        while True:
            if self._peek() is None:
                yield self.problem("the array is not closed (unexpected end of file)")
                return
            line = self._line
            try:
                value = self._decode()
            except json.JSONDecodeError as exc:
                yield self._syntax_problem(exc, index)
                return
            if isinstance(value, dict):
                yield SourceRecord(index, line, value)
            else:
                # Element numbers matter here: a minified array is all on line 1.
                reason = f"element {index} is not a JSON object (got {_json_type(value)})"
                yield LineProblem(self._name, line, reason, index)
            index += 1
            after = self._peek()
            if after == ",":
                self._advance(self._pos + 1)
            elif after == "]":
                self._advance(self._pos + 1)
                if self._peek() is not None:
                    yield self.problem("unexpected data after the closing ']'")
                return
            else:
                found = "end of file" if after is None else repr(after)
                yield self.problem(f"expected ',' or ']' after an element, found {found}")
                return

    def _decode(self) -> Any:
        while True:
            try:
                value, end = _DECODER.raw_decode(self._buf, self._pos)
                # A value touching the end of the buffer may continue (a number cut in two).
                if end < len(self._buf) or self._eof:
                    self._advance(end)
                    return value
            except json.JSONDecodeError as exc:
                near_end = exc.pos + _ERROR_MARGIN >= len(self._buf)
                if self._eof or not (near_end or exc.msg.startswith("Unterminated string")):
                    raise
            # Read at least as much again as is pending, so that one huge element is decoded
            # O(log size) times rather than once per chunk.
            self._fill(max(_CHUNK_CHARS, len(self._buf) - self._pos))

    def _peek(self) -> str | None:
        """The next non-whitespace character (consuming the whitespace), None at end of file."""
        while True:
            self._advance(_WHITESPACE.match(self._buf, self._pos).end())  # type: ignore[union-attr]
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if self._eof:
                return None
            self._fill(_CHUNK_CHARS)

    def _advance(self, pos: int) -> None:
        self._line += self._buf.count("\n", self._pos, pos)
        self._pos = pos

    def _column(self, pos: int) -> int:
        """1-based column of ``pos`` (the buffer may start in the middle of a line)."""
        newline = self._buf.rfind("\n", 0, pos)
        return pos - newline if newline >= 0 else self._column_base + pos + 1

    def _fill(self, size: int) -> None:
        chunk = self._stream.read(size)
        self._column_base = self._column(self._pos) - 1
        self._buf = self._buf[self._pos:] + chunk
        self._pos = 0
        self._eof = not chunk

    def problem(self, reason: str) -> LineProblem:
        """A problem at the current position (line and column)."""
        return LineProblem(self._name, self._line, f"{reason} (column {self._column(self._pos)})")

    def _syntax_problem(self, exc: json.JSONDecodeError, index: int) -> LineProblem:
        line = self._line + self._buf.count("\n", self._pos, exc.pos)
        reason = (
            f"invalid JSON in element {index}: {exc.msg} (column {self._column(exc.pos)}); "
            "the rest of the array was not read"
        )
        return LineProblem(self._name, line, reason, index)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__name__


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
