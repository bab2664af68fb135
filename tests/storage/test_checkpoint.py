"""WAL checkpoints of a SQLite store run on their own thread, not inside a write's commit."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from predwatch.records import EvalPoint, Prediction, prompt_identity
from predwatch.storage import open_store
from predwatch.storage.checkpoint import FALLBACK_PAGES, WalCheckpointer


def pred(step: int, i: int, run: str) -> Prediction:
    prompt = f"question {i}"
    return Prediction(run_id=run, step=step, sample_index=i, prompt_id=prompt_identity(prompt),
                      prompt=prompt, prediction=f"answer {i} at {step}")


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _checkpoint_threads(path: Path | None = None) -> list[threading.Thread]:
    """Checkpoint threads alive now: of the file ``path``, or of any file (another test's
    thread may still be running out its idle time: the fault tests leave one on a locked file)."""
    name = "predwatch-wal-checkpoint" + (f":{path.name}" if path is not None else "")
    return [t for t in threading.enumerate() if t.name.startswith(name)]


def test_the_thread_copies_what_was_written_into_the_database_file(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    store = open_store(f"sqlite:///{path}")
    try:
        with store.engine.connect() as conn:
            # The commit's own checkpoint is only the fallback bound (was SQLite's 1,000 pages,
            # which 150 small rows never reach: only the thread can have copied them).
            pages = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
        assert pages == FALLBACK_PAGES
        checkpointer = store._checkpointer
        assert checkpointer is not None
        for step in range(3):
            store.write_eval_point(EvalPoint(run_id="r", step=step),
                                   [pred(step, i, run="r") for i in range(50)])

        def rows_in_database_file() -> int:
            # immutable=1 reads the database file alone, ignoring the WAL: the rows are there
            # only once a checkpoint copied them (while pages are half-copied, it may not read).
            raw = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
            try:
                return int(raw.execute("SELECT count(*) FROM predictions").fetchone()[0])
            except sqlite3.DatabaseError:
                return -1
            finally:
                raw.close()

        _wait_for(lambda: rows_in_database_file() == 150)
        assert checkpointer.checkpoints >= 1
        assert len(store.point_predictions("r", 2)) == 50
    finally:
        store.close()
    # The last connection's close checkpoints the rest and removes the WAL, as before.
    assert not (tmp_path / "p.db-wal").exists()
    assert not any(t.is_alive() for t in _checkpoint_threads(path))


def test_an_idle_thread_ends_and_the_next_write_starts_another(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    sqlite3.connect(path).execute("PRAGMA journal_mode = WAL").fetchall()
    checkpointer = WalCheckpointer(path, interval=0.01, idle_exit=0.05)
    try:
        checkpointer.wrote()
        first = checkpointer._thread
        assert first is not None
        first.join(5)
        assert not first.is_alive()  # nothing written for idle_exit: nothing left running
        assert checkpointer.checkpoints == 1
        checkpointer.wrote()
        _wait_for(lambda: checkpointer.checkpoints == 2)
        assert checkpointer._thread is not first
    finally:
        checkpointer.close()
    checkpointer.wrote()  # after close: no new thread
    assert checkpointer._thread is not None and not checkpointer._thread.is_alive()


def test_a_failing_checkpoint_is_logged_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "no-such-dir" / "p.db"  # sqlite3 cannot open it
    checkpointer = WalCheckpointer(missing, interval=0.01, idle_exit=5)
    with caplog.at_level(logging.WARNING, logger="predwatch.storage.checkpoint"):
        for _ in range(5):
            checkpointer.wrote()
            time.sleep(0.03)
        checkpointer.close()
    messages = [r.getMessage() for r in caplog.records if "WAL checkpoint" in r.getMessage()]
    assert len(messages) == 1 and str(missing) in messages[0]
    assert checkpointer.checkpoints == 0


def test_memory_databases_have_no_checkpoint_thread() -> None:
    before = set(_checkpoint_threads())
    store = open_store("sqlite://")
    try:
        assert store._checkpointer is None
        store.write_eval_point(EvalPoint(run_id="r", step=0), [pred(0, 0, run="r")])
        assert not set(_checkpoint_threads()) - before
    finally:
        store.close()
