"""The job queue of checkpoint workers, in the database predwatch already has.

A job is "record this checkpoint of this run at this step". Workers claim jobs transactionally:
on PostgreSQL with ``SELECT ... FOR UPDATE SKIP LOCKED`` (many workers on many machines share
one queue, none waits for another's row lock), on SQLite inside ``BEGIN IMMEDIATE`` (one writer
at a time: one machine). A claimed job carries a lease; the worker extends it with heartbeats.
A job whose lease ran out (its worker died) is claimable again, and counts as an attempt: after
``max_attempts`` it is failed with the reason, never retried forever. The recorded rows are
idempotent in the store, so a job retried after a crash mid-write never duplicates a row.

``JobsMixin`` adds the queue to ``SQLStore`` (it uses the store's ``engine`` and ``_write``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import (
    Column,
    Double,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from predwatch.errors import NotFound, PayloadError
from predwatch.records import utcnow
from predwatch.storage.queries import id_chunks
from predwatch.storage.tables import JSONType, UTCDateTime, metadata

JobStatus = Literal["pending", "running", "done", "failed"]
JOB_STATUSES: tuple[str, ...] = ("pending", "running", "done", "failed")
DEFAULT_LEASE_S = 120.0
DEFAULT_MAX_ATTEMPTS = 3

jobs = Table(
    "jobs",
    metadata,
    Column("id", String, primary_key=True),
    Column("run_id", String, nullable=False),
    Column("step", Integer, nullable=False),
    Column("epoch", Double),
    Column("path", Text, nullable=False),
    Column("payload", JSONType, nullable=False),
    Column("status", String, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("worker", String),
    Column("lease_until", UTCDateTime()),
    Column("error", Text),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime()),
    # One job per evaluation point: a watcher restarted over the same directory enqueues nothing.
    UniqueConstraint("run_id", "step"),
    # Claiming: the oldest claimable job first.
    Index(None, "status", "created_at"),
)
J = jobs.c


class Job(BaseModel):
    """One queued checkpoint: where it is, at which step, and how far it got."""

    id: str
    run_id: str
    step: int
    epoch: float | None = None
    path: str
    payload: dict[str, Any] = Field(default_factory=dict)
    status: JobStatus = "pending"
    attempts: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    worker: str | None = None
    lease_until: datetime | None = None
    error: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    finished_at: datetime | None = None


def _job(row: Any) -> Job:
    return Job(**dict(row))


class JobsMixin:
    """The queue's half of ``SQLStore`` (see ``Store`` for the contract of each method)."""

    engine: Any
    dialect: str
    _write: Any

    def enqueue_job(
        self,
        run_id: str,
        step: int,
        path: str,
        *,
        epoch: float | None = None,
        payload: dict[str, Any] | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> tuple[Job, bool]:
        """Queue ``path`` for ``run_id`` at ``step``; returns the job and whether it is new.

        A job for the same run and step is never queued twice (whatever its status).
        """
        if max_attempts < 1:
            raise PayloadError("max_attempts must be at least 1", detail={"field": "max_attempts"})
        now = utcnow()
        values = {
            "id": uuid.uuid4().hex, "run_id": run_id, "step": int(step), "epoch": epoch,
            "path": str(path), "payload": dict(payload or {}), "status": "pending",
            "attempts": 0, "max_attempts": max_attempts, "created_at": now, "updated_at": now,
        }
        upsert = pg_insert if self.dialect == "postgresql" else sqlite_insert
        with self._write() as conn:
            done = conn.execute(
                upsert(jobs).values(values)
                .on_conflict_do_nothing(index_elements=["run_id", "step"])
            )
            row = conn.execute(
                select(jobs).where(J.run_id == run_id, J.step == int(step))
            ).mappings().one()
        return _job(row), bool(done.rowcount)

    def claim_job(
        self, worker: str, *, lease_s: float = DEFAULT_LEASE_S, run_id: str | None = None
    ) -> Job | None:
        """Take the oldest claimable job for ``worker`` (pending, or running with a lapsed
        lease; of ``run_id`` only, when given) and lease it for ``lease_s`` seconds; None when
        there is none.

        A lapsed job that has used all its attempts is failed here, with the reason.
        """
        now = utcnow()
        claimable = or_(
            J.status == "pending", and_(J.status == "running", J.lease_until < now)
        )
        if run_id is not None:
            claimable = and_(J.run_id == run_id, claimable)
        with self._write() as conn:
            while True:
                row = conn.execute(
                    select(jobs).where(claimable).order_by(J.created_at, J.step).limit(1)
                    .with_for_update(skip_locked=True)  # rendered on PostgreSQL only
                ).mappings().first()
                if row is None:
                    return None
                if row["status"] == "running" and row["attempts"] >= row["max_attempts"]:
                    conn.execute(update(jobs).where(J.id == row["id"]).values(
                        status="failed", updated_at=now, finished_at=now, lease_until=None,
                        error=_lost(row["worker"], row["attempts"], row["error"]),
                    ))
                    continue
                conn.execute(update(jobs).where(J.id == row["id"]).values(
                    status="running", worker=worker, attempts=J.attempts + 1,
                    lease_until=now + timedelta(seconds=lease_s), updated_at=now,
                ))
                claimed = conn.execute(select(jobs).where(J.id == row["id"])).mappings().one()
                return _job(claimed)

    def heartbeat_job(self, job_id: str, worker: str, *, lease_s: float = DEFAULT_LEASE_S) -> bool:
        """Extend ``worker``'s lease on a running job; False when the job is no longer its own
        (the lease lapsed and another worker took it, or it was finished)."""
        now = utcnow()
        with self._write() as conn:
            done = conn.execute(
                update(jobs)
                .where(J.id == job_id, J.worker == worker, J.status == "running")
                .values(lease_until=now + timedelta(seconds=lease_s), updated_at=now)
            )
        return bool(done.rowcount)

    def finish_job(
        self, job_id: str, worker: str, *, error: str | None = None, retry: bool = True
    ) -> Job:
        """Mark ``worker``'s job done, or record ``error``: the job returns to the queue while
        attempts remain (and ``retry``), else it is failed. A job no longer held by ``worker``
        is left as it is (its new holder decides); the stored job is returned either way."""
        now = utcnow()
        with self._write() as conn:
            row = conn.execute(select(jobs).where(J.id == job_id)).mappings().first()
            if row is None:
                raise NotFound(f"job {job_id!r} not found")
            if row["worker"] == worker and row["status"] == "running":
                if error is None:
                    values: dict[str, Any] = {"status": "done", "finished_at": now, "error": None}
                elif retry and row["attempts"] < row["max_attempts"]:
                    values = {"status": "pending", "error": error}
                else:
                    values = {"status": "failed", "finished_at": now, "error": error}
                conn.execute(update(jobs).where(J.id == job_id).values(
                    **values, lease_until=None, updated_at=now,
                ))
            return _job(conn.execute(select(jobs).where(J.id == job_id)).mappings().one())

    def list_jobs(
        self, *, run_id: str | None = None, status: str | None = None, limit: int = 200
    ) -> list[Job]:
        """Jobs oldest first, of one run and/or one status."""
        if status is not None and status not in JOB_STATUSES:
            raise PayloadError(f"job status must be one of {JOB_STATUSES}, not {status!r}",
                               detail={"field": "status"})
        q = select(jobs)
        if run_id is not None:
            q = q.where(J.run_id == run_id)
        if status is not None:
            q = q.where(J.status == status)
        with self.engine.connect() as conn:
            found = conn.execute(q.order_by(J.created_at, J.step).limit(max(limit, 0)))
            return [_job(r) for r in found.mappings()]

    def _delete_run_jobs(self, conn: Any, run_id: str) -> int:
        """Delete every job of ``run_id`` inside ``conn``'s transaction (``delete_run``); a
        worker holding one finds it gone (its heartbeat says so, its finish is refused)."""
        return int(conn.execute(delete(jobs).where(J.run_id == run_id)).rowcount or 0)

    def job_counts(self, run_id: str | None = None) -> dict[str, int]:
        """``{pending, running, done, failed}`` counts, of one run or of the whole queue."""
        q = select(J.status, func.count()).group_by(J.status)
        if run_id is not None:
            q = q.where(J.run_id == run_id)
        counts = dict.fromkeys(JOB_STATUSES, 0)
        with self.engine.connect() as conn:
            for status, n in conn.execute(q):
                counts[status] = int(n)
        return counts

    def job_counts_of_runs(self, run_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """``job_counts`` of many runs in one query per 500 ids (a runs list)."""
        counts = {run_id: dict.fromkeys(JOB_STATUSES, 0) for run_id in run_ids}
        with self.engine.connect() as conn:
            for chunk in id_chunks(run_ids):
                q = (select(J.run_id, J.status, func.count()).where(J.run_id.in_(chunk))
                     .group_by(J.run_id, J.status))
                for run_id, status, n in conn.execute(q):
                    counts[run_id][status] = int(n)
        return counts


def _lost(worker: str | None, attempts: int, last_error: str | None) -> str:
    reason = (
        f"worker {worker or '?'} stopped sending heartbeats (lease expired); "
        f"gave up after {attempts} attempt(s)"
    )
    return f"{reason}; last error: {last_error}" if last_error else reason
