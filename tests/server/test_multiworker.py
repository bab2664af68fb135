"""Several uvicorn workers on one PostgreSQL database: concurrent jobs, streams across workers."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from predwatch.config import env_flag, env_value
from predwatch.storage import open_store
from predwatch.testing import (
    ServerHandle,
    create_postgres_database,
    drop_postgres_database,
    start_server,
)

JOBS, POINTS, ROWS = 4, 3, 40
pytestmark = pytest.mark.slow  # starting several worker processes takes a while


PG_ADMIN = env_value("PREDWATCH_TEST_POSTGRES_URL") or "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A PostgreSQL database for this module (starting workers is the slow part: do it once)."""
    name = f"predwatch_t_{uuid.uuid4().hex[:12]}"
    try:
        url = create_postgres_database(PG_ADMIN, name)
    except psycopg.OperationalError as exc:  # no server: skip as conftest does
        if env_flag("PREDWATCH_REQUIRE_POSTGRES"):
            pytest.fail(f"PostgreSQL not reachable at {PG_ADMIN}: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN}")
    try:
        yield url
    finally:
        drop_postgres_database(PG_ADMIN, name)


@pytest.fixture(scope="module")
def workers(database: str) -> Iterator[ServerHandle]:
    with start_server(database, args=["--workers", "2"], env={
            "PREDWATCH_HEARTBEAT_SECONDS": "0.5"}) as server:
        yield server


def rows(step: int) -> list[dict[str, Any]]:
    return [{"step": step, "epoch": step / 10, "sample_index": i, "prompt": f"q{i}",
             "prediction": "a", "ground_truth": "a", "char_error_rate": 0.0} for i in range(ROWS)]


def run_job(base: str) -> tuple[str, int]:
    """One training job: its own run and token, POINTS evaluation points (one sent twice)."""
    with httpx.Client(base_url=base, timeout=30) as client:
        created = client.post("/api/runs", json={}).json()
        auth = {"Authorization": f"Bearer {created['token']}"}
        inserted = 0
        for step in range(1, POINTS + 1):
            body = {"job_id": created["job_id"], "predictions": rows(step)}
            for _ in range(2 if step == 1 else 1):  # a retried request
                answer = client.post("/api/training/local/predictions", json=body, headers=auth)
                assert answer.status_code == 200, answer.text
                inserted += answer.json()["inserted"]
        return created["job_id"], inserted


def test_concurrent_jobs_through_several_workers_each_write_only_their_run(
    workers: ServerHandle, database: str
) -> None:
    with ThreadPoolExecutor(JOBS) as pool:
        results = list(pool.map(lambda _: run_job(workers.url), range(JOBS)))
    assert [n for _, n in results] == [POINTS * ROWS] * JOBS  # the re-send inserted nothing
    with open_store(database) as store, httpx.Client(base_url=workers.url) as client:
        for job_id, _ in results:
            assert store.list_predictions(job_id).total == POINTS * ROWS
            trends = client.get(f"/api/training/predictions/{job_id}/trends",
                                params={"per": "point"}).json()["trends"]
            assert [t["step"] for t in trends] == [1, 2, 3]
    children = Path(f"/proc/{workers.process.pid}/task/{workers.process.pid}/children")
    if children.exists():  # Linux: the server really runs two worker processes
        pids = children.read_text().split()
        cmdlines = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in pids]
        assert sum(b"spawn_main" in c for c in cmdlines) == 2


def test_a_stream_sees_rows_written_through_other_workers(workers: ServerHandle) -> None:
    created = httpx.post(workers.url + "/api/runs", json={}).json()
    job_id, auth = created["job_id"], {"Authorization": f"Bearer {created['token']}"}
    events: list[tuple[str, Any]] = []
    connected = threading.Event()

    def listen() -> None:
        url = f"{workers.url}/api/training/predictions/{job_id}/stream"
        with httpx.stream("GET", url, params={"max_seconds": 6}, timeout=30) as answer:
            name = None
            for line in answer.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: ") and name:
                    events.append((name, json.loads(line[6:])))
                    connected.set()
                    if sum(e[0] == "prediction" for e in events) == 2 * ROWS:
                        return

    listener = threading.Thread(target=listen)
    listener.start()
    assert connected.wait(30)  # the run had no rows when the stream started
    with httpx.Client(base_url=workers.url, timeout=30) as client:
        for step in (1, 2):  # new connections: spread over the workers
            body = {"job_id": job_id, "predictions": rows(step)}
            client.post("/api/training/local/predictions", json=body, headers=auth,
                        ).raise_for_status()
    listener.join(30)
    names = [n for n, _ in events]
    assert names[0] == "connected"
    got = [(d["prediction"]["step"], d["prediction"]["sample_index"])
           for n, d in events if n == "prediction"]
    assert sorted(got) == sorted((s, i) for s in (1, 2) for i in range(ROWS))
