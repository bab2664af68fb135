"""ApiSink against a real ``predwatch serve`` process over real HTTP, with injected faults.

A small HTTP proxy sits between the sink and the server and misbehaves on ingest requests as a
test scripts it: drop the connection, answer 500, answer 429 with Retry-After, stall past the
client's timeout, or forward the request and then drop the answer (the server stored the rows
but the client does not know). Every test then checks the database: every row exactly once.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from predwatch.config import env_flag, env_value
from predwatch.delivery import ApiSink
from predwatch.generation.fake import FakeGenerator
from predwatch.recording.recorder import Recorder
from predwatch.storage import open_store
from predwatch.testing import (
    FaultProxy,
    ServerHandle,
    create_postgres_database,
    drop_postgres_database,
    predwatch_command,
    start_server,
)

PROMPTS = 8
SAMPLES = [{"prompt": f"question {i}", "completion": f"answer {i}"} for i in range(PROMPTS)]
PG_ADMIN = env_value("PREDWATCH_TEST_POSTGRES_URL") or "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[ServerHandle, str]]:
    """A real server process (module-wide), on SQLite and on PostgreSQL."""
    name = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'server.db'}"
    else:
        try:
            name = f"predwatch_t_{uuid.uuid4().hex[:12]}"
            url = create_postgres_database(PG_ADMIN, name)
        except psycopg.OperationalError as exc:  # no server: skip as conftest does
            if env_flag("PREDWATCH_REQUIRE_POSTGRES"):
                pytest.fail(f"PostgreSQL not reachable at {PG_ADMIN}: {exc}")
            pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN}")
    handle = start_server(url)
    try:
        yield handle, url
    finally:
        handle.stop()
        if name is not None:
            drop_postgres_database(PG_ADMIN, name)


@pytest.fixture
def proxy(server: tuple[ServerHandle, str]) -> Iterator[FaultProxy]:
    p = FaultProxy(server[0].url)
    yield p
    p.close()


def new_run(base_url: str) -> tuple[str, str]:
    created = httpx.post(base_url + "/api/runs", json={}).json()
    return created["job_id"], created["token"]


def fast_sink(url: str, token: str | None, spool: Path, **kw: Any) -> ApiSink:
    options: dict[str, Any] = {"total_timeout": 5.0, "request_timeout": 2.0,
                               "backoff_base": 0.05, "backoff_max": 0.2}
    return ApiSink(url, token=token, spool_dir=spool, **{**options, **kw})


def record(sink: ApiSink, steps: tuple[int, ...]) -> Recorder:
    recorder = Recorder({"sample_count": PROMPTS}, samples=SAMPLES, sink=sink)
    for step in steps:
        assert recorder.record(generator=FakeGenerator(), step=step) is not None
    return recorder


def assert_exactly_once(db_url: str, run_id: str, steps: tuple[int, ...]) -> None:
    with open_store(db_url) as store:
        rows = store.list_predictions(run_id, limit=1000).items
        points = store.eval_points(run_id)
    keys = [(p.step, p.prompt_id) for p in rows]
    assert len(keys) == len(set(keys)) == PROMPTS * len(steps)
    assert sorted({p.step for p in rows}) == sorted(steps)
    assert [p.sample_count for p in points] == [PROMPTS] * len(steps)


@pytest.mark.parametrize("faults", [
    ["drop", "drop"], ["500", "500", "500"], ["stall:3"], ["forward-then-drop"],
], ids=["connection-drop", "http-500", "stall-past-timeout", "answer-lost"])
def test_transient_faults_are_retried_and_every_row_lands_once(
    server: tuple[ServerHandle, str], proxy: FaultProxy, tmp_path: Path, faults: list[str]
) -> None:
    run_id, token = new_run(server[0].url)
    proxy.faults.extend(faults)
    sink = fast_sink(proxy.url, token, tmp_path, request_timeout=0.5)
    recorder = record(sink, (10, 20))
    assert recorder.close(timeout=10) == 0
    assert len(proxy.ingest_times) == len(faults) + 2
    assert_exactly_once(server[1], run_id, (10, 20))
    assert not list(tmp_path.glob("*.json"))  # nothing left in the spool
    assert httpx.get(f"{server[0].url}/api/runs/{run_id}").json()["status"] == "finished"


def test_429_retry_after_is_honoured(server: tuple[ServerHandle, str], proxy: FaultProxy,
                                     tmp_path: Path) -> None:
    run_id, token = new_run(server[0].url)
    proxy.faults.extend(["429:1"])
    recorder = record(fast_sink(proxy.url, token, tmp_path), (10,))
    assert recorder.close(timeout=10) == 0
    first, second = proxy.ingest_times
    assert second - first >= 0.95  # waited as told, not the 0.05 s backoff
    assert_exactly_once(server[1], run_id, (10,))


def test_a_redirect_is_refused_not_taken_for_success(server: tuple[ServerHandle, str],
                                                      proxy: FaultProxy, tmp_path: Path) -> None:
    run_id, token = new_run(server[0].url)
    sink = fast_sink(proxy.url, token, tmp_path)
    recorder = record(sink, ())
    recorder.start()
    proxy.faults.extend(["302"])
    recorder.record(generator=FakeGenerator(), step=10)
    assert sink.flush(timeout=5) == 1  # refused, kept in the spool, not retried
    assert len(proxy.ingest_times) == 1
    sink.close(timeout=0)
    assert len(list(tmp_path.glob("*.json"))) == 1


def test_other_4xx_are_not_retried_and_stay_in_the_spool_for_replay(
    server: tuple[ServerHandle, str], proxy: FaultProxy, tmp_path: Path
) -> None:
    base = server[0].url
    run_id, token = new_run(base)
    sink = fast_sink(proxy.url, token, tmp_path)
    recorder = record(sink, ())
    recorder.start()
    httpx.delete(f"{base}/api/runs/{run_id}/tokens")  # revoke: the server now answers 401
    recorder.record(generator=FakeGenerator(), step=10)
    assert sink.flush(timeout=5) == 1
    assert len(proxy.ingest_times) == 1  # refused once, never retried
    sink.close(timeout=0)
    fresh = httpx.post(f"{base}/api/runs/{run_id}/tokens").json()["token"]
    done = subprocess.run(predwatch_command("replay", "--spool", str(tmp_path), "--server", base,
                                            "--token", fresh),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert f"{PROMPTS} newly stored" in done.stdout
    assert_exactly_once(server[1], run_id, (10,))


def test_server_down_mid_run_training_continues_and_the_next_round_delivers(
    server: tuple[ServerHandle, str], proxy: FaultProxy, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    run_id, token = new_run(server[0].url)
    sink = fast_sink(proxy.url, token, tmp_path, total_timeout=0.5)
    recorder = record(sink, (10,))
    assert sink.flush(timeout=5) == 0
    proxy.mode = "drop"  # the server is unreachable
    started = time.monotonic()
    recorder.record(generator=FakeGenerator(), step=20)
    assert time.monotonic() - started < 5  # training only spooled (the retries take 0.5 s)
    assert sink.flush(timeout=5) == 1  # retried for total_timeout, then left in the spool
    assert len(list(tmp_path.glob("*.json"))) == 1
    proxy.mode = "pass"  # back up: the next evaluation point also sends the spooled one
    recorder.record(generator=FakeGenerator(), step=30)
    with caplog.at_level(logging.ERROR, logger="predwatch"):
        assert recorder.close(timeout=10) == 0
    assert_exactly_once(server[1], run_id, (10, 20, 30))
    assert not list(tmp_path.glob("*.json"))


def test_train_end_waits_a_bounded_time_then_counts_pending_loudly(
    server: tuple[ServerHandle, str], proxy: FaultProxy, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    run_id, token = new_run(server[0].url)
    proxy.mode = "500"
    sink = fast_sink(proxy.url, token, tmp_path, total_timeout=30.0)
    recorder = record(sink, (10, 20))
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="predwatch"):
        assert recorder.close(timeout=1.0) == 3  # two points and the run's finish
    assert time.monotonic() - started < 10
    assert any("3 batch(es)" in r.getMessage() and "predwatch replay" in r.getMessage()
               and "the run's finish" in r.getMessage() for r in caplog.records)
    assert httpx.get(f"{server[0].url}/api/runs/{run_id}").json()["status"] == "running"
    proxy.mode = "pass"
    for _ in range(2):  # a second replay finds nothing to send and duplicates nothing
        done = subprocess.run(predwatch_command("replay", "--spool", str(tmp_path), "--server",
                                                proxy.url, "--token", token),
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        assert_exactly_once(server[1], run_id, (10, 20))
    assert httpx.get(f"{server[0].url}/api/runs/{run_id}").json()["status"] == "finished"
    assert not list(tmp_path.glob("*.json"))


TRAINING_SCRIPT = textwrap.dedent("""
    import sys, time
    from predwatch.generation.fake import FakeGenerator
    from predwatch.recording.recorder import Recorder
    from predwatch.delivery import ApiSink
    url, token, spool, prompts = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    samples = [{"prompt": f"question {i}", "completion": f"answer {i}"} for i in range(prompts)]
    sink = ApiSink(url, token=token, spool_dir=spool, total_timeout=120, request_timeout=120,
                    backoff_base=0.05, backoff_max=0.1)
    recorder = Recorder({"sample_count": prompts}, samples=samples, sink=sink)
    for step in (10, 20, 30):
        recorder.record(generator=FakeGenerator(), step=step)
        print("recorded", step, flush=True)
    time.sleep(120)
""")


def test_kill_9_mid_round_then_replay_gives_every_row_exactly_once(
    server: tuple[ServerHandle, str], proxy: FaultProxy, tmp_path: Path
) -> None:
    base, db_url = server
    run_id, token = new_run(base.url)
    # Step 10 is delivered; step 20 reaches the server but its answer is lost, and its retry
    # hangs; step 30 waits behind it. Then the training process is killed.
    proxy.faults.extend(["pass", "forward-then-drop", "stall:120"])
    spool = tmp_path / "spool"
    child = subprocess.Popen([sys.executable, "-c", TRAINING_SCRIPT, proxy.url, token, str(spool),
                              str(PROMPTS)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        lines = [child.stdout.readline().strip() for _ in range(3)]
        assert lines == ["recorded 10", "recorded 20", "recorded 30"]
        deadline = time.monotonic() + 60
        while len(proxy.ingest_times) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(proxy.ingest_times) == 3  # the retry of step 20 is in flight
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        child.stdout.close()  # type: ignore[union-attr]
    assert len(list(spool.glob("*.json"))) == 2  # steps 20 and 30, fsync'ed before submit returned
    done = subprocess.run(predwatch_command("replay", "--spool", str(spool), "--server", base.url,
                                            "--token", token),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert f"{2 * PROMPTS} rows, {PROMPTS} newly stored, {PROMPTS} already present" in done.stdout
    assert_exactly_once(db_url, run_id, (10, 20, 30))
    again = subprocess.run(predwatch_command("replay", "--spool", str(spool), "--server", base.url,
                                             "--token", token),
                           capture_output=True, text=True, timeout=120, check=False)
    assert "replayed 0 batch(es)" in again.stdout and again.returncode == 0


@pytest.mark.parametrize("with_token", [True, False])
def test_a_server_down_when_training_starts_loses_nothing(
    server: tuple[ServerHandle, str], proxy: FaultProxy, tmp_path: Path, with_token: bool,
) -> None:
    """The server is unreachable at set-up: recording goes on under the recorder's own run id,
    into the spool; once the server answers, the rows go to the token's run (or to a run
    created with that id), exactly once, and the run is marked finished."""
    base, db_url = server
    run_id, token = new_run(base.url) if with_token else (None, None)
    sink = fast_sink(proxy.url, token, tmp_path, total_timeout=0.5)
    recorder = Recorder({"sample_count": PROMPTS}, samples=SAMPLES, sink=sink, run_name="late")
    proxy.down = True
    started = time.monotonic()
    for step in (10, 20):
        assert recorder.record(generator=FakeGenerator(), step=step) is not None
    assert time.monotonic() - started < 5  # set-up waits on the delivery thread, not here
    assert sink.flush(timeout=5) == 2  # both points in the spool
    proxy.down = False
    assert recorder.record(generator=FakeGenerator(), step=30) is not None
    assert recorder.close(timeout=10) == 0
    expected = run_id or recorder.run.id
    assert recorder.run.id == expected
    assert_exactly_once(db_url, expected, (10, 20, 30))
    detail = httpx.get(f"{base.url}/api/runs/{expected}").json()
    assert detail["status"] == "finished"
    assert not list(tmp_path.glob("*.json"))


def test_replay_sends_a_provisional_batch_to_the_tokens_run(
    server: tuple[ServerHandle, str], proxy: FaultProxy, tmp_path: Path,
) -> None:
    base, db_url = server
    run_id, token = new_run(base.url)
    sink = fast_sink(proxy.url, token, tmp_path, total_timeout=0.3)
    proxy.down = True
    recorder = record(sink, (10,))
    sink.close(timeout=0)  # the job ends while the server is still down
    assert len(list(tmp_path.glob("*.json"))) == 1
    done = subprocess.run(predwatch_command("replay", "--spool", str(tmp_path), "--server",
                                            base.url, "--token", token),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert recorder.run.id != run_id  # the rows were recorded under the provisional id
    assert_exactly_once(db_url, run_id, (10,))


def test_without_a_token_the_sink_creates_its_run(server: tuple[ServerHandle, str],
                                                  tmp_path: Path) -> None:
    base, db_url = server
    sink = fast_sink(base.url, None, tmp_path)
    recorder = Recorder({"sample_count": PROMPTS}, samples=SAMPLES, sink=sink, run_name="auto")
    recorder.record(generator=FakeGenerator(), step=5)
    assert recorder.close(timeout=10) == 0
    assert sink.token and sink.token.startswith("pwr_")
    detail = httpx.get(f"{base.url}/api/runs/{recorder.run.id}").json()
    assert (detail["name"], detail["status"]) == ("auto", "finished")
    assert_exactly_once(db_url, recorder.run.id, (5,))


@pytest.mark.parametrize("fault", ["down", "stalled"])
def test_an_unreachable_or_stalled_server_at_start_never_holds_training_up(
    server: tuple[ServerHandle, str], proxy: FaultProxy, tmp_path: Path, fault: str,
) -> None:
    """With the default 30 s request timeout: the handshake happens on the delivery thread, so
    ``start`` and ``record`` return while the server still does not answer (measured before:
    22-24 s blocked when unreachable, 30 s when stalled)."""
    base, db_url = server
    run_id, token = new_run(base.url)
    sink = ApiSink(proxy.url, token=token, spool_dir=tmp_path, backoff_base=0.05,
                   backoff_max=0.2)
    recorder = Recorder({"sample_count": PROMPTS}, samples=SAMPLES, sink=sink)
    setattr(proxy, fault, True)
    started = time.monotonic()
    recorder.start()
    for step in (10, 20):
        assert recorder.record(generator=FakeGenerator(), step=step) is not None
    assert time.monotonic() - started < 5
    assert len(list(tmp_path.glob("*.json"))) == 2  # returned while the fault still held
    setattr(proxy, fault, False)
    assert recorder.close(timeout=60) == 0
    assert recorder.run.id == run_id
    assert_exactly_once(db_url, run_id, (10, 20))
