"""The store sink's delivery guarantees: spool first, never lose a row, never stall a close."""
# The spool, the worker and the store destination, composed as ``StoreSink``.

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from predwatch.delivery import Batch, Spool, StoreSink
from predwatch.delivery.replay import replay_spool
from predwatch.errors import PayloadError
from predwatch.records import EvalPoint, Prediction, Run, prompt_identity
from predwatch.storage import open_store


def rows(run: str, step: int, n: int = 3, **fields: Any) -> list[Prediction]:
    return [
        Prediction(run_id=run, step=step, sample_index=i, prompt=f"q{i}",
                   prompt_id=prompt_identity(f"q{i}"), prediction=f"a{i}", **fields)
        for i in range(n)
    ]


class SlowStore:
    """A real store whose writes wait for a signal (a training job's writer mid-delivery)."""

    def __init__(self, store: Any) -> None:
        self.store, self.url, self.engine = store, store.url, store.engine
        self.go = threading.Event()
        self.writes = 0

    def ensure_run(self, run: Run) -> Run:
        return self.store.ensure_run(run)

    def write_eval_point(self, point: EvalPoint, predictions: list[Prediction]) -> int:
        self.go.wait(30)
        self.writes += 1
        return self.store.write_eval_point(point, predictions)


def test_a_submitted_batch_is_on_disk_before_it_is_delivered(sqlite_url: str,
                                                              tmp_path: Path) -> None:
    store = open_store(sqlite_url)
    slow = SlowStore(store)
    sink = StoreSink(slow, spool_dir=tmp_path / "spool")
    sink.submit(EvalPoint(run_id="r", step=1), rows("r", 1))
    files = Spool(tmp_path / "spool").files()
    assert len(files) == 1  # spooled before submit returned, while the write still waits
    assert sink.close(timeout=0.2) == 1  # a close that gives up says so, and the file stays
    assert Spool(tmp_path / "spool").files() == files
    # The process dies here with its writer still stuck; replay delivers the batch.
    result = replay_spool(tmp_path / "spool", db_url=sqlite_url)
    assert (result.batches, result.inserted) == (1, 3)
    assert store.list_predictions("r").total == 3
    slow.go.set()  # (release the stuck writer: its late write inserts nothing more)
    store.close()


def test_an_exit_without_close_loses_nothing(tmp_path: Path) -> None:
    """A training script that dies right after recording: every row reaches the database
    exactly once, through the writer or through ``predwatch replay``."""
    db = tmp_path / "exit.db"
    script = textwrap.dedent(f"""
        import os
        from predwatch.generation.fake import FakeGenerator
        from predwatch.recording.recorder import Recorder
        samples = [{{"prompt": f"q{{i}}", "completion": "a"}} for i in range(5)]
        rec = Recorder({{"sample_count": 5}}, samples=samples, db="sqlite:///{db}",
                       run_id="crash", spool_dir="{tmp_path / 'spool'}")
        for step in (10, 20, 30):
            rec.record(generator=FakeGenerator(), step=step)
        os._exit(0)  # no close(), no atexit: the writer thread dies with the process
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    replay_spool(tmp_path / "spool")  # the spooled target is the same file
    store = open_store(f"sqlite:///{db}")
    assert store.list_predictions("crash").total == 15
    assert [p.step for p in store.eval_points("crash")] == [10, 20, 30]
    store.close()


def test_the_spool_names_an_absolute_sqlite_file(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///relative.db")
    sink = StoreSink(store, spool_dir=tmp_path / "spool")
    assert sink.target == f"sqlite:///{tmp_path.resolve() / 'relative.db'}"
    sink.close(timeout=1)
    store.close()


def test_replay_never_creates_a_database_a_batch_was_not_headed_for(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    missing = tmp_path / "gone" / "predwatch.db"
    spool.put(Batch(run_id="r", point=EvalPoint(run_id="r", step=1), predictions=rows("r", 1)),
              target=f"sqlite:///{missing}")
    result = replay_spool(tmp_path / "spool")
    assert result.batches == 0 and result.pending == 1
    assert "does not exist" in result.problems[0] and not missing.exists()


def test_a_refused_batch_does_not_block_the_ones_after_it(sqlite_url: str,
                                                          tmp_path: Path) -> None:
    store = open_store(sqlite_url)
    sink = StoreSink(store, spool_dir=tmp_path / "spool")
    spool = sink.spool
    bad = Batch(run_id="r", point=EvalPoint(run_id="r", step=1), predictions=rows("r", 2))
    spool.put(bad, target=sink.target)  # rows of step 2 under point 1: refused every time
    time.sleep(0.01)
    spool.put(Batch(run_id="r", point=EvalPoint(run_id="r", step=3), predictions=rows("r", 3)),
              target=sink.target)
    with pytest.raises(PayloadError):
        sink.destination.deliver(bad, time.monotonic() + 1)
    assert sink.flush(timeout=10) == 1  # the refused one stays; the one after it is stored
    assert [p.step for p in store.eval_points("r")] == [3]
    assert sink.delivered_batches == 1
    sink.close(timeout=1)
    store.close()


def test_flush_keeps_to_its_deadline_with_a_long_spool(sqlite_url: str, tmp_path: Path) -> None:
    store = open_store(sqlite_url)
    slow = SlowStore(store)
    slow.go.set()
    original = slow.write_eval_point

    def slow_write(point: EvalPoint, predictions: list[Prediction]) -> int:
        time.sleep(0.1)
        return original(point, predictions)

    slow.write_eval_point = slow_write  # type: ignore[method-assign]
    sink = StoreSink(slow, spool_dir=tmp_path / "spool")
    for step in range(40):
        sink.spool.put(Batch(run_id="r", point=EvalPoint(run_id="r", step=step),
                             predictions=rows("r", step, 1)), target=sink.target)
    started = time.monotonic()
    left = sink.flush(timeout=0.5)
    assert time.monotonic() - started < 2.0  # 40 x 0.1 s would be 4 s
    assert 0 < left < 40
    sink.close(timeout=30)
    assert store.list_predictions("r").total == 40
    store.close()


@pytest.mark.parametrize("run_id", ["team/exp-1", "x" * 300, "../../etc", "sp ace\u00e9"])
def test_any_run_id_can_be_spooled(tmp_path: Path, run_id: str) -> None:
    spool = Spool(tmp_path / "spool")
    path = spool.put(Batch(run_id=run_id, point=EvalPoint(run_id=run_id, step=1),
                           predictions=rows(run_id, 1)))
    assert path.parent == spool.directory and len(path.name) < 160
    assert spool.load(path).run_id == run_id


def test_nul_characters_are_stripped_on_postgresql_and_kept_on_sqlite(db_url: str) -> None:
    store = open_store(db_url)
    row = Prediction(run_id="r", step=1, sample_index=0, prompt="a\x00b",
                     prompt_id=prompt_identity("a\x00b"), prediction="c\x00d",
                     metrics={"x\x00": 1.0}, generation_params={"stop": ["\x00"], "raw": "\\u0000"})
    assert store.write_eval_point(EvalPoint(run_id="r", step=1), [row]) == 1
    back = store.point_predictions("r", 1)[0]
    if db_url.startswith("postgresql"):
        assert (back.prompt, back.prediction, back.metrics) == ("ab", "cd", {"x": 1.0})
        assert back.generation_params == {"stop": [""], "raw": "\\u0000"}
    else:
        assert (back.prompt, back.prediction) == ("a\x00b", "c\x00d")
    store.close()


def test_spool_files_of_a_sink_are_private_to_its_target(tmp_path: Path,
                                                         sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    sink = StoreSink(store, spool_dir=tmp_path / "spool")
    other = Batch(run_id="r", point=EvalPoint(run_id="r", step=1), predictions=rows("r", 1))
    sink.spool.put(other, target="sqlite:////elsewhere.db")
    assert sink.pending() == 0 and sink.flush(timeout=10) == 0
    assert len(os.listdir(tmp_path / "spool")) == 1
    sink.close(timeout=1)
    store.close()


def test_a_long_foreign_spool_is_read_once_not_after_every_delivery(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(sqlite_url)
    sink = StoreSink(store, spool_dir=tmp_path / "spool")
    for step in range(20):  # another job's batches, in a shared spool directory
        sink.spool.put(Batch(run_id="x", point=EvalPoint(run_id="x", step=step),
                             predictions=rows("x", step, 1)), target="sqlite:////elsewhere.db")
    loads = 0
    original = Spool.load

    def counted(self: Spool, path: Path) -> Batch:
        nonlocal loads
        loads += 1
        return original(self, path)

    monkeypatch.setattr(Spool, "load", counted)
    for step in range(5):
        sink.submit(EvalPoint(run_id="r", step=step), rows("r", step))
        assert sink.flush(timeout=10) == 0
    assert store.list_predictions("r").total == 15
    assert loads <= 25, loads  # about once each; a scan per delivery would be 5 x 20 and more
    sink.close(timeout=1)
    store.close()
