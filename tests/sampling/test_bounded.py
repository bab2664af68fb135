"""A selection reads a bounded number of records, whatever the size of the source."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from predwatch.sampling import DEFAULT_SCAN_LIMIT, select_samples


def endless() -> Iterator[dict[str, Any]]:
    for i in itertools.count():
        yield {"prompt": f"q{i}", "completion": f"a{i}"}


def test_an_endless_stream_is_read_up_to_the_scan_limit(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="predwatch.sampling"):
        first = select_samples(endless(), 5, seed=1, scan_limit=1000)
    again = select_samples(endless(), 5, seed=1, scan_limit=1000)
    assert first.total_records == 1000
    assert [s.prompt for s in first.samples] == [s.prompt for s in again.samples]
    assert all(s.source_index < 1000 for s in first.samples)
    assert "read the first 1000 records only" in caplog.text


def test_the_default_limit_ends_an_endless_iterable_dataset() -> None:
    datasets = pytest.importorskip("datasets")
    stream = datasets.IterableDataset.from_generator(endless)
    selection = select_samples(stream, 3, seed=0)
    assert selection.total_records == DEFAULT_SCAN_LIMIT
    assert len(selection.samples) == 3


def test_a_large_sized_source_is_sampled_over_its_whole_length() -> None:
    rows = [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(50_000)]
    picked = select_samples(rows, 8, seed=3, scan_limit=1000)
    assert picked.total_records == 1000  # candidates read, not the 50,000
    assert max(s.source_index for s in picked.samples) > 1000  # drawn from all of it
    assert picked.samples == select_samples(rows, 8, seed=3, scan_limit=1000).samples
    assert [s.source_index for s in picked.samples] == sorted(s.source_index
                                                               for s in picked.samples)


def test_sources_within_the_limit_are_chosen_exactly_as_before() -> None:
    rows = [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(500)]
    bounded = select_samples(rows, 7, seed=42, scan_limit=500)
    unbounded = select_samples(rows, 7, seed=42, scan_limit=None)
    assert bounded.samples == unbounded.samples
    assert bounded.total_records == unbounded.total_records == 500


def test_a_bad_scan_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="scan_limit"):
        select_samples([{"prompt": "q", "completion": "a"}], 1, scan_limit=0)
