"""A stored prediction set is read off the training thread: a locked SQLite file or a hung
PostgreSQL costs ``start()`` and each evaluation point a bounded wait, never the 10-30 s of the
database's own timeouts; the points once the set is read are recorded from it, and a set that
cannot be read is said loudly. Real databases (``TcpProxy`` for a hung host)."""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

import pytest

from predwatch.generation.fake import FakeGenerator
from predwatch.recording import recorder as recorder_module
from predwatch.recording.recorder import Recorder
from predwatch.sets.files import read_items
from predwatch.storage import open_store
from predwatch.testing import TcpProxy

ITEMS = [{"prompt": f"q{i}", "completion": str(i)} for i in range(4)]
BOUND_S = 2.0  # what start() and a point may cost while the set cannot be read


def store_set(url: str) -> str:
    with open_store(url) as store:
        version, _ = store.create_set_version("golden", read_items(ITEMS))
    return version.set_id


def set_recorder(url: str, tmp_path: Path) -> Recorder:
    return Recorder({"source": "set", "set": "golden"}, db=url, run_id="job",
                    spool_dir=str(tmp_path / "spool"))


def timed(call: object, *args: object, **kwargs: object) -> tuple[object, float]:
    started = time.monotonic()
    result = call(*args, **kwargs)  # type: ignore[operator]
    return result, time.monotonic() - started


def exclusive_lock(path: Path) -> sqlite3.Connection:
    """Another process holding the file so that not even a reader gets in."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA locking_mode = EXCLUSIVE")
    conn.execute("BEGIN EXCLUSIVE")
    conn.execute("CREATE TABLE IF NOT EXISTS other_app (x)")
    return conn


def rows_by_step(url: str) -> dict[int, list[str | None]]:
    with open_store(url) as store:
        rows = store.list_predictions("job", limit=1000).items
    found: dict[int, list[str | None]] = {}
    for row in rows:
        found.setdefault(row.step, []).append(row.set_id)
    return found


def test_a_locked_sqlite_file_costs_start_and_each_point_a_bounded_wait(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    db = tmp_path / "p.db"
    url = f"sqlite:///{db}"
    set_id = store_set(url)
    lock = exclusive_lock(db)
    rec = set_recorder(url, tmp_path)
    with caplog.at_level(logging.INFO, logger="predwatch"):
        samples, held = timed(rec.start)
        # Measured before: 30 s (SQLite's busy timeout), then start() raised.
        assert held < BOUND_S and samples == []
        summary, held = timed(rec.record, generator=FakeGenerator(), step=10)
        assert held < BOUND_S and summary is None  # skipped, and said
    assert "still being read" in caplog.text
    assert "step 10 skipped: the prompts are still being read" in caplog.text
    lock.rollback()
    lock.close()
    deadline = time.monotonic() + 30
    summary = None
    step = 20
    while summary is None and time.monotonic() < deadline:  # the next points, once it is read
        summary = rec.record(generator=FakeGenerator(), step=step)
        step += 10
    assert summary is not None and summary.sample_count == len(ITEMS)
    assert rec.close(timeout=30) == 0
    found = rows_by_step(url)
    assert list(found) == [step - 10] and found[step - 10] == [set_id] * len(ITEMS)


@pytest.mark.postgres
def test_a_hung_postgresql_costs_training_a_bounded_wait_and_recording_resumes(
    pg_proxy: tuple[TcpProxy, str], postgres_url: str, tmp_path: Path,
) -> None:
    proxy, url = pg_proxy
    set_id = store_set(postgres_url)
    proxy.stall()  # the host accepts connections and answers nothing
    rec = set_recorder(url, tmp_path)
    samples, held = timed(rec.start)
    assert held < BOUND_S and samples == []  # measured before: 10 s (connect timeout)
    summary, held = timed(rec.record, generator=FakeGenerator(), step=10)
    assert held < BOUND_S and summary is None
    proxy.restore()  # before the connect timeout: the read goes on and completes
    deadline = time.monotonic() + 30
    step = 20
    while summary is None and time.monotonic() < deadline:
        summary = rec.record(generator=FakeGenerator(), step=step)
        step += 10
    assert summary is not None
    assert rec.close(timeout=30) == 0
    found = rows_by_step(postgres_url)
    assert list(found) == [step - 10] and found[step - 10] == [set_id] * len(ITEMS)


@pytest.mark.postgres
def test_a_set_that_cannot_be_read_is_logged_and_retried_later(
    pg_proxy: tuple[TcpProxy, str], postgres_url: str, tmp_path: Path,
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy, url = pg_proxy
    store_set(postgres_url)
    proxy.stall()
    rec = set_recorder(url, tmp_path)
    with caplog.at_level(logging.ERROR, logger="predwatch"):
        _, held = timed(rec.start)
        assert held < BOUND_S
        loading = rec._loading
        assert loading is not None
        loading._done.wait(60)  # the connect timeout (10 s) ends the read
    assert "could not read the prompts (set 'golden' from postgresql" in caplog.text
    # The next point is skipped at once (the error is raised there and retried later).
    monkeypatch.setattr(recorder_module, "START_RETRY_S", 0.0)
    with caplog.at_level(logging.ERROR, logger="predwatch"):
        summary, held = timed(rec.record, generator=FakeGenerator(), step=10)
    assert summary is None and held < BOUND_S
    assert "could not set up recording (attempt 1); step 10 skipped" in caplog.text
    proxy.restore()
    deadline = time.monotonic() + 30
    step = 20
    while summary is None and time.monotonic() < deadline:  # a new read, which succeeds
        summary = rec.record(generator=FakeGenerator(), step=step)
        step += 10
    assert summary is not None and summary.sample_count == len(ITEMS)
    rec.close(timeout=30)
