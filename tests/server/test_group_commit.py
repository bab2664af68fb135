"""Group commit: concurrent ingest requests of one process share a transaction (real SQLite and
PostgreSQL; the HTTP route through FastAPI's TestClient and a real ``predwatch serve``)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from predwatch.config import Settings
from predwatch.records import EvalPoint, Prediction
from predwatch.server import create_app
from predwatch.server.commit import GroupCommit
from predwatch.storage import SQLStore, open_store
from predwatch.storage.tables import predictions
from predwatch.testing import TcpProxy, start_server

INGEST = "/api/training/local/predictions"
WAIT_S = 30.0  # every wait in this file is bounded


def points(run_id: str, step: int = 1, n: int = 5, prompt: str = "q"
           ) -> list[tuple[EvalPoint, list[Prediction]]]:
    rows = [Prediction(run_id=run_id, step=step, prompt_id=f"p{i}", sample_index=i,
                       prompt=f"{prompt} {i}" if prompt != "poison" else prompt,
                       prediction="a") for i in range(n)]
    return [(EvalPoint(run_id=run_id, step=step), rows)]


def stored(store: SQLStore, run_id: str) -> int:
    with store.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(predictions)
                               .where(predictions.c.run_id == run_id)) or 0)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@contextmanager
def write_lock(url: str) -> Iterator[None]:
    """Hold the database's write lock from another connection (SQLite: the write lock itself;
    PostgreSQL: a SHARE lock on predictions, which blocks inserts), so that requests pile up
    behind the one being written."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        conn = sqlite3.connect(u.database or "", isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    import psycopg

    with psycopg.connect(host=u.host, port=u.port or 5432, user=u.username, dbname=u.database,
                         password=u.password) as pg:
        pg.execute("LOCK TABLE predictions IN SHARE MODE")
        try:
            yield
        finally:
            pg.rollback()


def poison_rows(store: SQLStore) -> None:
    """A trigger that refuses rows whose prompt is 'poison' (a failure inside the transaction,
    after other points of the group were written)."""
    with store.engine.begin() as conn:
        if store.dialect == "sqlite":
            conn.exec_driver_sql(
                "CREATE TRIGGER poison BEFORE INSERT ON predictions WHEN NEW.prompt = 'poison' "
                "BEGIN SELECT RAISE(ABORT, 'poisoned row'); END")
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN IF NEW.prompt = 'poison' "
                "THEN RAISE EXCEPTION 'poisoned row'; END IF; RETURN NEW; END $$ "
                "LANGUAGE plpgsql")
            conn.exec_driver_sql("CREATE TRIGGER poison BEFORE INSERT ON predictions "
                                 "FOR EACH ROW EXECUTE FUNCTION poison()")


def grouped(committer: GroupCommit, db_url: str, members: list[Any]) -> list[Future[int]]:
    """Submit ``members`` so that they form one group: while a first request is held by the
    database lock, the others queue behind it."""
    taken = committer.stats.requests + 1
    with write_lock(db_url):
        first = committer.submit(points(f"warm-up-{taken}"))
        wait_for(lambda: committer.stats.requests == taken, "the writer to take the first one")
        futures = [committer.submit(m) for m in members]
        wait_for(lambda: committer.pending == len(members), "the requests to queue")
    assert first.result(WAIT_S) == 5
    return futures


def test_requests_waiting_together_are_written_in_one_transaction_each_answered(
    store: SQLStore, db_url: str
) -> None:
    committer = GroupCommit(store, writers=1)
    runs = [f"r{i}" for i in range(9)]
    futures = grouped(committer, db_url, [points(r, n=3 + i) for i, r in enumerate(runs)])
    assert [f.result(WAIT_S) for f in futures] == [3 + i for i in range(9)]
    assert (committer.stats.groups, committer.stats.largest) == (2, 9)  # warm-up, then all 9
    assert [stored(store, r) for r in runs] == [3 + i for i in range(9)]
    # Re-sent together: nothing inserted twice (each point keeps its own idempotency).
    again = grouped(committer, db_url, [points(r, n=3 + i) for i, r in enumerate(runs)]
                    + [points("r0", n=3)])  # the same batch twice in one group
    assert [f.result(WAIT_S) for f in again] == [0] * 10
    assert [stored(store, r) for r in runs] == [3 + i for i in range(9)]
    assert committer.stats.retried == 0
    committer.close()


def test_a_failing_member_fails_alone_and_the_others_are_stored_once(
    store: SQLStore, db_url: str
) -> None:
    poison_rows(store)
    committer = GroupCommit(store, writers=1)
    runs = [f"r{i}" for i in range(9)]
    # Points are written in run order: r0..r3 are in the transaction when r4 fails.
    futures = grouped(committer, db_url, [points(r, prompt="poison" if r == "r4" else "q")
                                          for r in runs])
    with pytest.raises(Exception, match="poisoned row"):
        futures[4].result(WAIT_S)
    assert [f.result(WAIT_S) for i, f in enumerate(futures) if i != 4] == [5] * 8
    assert committer.stats.retried == 1
    assert [stored(store, r) for r in runs] == [5, 5, 5, 5, 0, 5, 5, 5, 5]
    committer.close()


@pytest.mark.postgres
def test_requests_after_a_postgresql_restart_are_stored_not_refused(
    pg_proxy: tuple[TcpProxy, str]
) -> None:
    """A restart kills the pooled connections, and one checked in less than ``PG_PING_IDLE_S``
    ago was not pinged: the next write on it failed as a lost connection, and a lone request
    was answered 503 (a group was written again member by member). Now a connection the
    server ended is found at checkout, and a write whose connection dies under it is made
    again once: no request is refused."""
    proxy, url = pg_proxy
    store = open_store(url)
    committer = GroupCommit(store, writers=1)
    try:
        assert committer.submit(points("restart", step=1)).result(WAIT_S) == 5
        proxy.cut()  # the restart: every open connection dies...
        proxy.restore()  # ...and the server is back at once
        assert committer.submit(points("restart", step=2)).result(WAIT_S) == 5
        assert stored(store, "restart") == 10
        assert committer.stats.retried == 0  # no member-by-member fallback was needed
    finally:
        committer.close()
        store.close()


def test_closing_answers_every_queued_request_and_a_later_request_restarts_the_writer(
    store: SQLStore, db_url: str
) -> None:
    committer = GroupCommit(store, writers=1)
    with write_lock(db_url):
        futures = [committer.submit(points(f"c{i}")) for i in range(5)]
        closing = threading.Thread(target=committer.close)
        closing.start()
    closing.join(WAIT_S)
    assert not closing.is_alive()
    assert [f.result(0) for f in futures] == [5] * 5  # answered before close returned
    assert committer.submit(points("after")).result(WAIT_S) == 5
    committer.close()


def test_concurrent_groups_writing_the_same_runs_never_deadlock(store: SQLStore) -> None:
    committer = GroupCommit(store, writers=4)
    runs = [f"s{i}" for i in range(4)]
    # Every request names the runs in another order; each group locks them in one order.
    requests = [[p for r in (runs if k % 2 else runs[::-1]) for p in points(r, step=k)]
                for k in range(1, 41)]
    with ThreadPoolExecutor(8) as pool:
        futures = list(pool.map(committer.submit, requests))
        assert [f.result(WAIT_S * 2) for f in futures] == [4 * 5] * 40
    assert committer.stats.retried == 0  # no deadlock (nor anything else) failed a group
    assert [stored(store, r) for r in runs] == [40 * 5] * 4
    committer.close()


def body(run_id: str, step: int, n: int = 4, **extra: Any) -> dict[str, Any]:
    return {"job_id": run_id, **extra, "predictions": [
        {"step": step, "sample_index": i, "prompt": f"q{i}", "prediction": "a",
         "ground_truth": "a"} for i in range(n)]}


def test_a_bad_batch_in_a_group_gets_its_own_400_and_the_others_their_200(
    store: SQLStore, db_url: str
) -> None:
    app = create_app(store, Settings())
    committer = app.state.group_commit = GroupCommit(store, writers=1)  # groups predictable
    with TestClient(app) as client:
        runs = [client.post("/api/runs", json={}).json() for _ in range(6)]
        bad = body(runs[3]["job_id"], 1, eval_point={"step": 1, "attempt": -1})

        def post(i: int) -> httpx.Response:
            payload = bad if i == 3 else body(runs[i]["job_id"], 1)
            return client.post(INGEST, json=payload,
                               headers={"Authorization": f"Bearer {runs[i]['token']}"})

        with ThreadPoolExecutor(6) as pool, write_lock(db_url):
            first = pool.submit(post, 0)
            wait_for(lambda: committer.stats.requests == 1, "the first request to be written")
            others = [pool.submit(post, i) for i in range(1, 6)]
            wait_for(lambda: committer.pending == 5, "the other requests to queue")
        answers = [first.result(WAIT_S)] + [f.result(WAIT_S) for f in others]
        alone = post(3)  # the same bad request on its own: the same answer
    assert [a.status_code for a in answers] == [200, 200, 200, 400, 200, 200]
    for i, answer in enumerate(answers):
        if i != 3:
            assert answer.json() == {"success": True, "count": 4, "inserted": 4,
                                     "truncated": 0, "job_id": runs[i]["job_id"]}
    assert answers[3].content == alone.content and alone.status_code == 400
    assert answers[3].json()["detail"] == {"field": "eval_point.attempt"}
    assert committer.stats.retried == 1 and committer.stats.largest == 5
    assert [stored(store, r["job_id"]) for r in runs] == [4, 4, 4, 0, 4, 4]


def test_small_and_big_bodies_are_parsed_and_refused_alike(store: SQLStore) -> None:
    """Bodies up to INLINE_PARSE_BYTES are parsed on the event loop, bigger ones on a worker
    thread: both store every row and answer a bad row with the same 400."""
    from predwatch.server.api.predictions import INLINE_PARSE_BYTES

    with TestClient(create_app(store, Settings())) as client:
        for size, step in ((1_000, 1), (INLINE_PARSE_BYTES * 2, 2)):
            run = client.post("/api/runs", json={}).json()
            auth = {"Authorization": f"Bearer {run['token']}"}
            rows = [{"step": step, "sample_index": i, "prompt": f"q{i}",
                     "prediction": "a" * (size // 100)} for i in range(100)]
            payload = {"job_id": run["job_id"], "predictions": rows}
            sent = len(httpx.Request("POST", "http://x", json=payload).content)
            assert (sent > INLINE_PARSE_BYTES) == (step == 2)
            answer = client.post(INGEST, json=payload, headers=auth)
            assert answer.status_code == 200, answer.text
            assert answer.json()["inserted"] == 100 and stored(store, run["job_id"]) == 100
            rows[7]["step"] = "seven"
            refused = client.post(INGEST, json=payload, headers=auth)
            assert refused.status_code == 400 and "predictions[7].step" in refused.text


# --- a real server ------------------------------------------------------------------------------
def new_runs(base: str, n: int) -> list[dict[str, Any]]:
    with httpx.Client(base_url=base, timeout=WAIT_S) as client:
        return [client.post("/api/runs", json={}).json() for _ in range(n)]


@pytest.mark.slow
def test_concurrent_writers_through_a_real_server_store_every_row_once(db_url: str) -> None:
    workers = "2" if db_url.startswith("postgresql") else "1"
    with start_server(db_url, args=["--workers", workers]) as server:
        runs = new_runs(server.url, 10)

        def job(run: dict[str, Any]) -> int:
            inserted = 0
            auth = {"Authorization": f"Bearer {run['token']}"}
            with httpx.Client(base_url=server.url, timeout=WAIT_S) as client:
                for step in range(1, 7):
                    for _ in range(2 if step % 3 == 0 else 1):  # re-sent: deduplicated
                        answer = client.post(INGEST, json=body(run["job_id"], step, 20),
                                             headers=auth)
                        assert answer.status_code == 200, answer.text
                        assert answer.json()["count"] == 20
                        inserted += answer.json()["inserted"]
            return inserted

        with ThreadPoolExecutor(len(runs)) as pool:
            results = [f.result(120) for f in [pool.submit(job, r) for r in runs]]
    assert results == [6 * 20] * len(runs)
    with open_store(db_url) as store:
        for run in runs:
            page = store.list_predictions(run["job_id"], limit=1000)
            keys = [(p.step, p.sample_index) for p in page.items]
            assert page.total == len(keys) == len(set(keys)) == 6 * 20


@pytest.mark.slow
def test_a_server_killed_mid_group_loses_no_acknowledged_row(db_url: str) -> None:
    server = start_server(db_url)
    acked: list[tuple[str, int]] = []
    stop = threading.Event()
    try:
        runs = new_runs(server.url, 8)

        def job(run: dict[str, Any]) -> None:
            auth = {"Authorization": f"Bearer {run['token']}"}
            with httpx.Client(base_url=server.url, timeout=WAIT_S) as client:
                for step in range(1, 10_000):
                    if stop.is_set():
                        return
                    try:
                        answer = client.post(INGEST, json=body(run["job_id"], step, 20),
                                             headers=auth)
                    except httpx.TransportError:
                        return  # the server is gone: this batch was never acknowledged
                    assert answer.status_code == 200, answer.text
                    acked.append((run["job_id"], step))

        with ThreadPoolExecutor(len(runs)) as pool:
            jobs = [pool.submit(job, r) for r in runs]
            wait_for(lambda: len(acked) >= 40, "some batches to be acknowledged")
            server.kill()  # SIGKILL while groups are being written
            stop.set()
            for f in jobs:
                f.result(WAIT_S)
    finally:
        server.stop()
    with open_store(db_url) as store:
        for run in runs:
            counts: dict[int, int] = {}
            for p in store.list_predictions(run["job_id"], limit=1000).items:
                counts[p.step] = counts.get(p.step, 0) + 1
            assert set(counts.values()) <= {20}  # a batch is stored whole or not at all
            mine = {step for job_id, step in acked if job_id == run["job_id"]}
            assert mine <= set(counts), f"acknowledged but lost: {sorted(mine - set(counts))}"
