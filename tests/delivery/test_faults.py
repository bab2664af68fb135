"""The fault matrix on the store path (and the faults test_sink_http.py does not cover).

Every test records through a real ``Recorder`` into a real database (SQLite file, PostgreSQL)
or server, injects one fault, and checks the database: every row exactly once. "Down" is a
``TcpProxy`` in front of the real PostgreSQL that refuses connections until restored; "locked"
is another connection holding SQLite's write lock. No test depends on a sub-second budget: a
record that waited for set-up would wait the 22-30 s the failures measured, so "never blocks"
is checked against a 5 s bound (and by ordering: it returned while the fault still held).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from predwatch.delivery import Spool, StoreSink
from predwatch.generation.fake import FakeGenerator
from predwatch.recording.recorder import Recorder
from predwatch.records import EvalPoint, Prediction, prompt_identity
from predwatch.storage import open_store
from predwatch.testing import TcpProxy, predwatch_command

PROMPTS = 8
SAMPLES = [{"prompt": f"question {i}", "completion": f"answer {i}"} for i in range(PROMPTS)]
NEVER_BLOCKS_S = 5.0  # generous: the failures measured blocked 22-30 s


def recorder(db: str, spool: Path, samples: list[dict[str, str]] = SAMPLES) -> Recorder:
    return Recorder({"sample_count": len(samples)}, samples=samples, db=db, run_id="job",
                    spool_dir=str(spool))


def record(rec: Recorder, step: int) -> float:
    """Record one point; returns how long the training thread was held."""
    started = time.monotonic()
    assert rec.record(generator=FakeGenerator(), step=step) is not None
    return time.monotonic() - started


def assert_exactly_once(db: str, steps: tuple[int, ...], run: str = "job",
                        prompts: int = PROMPTS) -> None:
    with open_store(db) as store:
        rows = store.list_predictions(run, limit=10_000).items
        points = store.eval_points(run)
    keys = [(p.step, p.sample_index) for p in rows]
    assert len(keys) == len(set(keys)) == prompts * len(steps)
    assert sorted(p.step for p in points) == sorted(steps)


@pytest.mark.postgres
def test_postgresql_down_at_start_loses_nothing_and_holds_training_up_for_nothing(
    pg_proxy: tuple[TcpProxy, str], postgres_url: str, tmp_path: Path
) -> None:
    proxy, url = pg_proxy
    proxy.cut()  # PostgreSQL is not reachable when training starts
    rec = recorder(url, tmp_path / "spool")
    held = [record(rec, step) for step in (10, 20, 30)]
    assert max(held) < NEVER_BLOCKS_S
    assert len(Spool(tmp_path / "spool").files()) == 3  # every point waits on disk
    proxy.restore()  # it is back
    assert rec.close(timeout=60) == 0  # nothing lost, and close says so
    assert_exactly_once(postgres_url, (10, 20, 30))
    with open_store(postgres_url) as store:
        assert store.get_run("job").status == "finished"
    assert not Spool(tmp_path / "spool").files()


@pytest.mark.postgres
def test_postgresql_restart_mid_run_loses_nothing(pg_proxy: tuple[TcpProxy, str],
                                                  postgres_url: str, tmp_path: Path) -> None:
    proxy, url = pg_proxy
    rec = recorder(url, tmp_path / "spool")
    record(rec, 10)
    assert rec.sink.flush(timeout=60) == 0
    proxy.cut()  # a restart: open connections die, new ones are refused
    assert record(rec, 20) < NEVER_BLOCKS_S
    assert rec.sink.flush(timeout=10) == 1
    proxy.restore()
    record(rec, 30)
    assert rec.close(timeout=60) == 0
    assert_exactly_once(postgres_url, (10, 20, 30))


@pytest.mark.postgres
def test_close_says_what_is_undelivered_while_postgresql_stays_down(
    pg_proxy: tuple[TcpProxy, str], postgres_url: str, tmp_path: Path
) -> None:
    proxy, url = pg_proxy
    proxy.cut()
    rec = recorder(url, tmp_path / "spool")
    record(rec, 10)
    # Not "nothing undelivered": the point and the run's finish, in the spool.
    assert rec.close(timeout=1) == 2
    proxy.restore()
    done = subprocess.run(predwatch_command("replay", "--spool", str(tmp_path / "spool"),
                                            "--db", url),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "marked run job finished" in done.stdout
    assert_exactly_once(postgres_url, (10,))
    with open_store(postgres_url) as store:
        assert store.get_run("job").status == "finished"
    assert not Spool(tmp_path / "spool").files()


def run_status(db: str, run: str = "job") -> str:
    with open_store(db) as store:
        return store.get_run(run).status


@pytest.mark.postgres
def test_a_database_down_at_close_gets_the_runs_finish_from_replay(
    pg_proxy: tuple[TcpProxy, str], postgres_url: str, tmp_path: Path
) -> None:
    proxy, url = pg_proxy
    rec = recorder(url, tmp_path / "spool")
    record(rec, 10)
    assert rec.sink.flush(timeout=60) == 0  # the point is stored...
    proxy.cut()  # ...and the database goes away just before training ends
    started = time.monotonic()
    assert rec.close(timeout=1) == 1  # the finish waits in the spool, and close says so
    assert time.monotonic() - started < NEVER_BLOCKS_S
    (left,) = Spool(tmp_path / "spool").files()
    assert "-finish-" in left.name
    proxy.restore()
    assert run_status(postgres_url) == "running"  # measured before: never marked finished
    for _ in range(2):  # replayed twice: the second finds nothing and duplicates nothing
        done = subprocess.run(predwatch_command("replay", "--spool", str(tmp_path / "spool"),
                                                "--db", url),
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    assert run_status(postgres_url) == "finished"
    assert_exactly_once(postgres_url, (10,))
    assert not Spool(tmp_path / "spool").files()


@pytest.mark.postgres
def test_a_database_back_during_close_gets_the_finish_from_the_workers_retries(
    pg_proxy: tuple[TcpProxy, str], postgres_url: str, tmp_path: Path
) -> None:
    proxy, url = pg_proxy
    rec = recorder(url, tmp_path / "spool")
    record(rec, 10)
    assert rec.sink.flush(timeout=60) == 0
    proxy.cut()
    record(rec, 20)
    back = threading.Timer(1.5, proxy.restore)
    back.start()
    assert rec.close(timeout=60) == 0  # retried until it answered: the point, then the finish
    back.join()
    assert run_status(postgres_url) == "finished"
    assert_exactly_once(postgres_url, (10, 20))
    assert not Spool(tmp_path / "spool").files()


def test_a_failed_run_is_marked_failed_after_its_points_even_when_replayed(
    tmp_path: Path,
) -> None:
    """SQLite locked while training ends (another writer holds it): the points and the
    finish wait in the spool; whoever delivers them (the worker once the lock is gone, or
    replay) stores the points once and then marks the run failed."""
    db = tmp_path / "locked.db"
    lock = hold_write_lock(db)
    rec = recorder(f"sqlite:///{db}", tmp_path / "spool")
    record(rec, 10)
    record(rec, 20)
    assert rec.close(status="failed", timeout=0.5) == 3  # two points and the finish
    names = [p.name for p in Spool(tmp_path / "spool").files()]
    assert "-finish-" in names[-1]  # delivered last
    lock.rollback()
    lock.close()
    done = subprocess.run(predwatch_command("replay", "--spool", str(tmp_path / "spool")),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert run_status(f"sqlite:///{db}") == "failed"
    assert_exactly_once(f"sqlite:///{db}", (10, 20))
    assert not Spool(tmp_path / "spool").files()


def hold_write_lock(path: Path) -> sqlite3.Connection:
    """Another process's long write transaction on the database file."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("CREATE TABLE IF NOT EXISTS other_app (x)")
    return conn


def test_sqlite_locked_at_start_neither_blocks_training_nor_loses_rows(tmp_path: Path) -> None:
    db = tmp_path / "locked.db"
    lock = hold_write_lock(db)
    rec = recorder(f"sqlite:///{db}", tmp_path / "spool")
    held = [record(rec, step) for step in (10, 20)]
    assert max(held) < NEVER_BLOCKS_S  # measured before: 30 s (the busy timeout), then lost
    assert len(Spool(tmp_path / "spool").files()) == 2  # returned while the lock was held
    lock.rollback()
    lock.close()
    assert rec.close(timeout=60) == 0
    assert_exactly_once(f"sqlite:///{db}", (10, 20))


def test_sqlite_locked_mid_run_delays_delivery_not_training(sqlite_url: str,
                                                           tmp_path: Path) -> None:
    rec = recorder(sqlite_url, tmp_path / "spool")
    record(rec, 10)
    assert rec.sink.flush(timeout=60) == 0
    lock = hold_write_lock(Path(sqlite_url.removeprefix("sqlite:///")))
    assert record(rec, 20) < NEVER_BLOCKS_S
    assert len(Spool(tmp_path / "spool").files()) == 1
    lock.rollback()
    lock.close()
    assert rec.close(timeout=60) == 0
    assert_exactly_once(sqlite_url, (10, 20))


def test_an_unwritable_spool_delivers_from_memory(sqlite_url: str, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")  # a file where the spool directory should be (root ignores modes)
    rec = recorder(sqlite_url, blocked / "spool")
    with caplog.at_level("ERROR", logger="predwatch"):
        record(rec, 10)
    assert "could not spool step 10" in caplog.text  # said once, loudly
    record(rec, 20)
    assert rec.close(timeout=60) == 0
    assert_exactly_once(sqlite_url, (10, 20))


DISK_FULL = textwrap.dedent("""
    import resource, signal, sys
    from predwatch.generation.fake import FakeGenerator
    from predwatch.recording.recorder import Recorder
    db, spool = sys.argv[1], sys.argv[2]
    samples = [{"prompt": f"question {i}", "completion": f"answer {i}"} for i in range(8)]
    rec = Recorder({"sample_count": 8}, samples=samples, db=db, run_id="job", spool_dir=spool)
    rec.start()
    assert rec.sink.flush(timeout=60) == 0  # the database is open (its file may grow)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, resource.RLIM_INFINITY))
    for step in (10, 20):
        rec.record(generator=FakeGenerator(), step=step)
    print("undelivered", rec.close(timeout=60), flush=True)
""")


@pytest.mark.postgres
def test_a_full_spool_disk_delivers_from_memory(postgres_url: str, tmp_path: Path) -> None:
    """Files can grow to 64 bytes (RLIMIT_FSIZE, in a child process): the spool cannot take a
    batch; PostgreSQL, in its own process, can."""
    done = subprocess.run([sys.executable, "-c", DISK_FULL, postgres_url,
                           str(tmp_path / "spool")], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "undelivered 0" in done.stdout
    assert "could not spool step 10" in done.stderr
    assert_exactly_once(postgres_url, (10, 20))


OPEN_AT_ONCE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from predwatch.storage import open_store
    db, go = sys.argv[1], Path(sys.argv[2])
    while not go.exists():
        time.sleep(0.001)
    with open_store(db) as store:
        print("opened", store.url, flush=True)
""")


def test_two_first_opens_of_one_new_sqlite_file_both_succeed(tmp_path: Path) -> None:
    """A sweep started in one directory: several jobs create one new database at once."""
    for attempt in range(2):
        db, go = f"sqlite:///{tmp_path / f'sweep{attempt}.db'}", tmp_path / f"go{attempt}"
        jobs = [subprocess.Popen([sys.executable, "-c", OPEN_AT_ONCE, db, str(go)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(3)]
        time.sleep(1.0)  # let them all import and wait at the line (not a budget: a head start)
        go.touch()
        outputs = [job.communicate(timeout=120) for job in jobs]
        for job, (out, err) in zip(jobs, outputs, strict=True):
            assert job.returncode == 0, err
            assert "opened" in out
        with open_store(db) as store:
            assert store.list_runs().total == 0


def test_duplicate_prompts_are_two_rows_through_the_store(sqlite_url: str,
                                                          tmp_path: Path) -> None:
    """Answers that share a prompt (same prompt_id; their own sample_index and sample_number)
    are rows of their own, also when the batch is delivered twice (a lost answer, a replay)."""
    sink = StoreSink(url=sqlite_url, spool_dir=tmp_path / "spool")
    same = prompt_identity("the same question")
    rows = [Prediction(run_id="job", step=10, sample_index=i, prompt="the same question",
                       prompt_id=same, sample_number=i, prediction=f"answer {i}")
            for i in range(4)]
    sink.submit(EvalPoint(run_id="job", step=10), rows)
    sink.submit(EvalPoint(run_id="job", step=10), rows)  # sent again
    assert sink.close(timeout=60) == 0
    assert_exactly_once(sqlite_url, (10,), prompts=4)


KILLED = textwrap.dedent("""
    import sys, time
    from predwatch.generation.fake import FakeGenerator
    from predwatch.recording.recorder import Recorder
    db, spool = sys.argv[1], sys.argv[2]
    samples = [{"prompt": f"question {i}", "completion": f"answer {i}"} for i in range(8)]
    rec = Recorder({"sample_count": 8}, samples=samples, db=db, run_id="job", spool_dir=spool)
    for step in (10, 20, 30):
        rec.record(generator=FakeGenerator(), step=step)
        print("recorded", step, flush=True)
    time.sleep(120)
""")


@pytest.mark.postgres
def test_a_provisional_start_then_kill_9_then_replay_loses_nothing(
    pg_proxy: tuple[TcpProxy, str], postgres_url: str, tmp_path: Path
) -> None:
    proxy, url = pg_proxy
    proxy.cut()  # never reachable while the job lives
    child = subprocess.Popen([sys.executable, "-c", KILLED, url, str(tmp_path / "spool")],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert [child.stdout.readline().strip() for _ in range(3)] == [
            "recorded 10", "recorded 20", "recorded 30"]
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        child.stdout.close()  # type: ignore[union-attr]
    assert len(Spool(tmp_path / "spool").files()) == 3
    done = subprocess.run(predwatch_command("replay", "--spool", str(tmp_path / "spool"),
                                            "--db", postgres_url),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{3 * PROMPTS} newly stored" in done.stdout
    assert_exactly_once(postgres_url, (10, 20, 30))


def test_a_store_sink_given_an_open_store_still_opens_the_run_off_the_training_thread(
    sqlite_url: str, tmp_path: Path
) -> None:
    store = open_store(sqlite_url)
    sink = StoreSink(store, spool_dir=tmp_path / "spool")
    rec = Recorder({"sample_count": 3}, samples=SAMPLES, sink=sink, run_id="job")
    rec.start()
    assert sink.flush(timeout=60) == 0
    assert store.get_run("job").status == "running"  # opened by the worker, before any point
    rec.close()
    assert store.get_run("job").status == "finished"
    store.close()
