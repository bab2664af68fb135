"""Benchmark: the delivery fault matrix. Every fault, every row accounted for, training never held.

Each scenario records ``--points`` evaluation points of ``--prompts`` prompts through a real
``Recorder`` (a ``FakeGenerator``, so generation time is excluded) into a real database or a real
``predwatch serve``, with one fault injected: PostgreSQL behind a ``TcpProxy`` that is cut and
restored, SQLite held locked by another connection, a server behind an ``FaultProxy`` that drops,
stalls, answers 500 or 429, or loses answers, a spool that cannot be written, a training process
killed with ``kill -9`` (then ``predwatch replay``). Then it counts, in the database, the rows
each run should have: lost = expected keys missing, duplicated = rows beyond one per key.

The training-thread block of a point is the time ``record`` takes minus the generator's own time
(scoring, building the rows and spooling with fsync included). ``start`` (set-up: it loads the
prompts, imports the scorers, reads library versions for the card; it connects nothing) is timed
apart and printed per fault as "set-up", since its cost is the same whatever the fault. The
last line is the result:

    faults N, survived N, rows lost 0, duplicated 0, max training-thread block X ms

Run: ``.venv/bin/python bench/faults.py [--points 10] [--prompts 8] [--skip-postgres]``
(PostgreSQL at ``PREDWATCH_TEST_POSTGRES_URL`` or 127.0.0.1:5432/test).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url

from predwatch.config import env_value
from predwatch.delivery import ApiSink, Spool, StoreSink
from predwatch.delivery.replay import replay_spool
from predwatch.generation.fake import FakeGenerator
from predwatch.recording.recorder import Recorder
from predwatch.records import EvalPoint, Generation, Prediction, Sample, prompt_identity
from predwatch.storage import open_store
from predwatch.testing import (
    FaultProxy,
    TcpProxy,
    create_postgres_database,
    drop_postgres_database,
    start_server,
)

PG_ADMIN = (env_value("PREDWATCH_TEST_POSTGRES_URL")
            or "postgresql+psycopg://postgres@127.0.0.1:5432/test")
OUTAGE_S = 2.0  # how long a fault lasts while the job keeps training
STEP_S = 0.1  # a "training step" between evaluation points (time for faults to overlap)


class TimedGenerator(FakeGenerator):
    """A FakeGenerator that counts its own time, so it can be taken out of ``record``'s."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds = 0.0

    def generate(self, samples: list[Sample], params: dict[str, Any]) -> list[Generation]:
        started = time.perf_counter()
        try:
            return super().generate(samples, params)
        finally:
            self.seconds += time.perf_counter() - started


@dataclass
class Job:
    """A training job's recording: its recorder, and the longest it held training up."""

    recorder: Recorder
    blocks: list[float] = field(default_factory=list)
    setup: float = 0.0

    def start(self) -> None:
        started = time.perf_counter()
        self.recorder.start()
        self.setup = time.perf_counter() - started

    def record(self, step: int) -> None:
        generator = TimedGenerator()
        started = time.perf_counter()
        summary = self.recorder.record(generator=generator, step=step)
        self.blocks.append(time.perf_counter() - started - generator.seconds)
        assert summary is not None, f"step {step} was not recorded"


@dataclass
class Outcome:
    name: str
    expected: int
    stored: int
    distinct: int
    block_s: float
    setup_s: float
    undelivered: int = 0

    @property
    def lost(self) -> int:
        return self.expected - self.distinct

    @property
    def duplicated(self) -> int:
        return self.stored - self.distinct

    @property
    def survived(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.block_s < 0.1


class Bench:
    def __init__(self, points: int, prompts: int, postgres: bool, workdir: Path) -> None:
        self.points, self.prompts, self.postgres = points, prompts, postgres
        self.workdir = workdir
        self.samples = [{"prompt": f"question {i}", "completion": f"answer {i}"}
                        for i in range(prompts)]
        self.steps = [10 * (i + 1) for i in range(points)]

    # -- plumbing ------------------------------------------------------------------------------
    def fresh(self, name: str) -> Path:
        path = self.workdir / f"{name}-{uuid.uuid4().hex[:6]}"
        path.mkdir()
        return path

    def job(self, *, db: str | None = None, sink: Any = None, spool: Path,
            run_id: str | None = None) -> Job:
        return Job(Recorder({"sample_count": self.prompts}, samples=self.samples, db=db,
                            sink=sink, run_id=run_id or uuid.uuid4().hex,
                            spool_dir=str(spool)))

    def count(self, db: str, run_id: str) -> tuple[int, int]:
        with open_store(db) as store:
            rows = store.list_predictions(run_id, limit=100_000).items
        return len(rows), len({(p.step, p.prompt_id, p.sample_number) for p in rows})

    def outcome(self, name: str, db: str, runs: list[str], blocks: list[float],
                setup: float = 0.0, undelivered: int = 0,
                per_run: int | None = None) -> Outcome:
        stored = distinct = 0
        for run_id in runs:
            s, d = self.count(db, run_id)
            stored, distinct = stored + s, distinct + d
        expected = (per_run if per_run is not None else self.prompts * self.points) * len(runs)
        return Outcome(name, expected, stored, distinct, max(blocks, default=0.0), setup,
                       undelivered)

    def train(self, job: Job, during: Callable[[int], None] | None = None) -> None:
        """Start, then record every point, calling ``during(i)`` before point ``i``."""
        job.start()
        for i, step in enumerate(self.steps):
            if during is not None:
                during(i)
            job.record(step)
            time.sleep(STEP_S)

    @contextmanager
    def pg_database(self) -> Iterator[str]:
        name = f"predwatch_faults_{uuid.uuid4().hex[:10]}"
        url = create_postgres_database(PG_ADMIN, name)
        try:
            yield url
        finally:
            drop_postgres_database(PG_ADMIN, name)

    @contextmanager
    def pg_behind_proxy(self) -> Iterator[tuple[str, str, TcpProxy]]:
        """(direct URL, URL through a cuttable proxy, the proxy)."""
        with self.pg_database() as url:
            parsed = make_url(url)
            with TcpProxy(f"{parsed.host}:{parsed.port or 5432}") as proxy:
                through = parsed.set(host="127.0.0.1", port=proxy.port)
                yield url, through.render_as_string(hide_password=False), proxy

    @staticmethod
    def later(seconds: float, action: Callable[[], None]) -> threading.Timer:
        timer = threading.Timer(seconds, action)
        timer.daemon = True
        timer.start()
        return timer

    # -- the store path --------------------------------------------------------------------------
    def pg_down_at_start(self) -> Outcome:
        with self.pg_behind_proxy() as (url, through, proxy):
            proxy.cut()
            self.later(OUTAGE_S, proxy.restore)
            job = self.job(db=through, spool=self.fresh("pgdown"))
            self.train(job)
            left = job.recorder.close(timeout=60)
            return self.outcome("postgresql down at start", url, [job.recorder.run.id],
                                job.blocks, job.setup, left)

    def pg_restart_mid_run(self) -> Outcome:
        with self.pg_behind_proxy() as (url, through, proxy):
            job = self.job(db=through, spool=self.fresh("pgrestart"))

            def during(i: int) -> None:
                if i == 2:
                    proxy.cut()
                    self.later(OUTAGE_S, proxy.restore)

            self.train(job, during)
            left = job.recorder.close(timeout=60)
            return self.outcome("postgresql restart mid-run (direct)", url,
                                [job.recorder.run.id], job.blocks, job.setup, left)

    def sqlite_locked(self, at_start: bool) -> Outcome:
        db = self.fresh("locked") / "predwatch.db"
        url = f"sqlite:///{db}"
        if not at_start:
            open_store(url).close()
        holder: list[sqlite3.Connection] = []

        def lock() -> None:
            conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("BEGIN IMMEDIATE")
            holder.append(conn)
            self.later(OUTAGE_S, lambda: (conn.rollback(), conn.close()))

        if at_start:
            lock()
        job = self.job(db=url, spool=self.fresh("lockedspool"))
        self.train(job, None if at_start else (lambda i: lock() if i == 2 else None))
        left = job.recorder.close(timeout=60)
        name = f"sqlite locked {'at start' if at_start else 'mid-run'}"
        return self.outcome(name, url, [job.recorder.run.id], job.blocks, job.setup, left)

    def spool_unwritable(self) -> Outcome:
        url = f"sqlite:///{self.fresh('rospool') / 'predwatch.db'}"
        blocked = self.fresh("rospool-file") / "spool"
        blocked.write_text("")  # a file where the directory should be (root ignores modes)
        job = self.job(db=url, spool=blocked / "spool")
        logging.getLogger("predwatch").setLevel(logging.CRITICAL)  # it says so at every point
        try:
            self.train(job)
            left = job.recorder.close(timeout=60)
        finally:
            logging.getLogger("predwatch").setLevel(logging.NOTSET)
        return self.outcome("spool read-only", url, [job.recorder.run.id], job.blocks,
                            job.setup, left)

    def duplicates(self) -> Outcome:
        url = f"sqlite:///{self.fresh('dups') / 'predwatch.db'}"
        spool = self.fresh("dupspool")
        sink = StoreSink(url=url, spool_dir=spool)
        same = prompt_identity("the same question")
        blocks = []
        for step in self.steps:
            point = EvalPoint(run_id="dups", step=step)
            rows = [Prediction(run_id="dups", step=step, sample_index=i, sample_number=i,
                               prompt="the same question", prompt_id=same, prediction="a")
                    for i in range(self.prompts)]
            for _ in range(2):  # every batch sent twice (an answer lost, a replay)
                started = time.perf_counter()
                sink.submit(point, rows)
                blocks.append(time.perf_counter() - started)
        left = sink.close(timeout=60)
        return self.outcome("duplicate prompts and re-sent batches", url, ["dups"], blocks,
                            undelivered=left)

    # -- subprocess jobs -----------------------------------------------------------------------
    CHILD = textwrap.dedent("""
        import json, resource, signal, sys, time
        from predwatch.delivery import ApiSink
        from predwatch.generation.fake import FakeGenerator
        from predwatch.recording.recorder import Recorder
        args = json.loads(sys.argv[1])
        samples = [{"prompt": f"question {i}", "completion": f"answer {i}"}
                   for i in range(args["prompts"])]
        sink = ApiSink(args["server"], token=args["token"], spool_dir=args["spool"]) \\
            if args.get("server") else None
        rec = Recorder({"sample_count": args["prompts"]}, samples=samples, db=args.get("db"),
                       sink=sink, run_id=args["run"], spool_dir=args["spool"])
        if args.get("go"):
            from pathlib import Path
            while not Path(args["go"]).exists():
                time.sleep(0.001)
        blocks = []
        t = time.perf_counter(); rec.start(); setup = time.perf_counter() - t
        if args.get("fsize"):
            assert rec.sink.flush(timeout=60, retry=True) == 0
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (args["fsize"], resource.RLIM_INFINITY))
        class Timed(FakeGenerator):
            seconds = 0.0
            def generate(self, samples, params):
                t = time.perf_counter()
                try:
                    return super().generate(samples, params)
                finally:
                    self.seconds += time.perf_counter() - t
        for step in args["steps"]:
            gen = Timed()
            t = time.perf_counter()
            assert rec.record(generator=gen, step=step) is not None
            blocks.append(time.perf_counter() - t - gen.seconds)
            time.sleep(0.05)
        print("blocks", max(blocks), setup, flush=True)
        if args.get("hang"):
            time.sleep(600)
        print("undelivered", rec.close(timeout=60), flush=True)
    """)

    def child(self, **args: Any) -> subprocess.Popen[str]:
        payload = {"prompts": self.prompts, "steps": self.steps, **args}
        return subprocess.Popen([sys.executable, "-c", self.CHILD, json.dumps(payload)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    @staticmethod
    def finished(child: subprocess.Popen[str]) -> tuple[float, float, int]:
        """(max block, set-up, batches undelivered) of a job that ran to its end."""
        out, err = child.communicate(timeout=300)
        if child.returncode != 0:
            raise RuntimeError(f"job failed ({child.returncode}):\n{err[-3000:]}")
        values = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line}
        block, setup = values["blocks"]
        return float(block), float(setup), int(values["undelivered"][0])

    def killed(self, child: subprocess.Popen[str]) -> tuple[float, float]:
        """Wait until the job recorded every point, then ``kill -9`` it: (max block, set-up)."""
        assert child.stdout is not None
        line = child.stdout.readline().split()
        os.kill(child.pid, signal.SIGKILL)
        child.communicate(timeout=30)
        if not line:
            raise RuntimeError("the job died before recording its points")
        return float(line[1]), float(line[2])

    def two_first_opens(self) -> Outcome:
        directory = self.fresh("sweep")
        url = f"sqlite:///{directory / 'predwatch.db'}"
        go = directory / "go"
        runs = [f"sweep-{i}" for i in range(3)]
        children = [self.child(db=url, run=run, spool=str(directory / f"spool{i}"),
                               go=str(go)) for i, run in enumerate(runs)]
        time.sleep(2.0)  # a head start: all imported and waiting at the line
        go.touch()
        results = [self.finished(child) for child in children]
        return self.outcome("two first opens at once (3 jobs)", url, runs,
                            [r[0] for r in results], max(r[1] for r in results),
                            sum(r[2] for r in results))

    def kill_then_replay_store(self) -> Outcome:
        with self.pg_behind_proxy() as (url, through, proxy):
            proxy.cut()  # never reachable while the job lives: a provisional start
            spool = self.fresh("killspool")
            block, setup = self.killed(self.child(db=through, run="killed", spool=str(spool),
                                                  hang=True))
            replay_spool(spool, db_url=url)
            return self.outcome("provisional start then kill -9, replay", url, ["killed"],
                                [block], setup, len(Spool(spool)))

    def spool_disk_full(self) -> Outcome:
        with self.pg_database() as url:
            block, setup, left = self.finished(self.child(db=url, run="full", fsize=64,
                                                          spool=str(self.fresh("fullspool"))))
            return self.outcome("spool disk full (RLIMIT_FSIZE)", url, ["full"], [block], setup,
                                left)

    # -- the API path ------------------------------------------------------------------------
    def api_job(self, proxy_url: str, base_url: str, spool: Path) -> tuple[Job, str]:
        created = httpx.post(base_url + "/api/runs", json={}).json()
        sink = ApiSink(proxy_url, token=created["token"], spool_dir=spool)
        return self.job(sink=sink, spool=spool), created["job_id"]

    def api(self, name: str, server: Any, db: str, setup: Callable[[FaultProxy], None],
            during: Callable[[FaultProxy, int], None] | None = None) -> Outcome:
        proxy = FaultProxy(server.url)
        try:
            job, run_id = self.api_job(proxy.url, server.url, self.fresh("api"))
            setup(proxy)
            self.train(job, None if during is None else (lambda i: during(proxy, i)))
            left = job.recorder.close(timeout=60)
        finally:
            proxy.close()
        return self.outcome(name, db, [run_id], job.blocks, job.setup, left)

    def api_scenarios(self, server: Any, db: str) -> list[Outcome]:
        def clear_later(attr: str) -> Callable[[FaultProxy], None]:
            def setup(proxy: FaultProxy) -> None:
                setattr(proxy, attr, True)
                self.later(OUTAGE_S, lambda: setattr(proxy, attr, False))
            return setup

        def mid(action: Callable[[FaultProxy], None]) -> Callable[[FaultProxy, int], None]:
            return lambda proxy, i: action(proxy) if i == 2 else None

        def down_mid(proxy: FaultProxy) -> None:
            proxy.down = True
            self.later(OUTAGE_S, lambda: setattr(proxy, "down", False))

        none: Callable[[FaultProxy], None] = lambda proxy: None  # noqa: E731
        return [
            self.api("server down at start", server, db, clear_later("down")),
            self.api("server stalled at start", server, db, clear_later("stalled")),
            self.api("server down mid-run", server, db, none, mid(down_mid)),
            self.api("server answers 500", server, db, none,
                     mid(lambda p: p.faults.extend(["500"] * 3))),
            self.api("server answers 429 + Retry-After", server, db, none,
                     mid(lambda p: p.faults.extend(["429:1", "429:1"]))),
            self.api("server stalls mid-run", server, db, none,
                     mid(lambda p: p.faults.extend(["stall:3"]))),
            self.api("connection closed mid-response", server, db, none,
                     mid(lambda p: p.faults.extend(["forward-then-drop", "drop"]))),
        ]

    def kill_then_replay_api(self, server: Any, db: str) -> Outcome:
        proxy = FaultProxy(server.url)
        try:
            created = httpx.post(server.url + "/api/runs", json={}).json()
            proxy.faults.extend(["pass", "forward-then-drop", "stall:600"])
            spool = self.fresh("killapi")
            block, setup = self.killed(self.child(server=proxy.url, token=created["token"],
                                                  run="k", spool=str(spool), hang=True))
        finally:
            proxy.close()
        replay_spool(spool, server_url=server.url, token=created["token"])
        return self.outcome("kill -9 mid-delivery, replay", db, [created["job_id"]], [block],
                            setup, len(Spool(spool)))

    def pg_restart_behind_server(self) -> Outcome:
        with self.pg_behind_proxy() as (url, through, pg):
            server = start_server(through)
            try:
                def during(proxy: FaultProxy, i: int) -> None:
                    if i == 2:
                        pg.cut()
                        self.later(OUTAGE_S, pg.restore)

                return self.api("postgresql restart behind the server", server, url,
                                lambda proxy: None, during)
            finally:
                server.stop()

    # -- all of it -------------------------------------------------------------------------------
    def run(self) -> list[Outcome]:
        scenarios: list[Callable[[], Outcome | list[Outcome]]] = [
            lambda: self.sqlite_locked(at_start=True),
            lambda: self.sqlite_locked(at_start=False),
            self.two_first_opens, self.spool_unwritable, self.duplicates,
        ]
        if self.postgres:
            scenarios += [self.pg_down_at_start, self.pg_restart_mid_run,
                          self.kill_then_replay_store, self.spool_disk_full,
                          self.pg_restart_behind_server]
        db = f"sqlite:///{self.fresh('server') / 'server.db'}"
        outcomes: list[Outcome] = []
        server = start_server(db)
        try:
            scenarios += [lambda: self.api_scenarios(server, db),
                          lambda: self.kill_then_replay_api(server, db)]
            for scenario in scenarios:
                started = time.monotonic()
                result = scenario()
                for outcome in result if isinstance(result, list) else [result]:
                    outcomes.append(outcome)
                    print(f"{outcome.name:42s} {'ok  ' if outcome.survived else 'FAIL'} "
                          f"rows {outcome.distinct}/{outcome.expected}, lost {outcome.lost}, "
                          f"dup {outcome.duplicated}, undelivered {outcome.undelivered}, "
                          f"max block {outcome.block_s * 1000:.1f} ms, "
                          f"set-up {outcome.setup_s * 1000:.0f} ms", flush=True)
                print(f"  ({time.monotonic() - started:.1f}s)", flush=True)
        finally:
            server.stop()
        return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)  # the faults are loud by design
    with tempfile.TemporaryDirectory(prefix="predwatch-faults-") as tmp:
        outcomes = Bench(args.points, args.prompts, not args.skip_postgres, Path(tmp)).run()
    print(f"set-up (start) at most {max(o.setup_s for o in outcomes) * 1000:.0f} ms "
          "(the same with or without a fault: nothing in it waits for a destination)")
    print(f"faults {len(outcomes)}, survived {sum(o.survived for o in outcomes)}, "
          f"rows lost {sum(o.lost for o in outcomes)}, "
          f"duplicated {sum(o.duplicated for o in outcomes)}, "
          f"max training-thread block {max(o.block_s for o in outcomes) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
