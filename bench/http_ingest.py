"""Benchmark: HTTP ingest (rows/s) into a real ``predwatch serve`` process, SQLite + PostgreSQL.

Bodies are ``Batch.to_wire()`` of realistic evaluation points (``store.realistic_point``: prompt
~300 chars, answers ~200, scores, metrics, validation and reproducibility JSON), serialised
before the clock starts, posted over real HTTP by one client (sequential) and by four clients at
once (four runs, as four training jobs would). The last line is the result:

    http ingest: sqlite 1 client N rows/s, 4 clients M rows/s; postgresql ...

Run: ``.venv/bin/python bench/http_ingest.py [--rows-per-point 1000] [--points 8]
[--workers 1] [--skip-postgres]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
from store import realistic_point  # bench/store.py

from predwatch.config import env_value
from predwatch.delivery.spool import wire_body
from predwatch.records import EvalPoint
from predwatch.testing import create_postgres_database, drop_postgres_database, start_server

PG_ADMIN = env_value("PREDWATCH_TEST_POSTGRES_URL") or "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def bodies(run_id: str, points: int, per_point: int) -> list[bytes]:
    out = []
    for step in range(1, points + 1):
        rows = realistic_point(run_id, step, per_point, seed=step)
        out.append(wire_body(run_id, EvalPoint(run_id=run_id, step=step), rows))
    return out


def job(base: str, points: int, per_point: int) -> tuple[list[bytes], dict[str, str]]:
    created = httpx.post(base + "/api/runs", json={}).json()
    return bodies(created["job_id"], points, per_point), {
        "Authorization": f"Bearer {created['token']}", "Content-Type": "application/json"}


def post_all(base: str, payloads: list[bytes], headers: dict[str, str]) -> int:
    rows = 0
    with httpx.Client(base_url=base, timeout=300) as client:
        for body in payloads:
            answer = client.post("/api/training/local/predictions", content=body, headers=headers)
            answer.raise_for_status()
            rows += answer.json()["inserted"]
    return rows


def measure(base: str, clients: int, points: int, per_point: int) -> float:
    jobs = [job(base, points, per_point) for _ in range(clients)]
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        rows = sum(pool.map(lambda j: post_all(base, *j), jobs))
    return rows / (time.perf_counter() - started)


def bench(url: str, name: str, workers: int, points: int, per_point: int) -> str:
    with start_server(url, args=["--workers", str(workers)]) as server:
        one = measure(server.url, 1, points, per_point)
        four = measure(server.url, 4, max(1, points // 2), per_point)
    line = f"{name} 1 client {one:,.0f} rows/s, 4 clients {four:,.0f} rows/s"
    print(f"http ingest ({workers} worker(s), {per_point} rows a request): {line}", flush=True)
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=8)
    parser.add_argument("--rows-per-point", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        results.append(bench(f"sqlite:///{tmp}/bench.db", "sqlite", args.workers, args.points,
                             args.rows_per_point))
    if not args.skip_postgres:
        name = f"predwatch_bench_{uuid.uuid4().hex[:8]}"
        url = create_postgres_database(PG_ADMIN, name)
        try:
            results.append(bench(url, "postgresql", args.workers, args.points,
                                 args.rows_per_point))
        finally:
            drop_postgres_database(PG_ADMIN, name)
    print("http ingest: " + "; ".join(results))


if __name__ == "__main__":
    main()
