"""Choose the prompts a run answers at every evaluation point, reproducibly, from a dataset.

``select_samples(source, n, seed)`` streams a source (see ``readers``), turns each record into a
sample (see ``formats``) and keeps ``n`` of the valid ones by reservoir sampling, so memory grows
with ``n``, not with the file. The same seed over the same records gives the same samples whether
they come from a file, a list or a ``datasets.Dataset``.

Records in no known format are skipped and counted by reason (``fields`` maps any other
schema, see ``sampling.fields``); content parts a text model cannot read (images, audio) are
left out and counted by type; malformed entries (bad JSON,
values that are not objects) are reported with file and line and logged once. Neither stops the
selection; a source with no usable record at all raises ``DataError`` saying why.
"""

from __future__ import annotations

import logging
import os
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from predwatch.errors import DataError
from predwatch.records import Sample
from predwatch.sampling.fields import FIELD_NAMES, check_field_mapping
from predwatch.sampling.formats import ParsedRecord, SkipRecord, extract_sample, parse_record
from predwatch.sampling.readers import (
    Entry,
    LineProblem,
    RecordStream,
    Source,
    SourceRecord,
    open_records,
)

__all__ = [
    "FIELD_NAMES",
    "LineProblem",
    "ParsedRecord",
    "RecordStream",
    "SampleSelection",
    "SkipRecord",
    "Source",
    "SourceRecord",
    "extract_sample",
    "open_records",
    "parse_record",
    "select_samples",
]

logger = logging.getLogger(__name__)

MAX_REPORTED_PROBLEMS = 1000  # kept in ``SampleSelection.malformed``; all are counted
_PROBLEMS_IN_MESSAGES = 3


@dataclass
class SampleSelection:
    """The chosen samples and an account of everything that was not usable.

    Attributes:
        samples: The chosen samples, ordered by ``source_index``.
        source_id: The file name, ``"dataset"``, ``"list"``, or the name given.
        total_records: Entries read: valid, skipped and malformed.
        valid_records: Entries that could become a sample (the population sampled from).
        skipped: Well-formed records in no known format, counted by reason.
        malformed: Entries that are not JSON objects (the first ``MAX_REPORTED_PROBLEMS``).
        malformed_count: All malformed entries.
        dropped_content: Content parts left out of the chosen samples' prompts (images,
            audio...), counted by part type.
    """

    samples: list[Sample]
    source_id: str
    total_records: int = 0
    valid_records: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    malformed: list[LineProblem] = field(default_factory=list)
    malformed_count: int = 0
    dropped_content: dict[str, int] = field(default_factory=dict)

    def problems_summary(self) -> str:
        """One line: how many entries were malformed or skipped, and where/why ("" if none)."""
        parts = []
        if self.malformed_count:
            first = "; ".join(str(p) for p in self.malformed[:_PROBLEMS_IN_MESSAGES])
            more = self.malformed_count - min(len(self.malformed), _PROBLEMS_IN_MESSAGES)
            parts.append(
                f"{_plural(self.malformed_count, 'malformed entry', 'malformed entries')} "
                f"({first}{f'; and {more} more' if more else ''})"
            )
        if self.skipped:
            reasons = ", ".join(f"{reason}: {count}" for reason, count in self.skipped.items())
            total = sum(self.skipped.values())
            parts.append(f"{_plural(total, 'record')} skipped ({reasons})")
        if self.dropped_content:
            what = ", ".join(f"{kind}: {count}" for kind, count in self.dropped_content.items())
            parts.append(f"content a text model cannot read was left out of the chosen prompts "
                         f"({what}; their text parts are kept)")
        return "; ".join(parts)


# How many records a selection reads at most: a stream (an ``IterableDataset``, a file) is read
# up to this many records, so set-up stays bounded (about half a second here) however large, or
# endless, the source is.
DEFAULT_SCAN_LIMIT = 100_000
# A sized source with random access (a list, a ``datasets.Dataset``) larger than the scan limit
# is sampled over its whole length instead: this many candidate rows, drawn uniformly.
CANDIDATES_PER_SAMPLE = 20
MIN_CANDIDATES = 10_000


def select_samples(
    source: Source,
    n: int | None,
    seed: int = 42,
    *,
    source_id: str | None = None,
    fields: Mapping[str, str] | None = None,
    scan_limit: int | None = DEFAULT_SCAN_LIMIT,
) -> SampleSelection:
    """Choose ``n`` samples from a source, reproducibly for a seed.

    Args:
        source: A path to a JSON array / JSON Lines file (optionally gzip-compressed), a list or
            iterable of dicts, or a ``datasets.Dataset``.
        n: How many samples to keep; None keeps every valid record.
        seed: Seeds a local ``random.Random``; the global ``random`` state is never touched.
        source_id: The name recorded as ``sample_source_id`` (default: the file name,
            ``"dataset"`` or ``"list"``).
        fields: A field mapping for a custom schema (``{"prompt": "a.b", ...}``, see
            ``sampling.fields``).
        scan_limit: The most records read (None: all). Up to it, every record is a candidate.
            Beyond it, a sized source with random access (a list, a ``datasets.Dataset``)
            contributes ``max(20 n, 10,000)`` rows drawn uniformly over its whole length; a
            stream or file contributes its first ``scan_limit`` records (logged once). Either
            way the choice depends only on the source, ``n`` and ``seed``.

    Returns:
        The selection; its samples are ordered by their position in the source.

    Raises:
        DataError: The file is missing, unreadable or unsupported (a ``DatasetDict``: names its
            splits), or has no usable record.
        ValueError: ``n`` is not a positive integer or None, or ``fields`` is not a mapping.
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"n must be a positive integer or None, got {n!r}")
    if fields:
        check_field_mapping(fields)
    stream = open_records(source, source_id=source_id)
    rng = random.Random(seed)
    entries: Iterable[Entry] = stream.entries
    if scan_limit is not None:
        entries = _bounded(source, stream, n, scan_limit, rng)
    # Reservoir sampling (Algorithm R) over the valid records. Integer draws only, so the same
    # seed picks the same records on every platform and Python version.
    reservoir: list[tuple[int, ParsedRecord]] = []
    selection = SampleSelection(samples=[], source_id=stream.source_id)
    skipped: Counter[str] = Counter()
    valid = 0
    for entry in entries:
        selection.total_records += 1
        if not isinstance(entry, SourceRecord):
            selection.malformed_count += 1
            if len(selection.malformed) < MAX_REPORTED_PROBLEMS:
                selection.malformed.append(entry)
            continue
        try:
            parsed = parse_record(entry.record, fields=fields)
        except SkipRecord as skip:
            skipped[skip.reason] += 1
            continue
        if n is None or valid < n:
            reservoir.append((entry.index, parsed))
        else:
            slot = rng.randrange(valid + 1)
            if slot < n:
                reservoir[slot] = (entry.index, parsed)
        valid += 1

    selection.valid_records = valid
    selection.skipped = dict(skipped.most_common())
    _check_usable(selection)
    reservoir.sort(key=lambda item: item[0])
    dropped: Counter[str] = Counter()
    for _, parsed in reservoir:
        dropped.update(parsed.dropped)
    selection.dropped_content = dict(dropped.most_common())
    if selection.malformed_count or skipped or dropped:
        logger.warning("%s: %s", selection.source_id, selection.problems_summary())
    selection.samples = [
        parsed.to_sample(index, source_id=selection.source_id) for index, parsed in reservoir
    ]
    return selection


def _bounded(
    source: Source, stream: RecordStream, n: int | None, scan_limit: int, rng: random.Random
) -> Iterator[Entry]:
    """The entries a selection reads, at most ``scan_limit`` of them (see ``select_samples``)."""
    if scan_limit < 1:
        raise ValueError(f"scan_limit must be a positive integer or None, got {scan_limit!r}")
    size = _random_access_size(source)
    if size is not None and size > scan_limit:
        want = max(CANDIDATES_PER_SAMPLE * (n or 0), MIN_CANDIDATES)
        picks = sorted(rng.sample(range(size), min(size, want, scan_limit)))
        logger.info("%s: %d records; sampling among %d drawn uniformly from all of them",
                    stream.source_id, size, len(picks))
        yield from _indexed_entries(source, picks, stream.source_id)
        return
    for count, entry in enumerate(stream.entries):
        if count == scan_limit:
            logger.warning(
                "%s: read the first %d records only (scan_limit); the prompts are chosen "
                "among those, reproducibly. Pass a sized dataset (a datasets.Dataset or a list) "
                "to sample over all of it, or raise scan_limit", stream.source_id, scan_limit)
            return
        yield entry


def _random_access_size(source: Source) -> int | None:
    """The length of a sized source whose rows can be read by index, else None."""
    if isinstance(source, (str, bytes, os.PathLike)) or isinstance(source, Mapping):
        return None
    if not (hasattr(source, "__len__") and hasattr(source, "__getitem__")):
        return None
    try:
        return len(source)  # type: ignore[arg-type]
    except TypeError:
        return None


def _indexed_entries(source: Any, picks: list[int], name: str) -> Iterator[Entry]:
    for index in picks:
        item = source[index]
        if isinstance(item, Mapping):
            yield SourceRecord(index, None, dict(item))
        else:
            yield LineProblem(name, None, f"not a JSON object (got {type(item).__name__})", index)


def _check_usable(selection: SampleSelection) -> None:
    if selection.total_records == 0:
        raise DataError(f"{selection.source_id}: no records")
    if selection.valid_records == 0:
        hint = ""
        if selection.malformed_count == selection.total_records:
            hint = " (expected a JSON array of objects, or JSON Lines: one object per line)"
        raise DataError(
            f"{selection.source_id}: no usable record among "
            f"{_plural(selection.total_records, 'entry', 'entries')}: "
            f"{selection.problems_summary()}{hint}",
            detail={
                "skipped": selection.skipped,
                "malformed": [str(p) for p in selection.malformed[:_PROBLEMS_IN_MESSAGES]],
                "malformed_count": selection.malformed_count,
            },
        )


def _plural(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count == 1 else (plural or singular + 's')}"
