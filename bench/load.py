"""Benchmark: a server under load, as a team's training jobs and dashboards would load it.

``--writers`` training jobs (one run each, 20 by default) post 50-row batches at once over real
HTTP to a real ``predwatch serve``; one batch in ten is sent a second time (a retry after a lost
answer). Training jobs are separate processes, so the writers run in ``--writer-processes``
client processes (4 by default; a thread per job inside each): in one process, one GIL paced
all 20. They send with the standard library's ``http.client`` (a third of httpx's CPU per
request: the writers share this machine's cores with the server; ``--writer-client httpx`` for
the old client). Meanwhile two readers each load a page of a random run's rows and its trends
``--read-rate`` times a second (5 by default: a dashboard refreshed without pause by its user;
0 reads as fast as the server answers, which on 2 cores takes the server's CPU from ingest),
and two live streams (``/stream?after=0``) follow two of the runs. Bodies are realistic rows
(``bench/store.py``) serialised before the clock starts.

Measured: stored rows per second (new rows over the writers' wall time), ingest latency p50/p95
(every POST, re-sends included), rows lost (posted and answered 200 but not listed) and rows
duplicated (listed more than once), and whether each stream saw every row of its run exactly
once. Also, per ingest request, the CPU time the server's processes, PostgreSQL's backends of
the bench's database and the whole machine spent meanwhile (read from ``/proc``): on a machine
that is CPU-bound, rows/s is about its cores over the whole machine's CPU per request, 50 rows.
SQLite runs one worker (``--sqlite-workers``); PostgreSQL runs ``--workers 4``. The last line
is the summary:

    load: sqlite N rows/s p50 A ms p95 B ms lost 0 dup 0 (target >= 8000 rows/s, p95 < 250 ms);
    postgresql ...

Run: ``.venv/bin/python bench/load.py [--writers 20] [--batches 20] [--read-rate 5]
[--writer-processes 4] [--sqlite-workers 1] [--writer-client stdlib] [--skip-postgres]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import queue
import random
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic_core import to_json
from store import realistic_point  # bench/store.py

from predwatch.config import env_value
from predwatch.testing import create_postgres_database, drop_postgres_database, start_server

PG_ADMIN = env_value("PREDWATCH_TEST_POSTGRES_URL") or "postgresql+psycopg://postgres@127.0.0.1:5432/test"
INGEST = "/api/training/local/predictions"
ROWS = 50
TARGETS = {"sqlite": (8000, 250.0), "postgresql": (10000, 150.0)}


@dataclass
class Job:
    job_id: str
    headers: dict[str, str]
    bodies: list[bytes]
    latencies: list[float] = field(default_factory=list)
    inserted: int = 0


def make_job(base: str) -> Job:
    """A new run with its write token; its bodies are built by the process that sends them."""
    created = httpx.post(base + "/api/runs", json={}, timeout=60).json()
    return Job(created["job_id"], {"Authorization": f"Bearer {created['token']}",
                                   "Content-Type": "application/json"}, [])


def bodies(job_id: str, batches: int) -> list[bytes]:
    return [to_json({"job_id": job_id, "predictions": realistic_point(job_id, step, ROWS,
                                                                      seed=step)})
            for step in range(1, batches + 1)]


def writer_process(base: str, jobs: list[tuple[int, Job]], batches: int, start: Any,
                   out: Any, client: str = "stdlib") -> None:
    """One process of training jobs: builds their bodies, waits for the start, sends them (a
    thread per job) and reports each job's latencies and inserted count."""
    for _, job in jobs:
        job.bodies = bodies(job.job_id, batches)
    out.put("ready")
    start.wait()
    with ThreadPoolExecutor(len(jobs)) as pool:
        for f in [pool.submit(write, base, job, seed, client) for seed, job in jobs]:
            f.result()
    out.put([(job.job_id, job.latencies, job.inserted) for _, job in jobs])


def write(base: str, job: Job, seed: int, client: str = "stdlib") -> None:
    """One training job: its batches in order over one kept-alive connection, one in ten
    twice."""
    rng = random.Random(seed)
    with _poster(base, job.headers, client) as post:
        for body in job.bodies:
            for _ in range(2 if rng.random() < 0.1 else 1):  # 10%: sent twice
                started = time.perf_counter()
                status, data = post(body)
                job.latencies.append((time.perf_counter() - started) * 1000)
                if status != 200:
                    raise RuntimeError(f"ingest answered {status}: {data[:300]!r}")
                job.inserted += json.loads(data)["inserted"]


@contextmanager
def _poster(base: str, headers: dict[str, str], client: str
            ) -> Iterator[Callable[[bytes], tuple[int, bytes]]]:
    """``post(body) -> (status, body)`` to the ingest route over one kept-alive connection. The
    standard library's client by default: on this 2-core machine the writers share the CPU with
    the server, and httpx spent 1.31 ms of CPU per 50-row POST against 0.45 ms."""
    if client == "httpx":
        with httpx.Client(base_url=base, timeout=120) as session:
            def post_httpx(body: bytes) -> tuple[int, bytes]:
                answer = session.post(INGEST, content=body, headers=headers)
                return answer.status_code, answer.content
            yield post_httpx
        return
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=120)

    def post(body: bytes) -> tuple[int, bytes]:
        conn.request("POST", INGEST, body=body, headers=headers)
        answer = conn.getresponse()
        return answer.status, answer.read()

    try:
        yield post
    finally:
        conn.close()


def read(base: str, jobs: list[Job], done: threading.Event, rate: float) -> int:
    """A dashboard: a page of a random run's rows and its trends, ``rate`` times a second
    (0: as fast as the server answers)."""
    rng = random.Random(1)
    reads = 0
    with httpx.Client(base_url=base, timeout=120) as client:
        while not done.is_set():
            began = time.monotonic()
            job = rng.choice(jobs)
            path = f"/api/training/predictions/{job.job_id}"
            client.get(path, params={"limit": 50, "offset": rng.randrange(0, 500)}
                       ).raise_for_status()
            client.get(path + "/trends").raise_for_status()
            reads += 2
            if rate > 0:
                done.wait(max(0.0, 1 / rate - (time.monotonic() - began)))
    return reads


def follow(base: str, job: Job, expected: int, seen: list[str], done: threading.Event) -> None:
    """A live stream of one run from its start; stops once every row came (or writers are done
    and nothing new arrived for a while)."""
    url = f"{base}/api/training/predictions/{job.job_id}/stream"
    with httpx.stream("GET", url, params={"after": 0, "max_seconds": 600}, timeout=600) as answer:
        event = None
        quiet_since = None
        for line in answer.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "prediction":
                seen.append(json.loads(line[6:])["prediction"]["id"])
            elif line.startswith("data: ") and event == "heartbeat" and done.is_set():
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since > 5:
                    return
            if len(seen) >= expected:
                return


def stored_ids(base: str, job: Job) -> list[str]:
    ids: list[str] = []
    with httpx.Client(base_url=base, timeout=120) as client:
        cursor = None
        while True:
            params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            page = client.get(f"/api/training/predictions/{job.job_id}", params=params).json()
            ids += [r["id"] for r in page["predictions"]]
            cursor = page.get("next_cursor")
            if not cursor:
                return ids


def cpu_ticks(server_pid: int, database: str | None) -> dict[str, int] | None:
    """CPU time so far (clock ticks, user + system) of the server's processes (the server and
    its workers), of the PostgreSQL backends serving ``database``, and of the whole machine
    (busy and all), read from ``/proc``; None where there is no ``/proc``."""
    try:
        with open("/proc/stat") as f:
            cpu = [int(v) for v in f.readline().split()[1:8]]
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    procs: dict[str, tuple[str, str, int]] = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended meanwhile
            continue
        procs[pid] = (fields[1], cmd, int(fields[11]) + int(fields[12]))
    server = {str(server_pid)}
    server |= {pid for pid, (ppid, _, _) in procs.items() if ppid in server}
    ticks = {"server": sum(procs[p][2] for p in server if p in procs),
             "postgresql": sum(t for _, cmd, t in procs.values()
                               if database and cmd.startswith("postgres:") and database in cmd),
             "machine_busy": sum(cpu) - cpu[3] - cpu[4], "machine": sum(cpu)}
    return ticks


def cpu_line(before: dict[str, int] | None, after: dict[str, int] | None, requests: int,
             database: str | None) -> str:
    """Where the CPU went, per ingest request, between the writers' start and their end."""
    if before is None or after is None or not requests:
        return "cpu: not measured (no /proc, or no request)"
    hz = os.sysconf("SC_CLK_TCK")
    per = {k: (after[k] - before[k]) / hz * 1000 / requests for k in before}
    busy = 100 * (after["machine_busy"] - before["machine_busy"]) / max(
        1, after["machine"] - before["machine"])
    pg = f", PostgreSQL backends {per['postgresql']:.1f} ms" if database else ""
    return (f"cpu per ingest request: server {per['server']:.1f} ms{pg}, whole machine "
            f"{per['machine_busy']:.1f} ms ({busy:.0f}% busy over "
            f"{os.cpu_count()} cores)")


def _next(out: Any, procs: list[Any]) -> Any:
    """The next message of the writer processes; fails as soon as one of them died."""
    while True:
        try:
            return out.get(timeout=1)
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise SystemExit(f"a writer process failed (exit code {dead[0]})") from None


def bench(url: str, name: str, workers: int, writers: int, batches: int,
          processes: int, read_rate: float, client: str = "stdlib") -> str:
    env = {"PREDWATCH_HEARTBEAT_SECONDS": "1"}
    ctx = multiprocessing.get_context("spawn")
    with start_server(url, args=["--workers", str(workers)], env=env) as server:
        base = server.url
        jobs = [make_job(base) for _ in range(writers)]
        done = threading.Event()
        expected = batches * ROWS
        streams: list[list[str]] = [[], []]
        # Training jobs are separate processes: the writers run in ``processes`` processes
        # (threads inside each), so one client's GIL does not pace 20 jobs' requests.
        start, out = ctx.Event(), ctx.Queue()
        groups = [[(i, job) for i, job in enumerate(jobs) if i % processes == k]
                  for k in range(processes)]
        procs = [ctx.Process(target=writer_process, args=(base, g, batches, start, out, client))
                 for g in groups if g]
        for proc in procs:
            proc.start()
        with ThreadPoolExecutor(4) as pool:
            followers = [pool.submit(follow, base, jobs[i], expected, streams[i], done)
                         for i in range(2)]
            readers = [pool.submit(read, base, jobs, done, read_rate) for _ in range(2)]
            time.sleep(0.5)  # the streams are connected before the first row
            try:
                for _ in procs:  # every writer has built its bodies
                    if _next(out, procs) != "ready":
                        raise SystemExit("a writer process answered out of turn")
                database = urlsplit(url).path.lstrip("/") if name == "postgresql" else None
                cpu_before = cpu_ticks(server.process.pid, database)
                start.set()
                started = time.perf_counter()
                results = [_next(out, procs) for _ in procs]
                wall = time.perf_counter() - started
                cpu_after = cpu_ticks(server.process.pid, database)
            finally:
                done.set()  # readers and streams stop, also when a writer failed
            reads = sum(r.result() for r in readers)
            for f in followers:
                f.result()
        for proc in procs:
            proc.join(60)
            if proc.exitcode != 0:
                raise SystemExit(f"a writer process failed (exit code {proc.exitcode})")
        sent = {job_id: (latencies, inserted) for group in results
                for job_id, latencies, inserted in group}
        for job in jobs:
            job.latencies, job.inserted = sent[job.job_id]
        lost = dup = 0
        for job in jobs:
            ids = stored_ids(base, job)
            lost += max(0, expected - len(set(ids)))
            dup += len(ids) - len(set(ids))
        stream_ok = all(len(s) == len(set(s)) == expected for s in streams)
    latencies = [ms for job in jobs for ms in job.latencies]
    print(f"{name}: " + cpu_line(cpu_before, cpu_after, len(latencies), database), flush=True)
    p50 = statistics.median(latencies)
    p95 = statistics.quantiles(latencies, n=20)[-1]
    rate = sum(job.inserted for job in jobs) / wall
    rows_target, p95_target = TARGETS[name]
    line = (f"{name} {rate:,.0f} rows/s p50 {p50:.0f} ms p95 {p95:.0f} ms lost {lost} dup {dup}"
            f" streams {'ok' if stream_ok else 'MISSED'} (target >= {rows_target:,} rows/s, "
            f"p95 < {p95_target:.0f} ms)")
    readers = f"{read_rate:g}/s each" if read_rate > 0 else "without pause"
    print(f"load ({workers} worker(s), {writers} writers in {len(procs)} processes x "
          f"{batches} batches of {ROWS}, 2 readers {readers}: {reads} reads in "
          f"{wall:.1f} s): {line}", flush=True)
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writers", type=int, default=20)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--writer-processes", type=int, default=4,
                        help="client processes the writers run in (threads inside each)")
    parser.add_argument("--read-rate", type=float, default=5.0,
                        help="each reader's pages per second (a page and its trends); 0: "
                             "without pause")
    parser.add_argument("--sqlite-workers", type=int, default=1,
                        help="server workers on SQLite (they take turns writing)")
    parser.add_argument("--writer-client", choices=["stdlib", "httpx"], default="stdlib",
                        help="the writers' HTTP client: the standard library's http.client "
                             "(a third of httpx's CPU per request, which this machine's "
                             "server needs) or httpx")
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        results.append(bench(f"sqlite:///{tmp}/load.db", "sqlite", args.sqlite_workers,
                             args.writers, args.batches, args.writer_processes, args.read_rate,
                             args.writer_client))
    if not args.skip_postgres:
        name = f"predwatch_load_{uuid.uuid4().hex[:8]}"
        url = create_postgres_database(PG_ADMIN, name)
        try:
            results.append(bench(url, "postgresql", 4, args.writers, args.batches,
                                 args.writer_processes, args.read_rate, args.writer_client))
        finally:
            drop_postgres_database(PG_ADMIN, name)
    print("load: " + "; ".join(results))


if __name__ == "__main__":
    main()
