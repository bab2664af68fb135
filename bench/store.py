"""Benchmark: store ingest (rows/s) and read latency on 1,000,000 predictions, SQLite + PostgreSQL.

Ingest: ``write_eval_point`` of 20 evaluation points x 1,000 realistic rows (prompt ~300 chars,
answer and expected answer ~200, scores, metrics, validation and reproducibility JSON) into a
fresh database (median of 5 such rounds after a warm-up round), directly and (when
``predwatch.server`` has an app) through the HTTP ingest API.
A long run: one run growing to 300 points x 1,000 rows, rows/s of its first and last 50
points (how much ingest slows as a run grows: on SQLite each point rewrites one page of the
identity index per prompt, see docs/server.md).
Reads: p50/p95 of list pages (with their total), trends, a 2-run comparison and more, on a store
of ``--rows`` predictions: 10 runs x 1,000 evaluation points x 100 samples. The first run is
written through the store; the others are SQL copies of it with new run ids. Built stores are
cached between runs (SQLite under ``--cache``, PostgreSQL as a database), keyed by schema
revision and size. Before the reads the process freezes its heap and sets the collector's
thresholds, as ``predwatch serve`` does after start-up (``freeze_start_up_heap``). The last
line is the result:

    store bench: sqlite ingest N rows/s, p95 list X ms, trends Y ms, compare Z ms, timeline T ms
    (postgresql T ms)

Run: ``.venv/bin/python bench/store.py`` (first run builds the stores: a few minutes on 2 cores;
later runs about two minutes). ``--skip-postgres`` when no server runs.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import string
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from predwatch.analysis import compare_runs, prompt_timeline, worst_samples
from predwatch.records import EvalPoint, Prediction, Run, ValidationIssue, ValidatorResult
from predwatch.storage import SQLStore, open_store
from predwatch.storage.migrate import head
from predwatch.storage.rows import INSERT_COLUMNS
from predwatch.storage.tables import eval_points, point_attempts, predictions

RUNS, POINTS = 10, 1000
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
WORDS = ["".join(random.Random(i).choices(string.ascii_lowercase, k=1 + i % 9)) for i in range(500)]


def words(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    size = 0
    while size < chars:
        out.append(rng.choice(WORDS))
        size += len(out[-1]) + 1
    return " ".join(out)


def realistic_point(run_id: str, step: int, samples: int, seed: int = 0) -> list[Prediction]:
    """``samples`` rows of one evaluation point with realistic sizes and every common field."""
    rng = random.Random(seed * 1_000_003 + step)
    rows = []
    for i in range(samples):
        prompt = words(random.Random(i), 300)  # the same prompts at every point
        failed = rng.random() < 0.2
        rows.append(Prediction(
            run_id=run_id, step=step, epoch=round(step / POINTS * 3, 3), trigger="eval",
            sample_index=i, prompt_id=f"{i:064x}", source_index=i, prompt=prompt,
            ground_truth=words(random.Random(-i), 200), prediction=words(rng, 200),
            exact_match=float(rng.random() < 0.1), char_error_rate=rng.random(),
            length_ratio=0.5 + rng.random(), word_overlap=rng.random(),
            metrics={"token_f1": rng.random(), "rouge_l": rng.random()},
            validation_pass=not failed, validation_kind="json_schema",
            validation_errors=[ValidationIssue(validator="json_schema", message="missing 'id'")]
            if failed else [],
            validation_results=[ValidatorResult(validator="json_schema", passed=not failed)],
            generation_params={"max_new_tokens": 128, "do_sample": False, "seed": 42},
            prompt_tokens=70 + i % 30, completion_tokens=40 + i % 50, total_tokens=110 + i % 80,
            latency_ms=20 + rng.random() * 10, max_new_tokens=128, do_sample=False,
            finish_reason="length" if rng.random() < 0.05 else "eos", checkpoint=f"step-{step}",
            precision="bf16", library_versions={"torch": "2.4.0", "transformers": "4.46.0"},
        ))
    return rows


# --- ingest -----------------------------------------------------------------------------------
def bench_ingest(store: SQLStore, points: int = 20, per_point: int = 1000,
                 rounds: int = 5) -> tuple[float, float]:
    """(wall rows/s, CPU rows/s) of direct ``write_eval_point``: the median of ``rounds`` rounds,
    each a new run of ``points`` x ``per_point`` rows, after one warm-up round (which pays for
    the process's first allocations). The store grows from empty to (rounds + 1) x 20,000 rows:
    sustained ingest, not a single burst into an empty file."""
    walls, cpus = [], []
    for r in range(rounds + 1):
        run = f"ingest-{r}"
        batches = [realistic_point(run, step, per_point, seed=1) for step in range(points)]
        wall, cpu = time.perf_counter(), time.process_time()
        for step, batch in enumerate(batches):
            store.write_eval_point(EvalPoint(run_id=run, step=step, trigger="eval"), batch)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if r:  # round 0 is the warm-up
            walls.append(points * per_point / wall)
            cpus.append(points * per_point / cpu)
    return statistics.median(walls), statistics.median(cpus)


LONG_POINTS, LONG_WINDOW = 300, 50


def bench_long_run(store: SQLStore, points: int = LONG_POINTS, per_point: int = 1000,
                   window: int = LONG_WINDOW) -> tuple[float, float]:
    """(rows/s over the first ``window`` points, rows/s over the last ``window``) of one run
    growing to ``points`` x ``per_point`` rows: medians of per-point ``write_eval_point`` time.
    What a long fine-tuning run does to ingest: each point lands in an ever larger index."""
    base = realistic_point("long", 0, per_point, seed=3)
    times: list[float] = []
    for step in range(points):
        batch = [p.model_copy(update={"step": step}) for p in base]
        started = time.perf_counter()
        store.write_eval_point(EvalPoint(run_id="long", step=step, trigger="eval"), batch)
        times.append(time.perf_counter() - started)
    return (per_point / statistics.median(times[:window]),
            per_point / statistics.median(times[-window:]))


def bench_http_ingest(store: SQLStore, points: int = 10, per_point: int = 1000) -> float | None:
    """Rows/s through the ingest API (in-process ASGI client), or None without a server app."""
    try:
        from fastapi.testclient import TestClient

        from predwatch.server import create_app  # type: ignore[attr-defined]
    except ImportError:
        return None
    import hashlib
    import secrets

    token = secrets.token_urlsafe(16)
    store.create_run(Run(id="http"))
    store.add_run_token("http", hashlib.sha256(token.encode()).hexdigest())
    client = TestClient(create_app(store))
    bodies = [{"job_id": "http",
               "predictions": [p.model_dump(mode="json")
                               for p in realistic_point("http", step, per_point, seed=2)]}
              for step in range(points)]
    wall = time.perf_counter()
    for body in bodies:
        r = client.post("/api/training/local/predictions", json=body,
                        headers={"Authorization": f"Bearer {token}"})
        r.raise_for_status()
    return points * per_point / (time.perf_counter() - wall)


# --- the 1M store -----------------------------------------------------------------------------
def build(store: SQLStore, rows: int) -> None:
    """Run 0 through the store, then runs 1.. as SQL copies of it."""
    samples = rows // (RUNS * POINTS)
    started = time.perf_counter()
    for step in range(POINTS):
        store.write_eval_point(EvalPoint(run_id="run-0", step=step, trigger="eval",
                                         epoch=round(step / POINTS * 3, 3)),
                               realistic_point("run-0", step, samples))
    print(f"  run-0: {POINTS * samples} rows in {time.perf_counter() - started:.0f} s", flush=True)
    copy_cols = [c for c in INSERT_COLUMNS if c != "run_id"]
    point_cols = [c.name for c in eval_points.c if c.name != "run_id"]
    attempt_cols = [c.name for c in point_attempts.c if c.name != "run_id"]
    for r in range(1, RUNS):
        store.create_run(Run(id=f"run-{r}", name=f"run {r}"))
        with store.engine.begin() as conn:
            for table, cols in ((eval_points, point_cols), (point_attempts, attempt_cols),
                                (predictions, copy_cols)):
                listed = ", ".join(cols)
                conn.execute(
                    text(f"INSERT INTO {table.name} (run_id, {listed}) "
                         f"SELECT :run, {listed} FROM {table.name} WHERE run_id = 'run-0'"),
                    {"run": f"run-{r}"},
                )
    with store.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
            "ANALYZE" if store.dialect == "sqlite" else "VACUUM ANALYZE"
        )
    print(f"  built {rows} rows in {time.perf_counter() - started:.0f} s", flush=True)


def open_built(url: str, rows: int) -> SQLStore:
    store = open_store(url)
    with store.engine.connect() as conn:
        have = conn.scalar(select(func.count()).select_from(predictions))
    if have != rows:
        if have:
            raise SystemExit(f"{url} holds {have} rows, not {rows}: delete it to rebuild")
        print(f"building {rows} predictions in {store.url} (cached for later runs)", flush=True)
        build(store, rows)
    return store


def sqlite_cache(cache: Path, rows: int) -> str:
    cache.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{cache / f'store-{head()}-{rows}.db'}"


def postgres_cache(admin_url: str, rows: int) -> str:
    import psycopg

    u = make_url(admin_url)
    name = f"predwatch_bench_{head()}_{rows}"
    with psycopg.connect(host=u.host, port=u.port or 5432, user=u.username, dbname=u.database,
                         password=u.password, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    return u.set(database=name).render_as_string(hide_password=False)


# --- latency ----------------------------------------------------------------------------------
def timings(fn: Callable[[random.Random], Any], n: int) -> tuple[list[float], list[float]]:
    """Wall and CPU milliseconds of ``n`` calls. CPU time shows what a call costs on an idle
    machine when the wall clock is inflated by other processes (SQLite works in-process)."""
    rng = random.Random(7)
    fn(rng)  # warm caches and statement compilation
    wall, cpu = [], []
    for _ in range(n):
        t, c = time.perf_counter(), time.process_time()
        fn(rng)
        wall.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    return wall, cpu


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def bench_reads(store: SQLStore, n: int) -> dict[str, tuple[list[float], list[float]]]:
    def run(rng: random.Random) -> str:
        return f"run-{rng.randrange(RUNS)}"

    steps = [p.step for p in store.eval_points("run-0")]
    epochs = [e["epoch"] for e in store.epochs("run-0")]

    # Cursors into the middle of each run (a cursor holds only its sort and the last row's key).
    cursors = [store.list_predictions(f"run-{r}", step=steps[len(steps) // 2], limit=1).next_cursor
               for r in range(RUNS)]

    def cursor_page(rng: random.Random) -> None:
        r = rng.randrange(RUNS)
        store.list_predictions(f"run-{r}", limit=50, cursor=cursors[r])

    cases: dict[str, Callable[[random.Random], Any]] = {
        "list: first page": lambda rng: store.list_predictions(run(rng), limit=50),
        "list: epoch filter": lambda rng: store.list_predictions(run(rng), epoch=rng.choice(epochs),
                                                                 limit=50),
        "list: failed only": lambda rng: store.list_predictions(run(rng), failed_only=True,
                                                                limit=50),
        "list: offset 50,000": lambda rng: store.list_predictions(run(rng), offset=50_000,
                                                                  limit=50),
        "list: mid-run page by cursor": cursor_page,
        "trends (1,000 points)": lambda rng: store.trends(run(rng)),
        "compare 2 runs": lambda rng: compare_runs(store, run(rng), run(rng)),
        "worst samples": lambda rng: worst_samples(store, run(rng), lens="largest_drop"),
        "epochs": lambda rng: store.epochs(run(rng)),
        "prompt timeline (1,000 answers)": lambda rng: prompt_timeline(
            store, run(rng), f"{rng.randrange(10):064x}"),
    }
    for fn in cases.values():  # warm every statement first, then freeze the heap
        fn(random.Random(0))
    # What ``predwatch serve`` does after start-up: what was built so far is exempt from the
    # cyclic collector's full passes, and the young generation is collected less often.
    from predwatch.server.run import freeze_start_up_heap  # the server extra (dev installs it)

    freeze_start_up_heap()
    return {name: timings(fn, n) for name, fn in cases.items()}


def report(name: str, results: dict[str, tuple[list[float], list[float]]]) -> dict[str, float]:
    print(f"\n{name}: latency ms, wall p50 / p95 (client CPU p95)")
    for case, (wall, cpu) in results.items():
        print(f"  {case:34s} {statistics.median(wall):8.1f} / {pct(wall, 95):8.1f}"
              f"   ({pct(cpu, 95):.1f})")
    pooled = [m for case, (wall, _) in results.items() if case.startswith("list") for m in wall]
    return {"list": pct(pooled, 95), "trends": pct(results["trends (1,000 points)"][0], 95),
            "compare": pct(results["compare 2 runs"][0], 95),
            "timeline": pct(results["prompt timeline (1,000 answers)"][0], 95)}


@contextmanager
def scratch_postgres(admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for the ingest run, dropped afterwards."""
    import psycopg

    u = make_url(admin_url)
    kwargs: dict[str, Any] = {"host": u.host, "port": u.port or 5432, "user": u.username,
                              "dbname": u.database, "password": u.password, "autocommit": True}
    name = f"predwatch_bench_ingest_{os.getpid()}"
    with psycopg.connect(**kwargs) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield u.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(**kwargs) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def long_run_line(name: str, first: float, last: float) -> str:
    p, w = LONG_POINTS, LONG_WINDOW
    return (f"{name} ingest into one run of {p} points x 1,000 rows: {first:,.0f} rows/s at "
            f"points 1-{w}, {last:,.0f} at points {p - w + 1}-{p} ({last / first - 1:+.0%})")


def bench_all_ingest(skip_postgres: bool, pg_url: str) -> float:
    """Print every ingest rate; returns direct SQLite rows/s (wall)."""
    with tempfile.TemporaryDirectory() as tmp:
        with open_store(f"sqlite:///{tmp}/ingest.db") as fresh:
            sqlite_ingest, cpu = bench_ingest(fresh)
            with fresh.engine.connect() as conn:
                stored = conn.scalar(select(func.count()).select_from(predictions)) or 1
        size = os.path.getsize(f"{tmp}/ingest.db")  # closed: the WAL is checkpointed into it
        print(f"sqlite ingest: {sqlite_ingest:,.0f} rows/s wall "
              f"({cpu:,.0f} rows/s of CPU time; median of 5 rounds); "
              f"file {size / stored:,.0f} bytes per row (indexes included)")
        with open_store(f"sqlite:///{tmp}/http.db") as fresh:
            http = bench_http_ingest(fresh)
        print("http->sqlite ingest: " + (f"{http:,.0f} rows/s" if http else
                                         "skipped (predwatch.server has no create_app yet)"))
        with open_store(f"sqlite:///{tmp}/long.db") as fresh:
            print(long_run_line("sqlite", *bench_long_run(fresh)))
    if not skip_postgres:
        with scratch_postgres(pg_url) as url, open_store(url) as fresh:
            wall, cpu = bench_ingest(fresh)
            print(f"postgresql ingest: {wall:,.0f} rows/s wall "
                  f"({cpu:,.0f} rows/s of CPU time; median of 5 rounds)")
            http = bench_http_ingest(fresh)
            if http:
                print(f"http->postgresql ingest: {http:,.0f} rows/s")
            print(long_run_line("postgresql", *bench_long_run(fresh)))
    return sqlite_ingest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "predwatch-bench")
    ap.add_argument("--pg-url", default=DEFAULT_PG, help="an existing database to create in")
    ap.add_argument("--skip-postgres", action="store_true")
    ap.add_argument("--skip-ingest", action="store_true")
    args = ap.parse_args()

    ingest = None if args.skip_ingest else bench_all_ingest(args.skip_postgres, args.pg_url)
    with open_built(sqlite_cache(args.cache, args.rows), args.rows) as store:
        sqlite_p95 = report("sqlite", bench_reads(store, args.iterations))
    pg_timeline = ""
    if not args.skip_postgres:
        with open_built(postgres_cache(args.pg_url, args.rows), args.rows) as store:
            pg_p95 = report("postgresql", bench_reads(store, args.iterations))
        pg_timeline = f" (postgresql {pg_p95['timeline']:.1f} ms)"

    ingested = "skipped" if ingest is None else f"{ingest:,.0f} rows/s"
    print(f"\nstore bench: sqlite ingest {ingested}, "
          f"p95 list {sqlite_p95['list']:.1f} ms, trends {sqlite_p95['trends']:.1f} ms, "
          f"compare {sqlite_p95['compare']:.1f} ms, timeline {sqlite_p95['timeline']:.1f} ms"
          f"{pg_timeline}")


if __name__ == "__main__":
    main()
