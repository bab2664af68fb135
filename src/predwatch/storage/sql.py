"""``SQLStore``: the one ``Store`` implementation, for SQLite and PostgreSQL (SQLAlchemy Core).

Writes are one transaction per evaluation point (``queries.PointWriter``), or per group of
points (``write_eval_points``: the server's group commit). Predictions are
inserted with a driver-level ``executemany`` of tuples pre-encoded once per row
(``rows.PredictionEncoder``) inside the SQLAlchemy transaction, which skips SQLAlchemy's
per-parameter processing on the hot path. On SQLite most of an insert's cost is the driver
binding ~45 parameters (see ``engine._bind_none_directly``), not SQLite's own insert with its
three indexes (~4 µs a row). Reads go through SQLAlchemy Core and ``rows`` converts every row
to a record.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, OperationalError
from typing_extensions import Self

from predwatch.errors import Conflict, NotFound, PayloadError, StorageUnavailable
from predwatch.records import EvalPoint, Prediction, Run, TrendPoint, utcnow, without_nul
from predwatch.storage import compat, queries, rows
from predwatch.storage.base import EpochSums, Page
from predwatch.storage.checkpoint import WalCheckpointer
from predwatch.storage.engine import (
    WRITE,
    display_url,
    is_connection_lost,
    make_engine,
    normalize_url,
    sqlite_file,
)
from predwatch.storage.jobs import JobsMixin
from predwatch.storage.migrate import ensure_schema
from predwatch.storage.sessions import SessionQueries
from predwatch.storage.sets import SetQueries
from predwatch.storage.tables import (
    api_keys,
    eval_points,
    point_attempts,
    predictions,
    run_tokens,
    runs,
    users,
)

P, E, R, A = predictions.c, eval_points.c, runs.c, point_attempts.c
RUN_STATUSES = ("running", "finished", "failed")
_INT32 = 2**31 - 1  # attempts are 32-bit integers in the database
# Statements of every request, built once (building one costs more than running it on SQLite).
_RUN_BY_ID = select(runs).where(R.id == bindparam("run_id"))
_RUN_FOR_TOKEN = (
    select(runs)
    .join(run_tokens, run_tokens.c.run_id == R.id)
    .where(run_tokens.c.token_hash == bindparam("token_hash"), run_tokens.c.revoked_at.is_(None))
)

log = logging.getLogger(__name__)


def open_store(url: str = "sqlite:///predwatch.db", *, create: bool = True) -> SQLStore:
    """Open the store at ``url`` (SQLite file or ``postgresql+psycopg://``).

    An empty database is created at the newest schema (unless ``create`` is False); an older
    one raises ``SchemaOutdated`` with the upgrade command.
    """
    return SQLStore(url, create=create)


def unavailable(exc: OperationalError, url: str) -> StorageUnavailable:
    """The predwatch error for a database that is down, restarting or locked (retry later)."""
    reason = str(exc.orig or exc).strip().splitlines()
    return StorageUnavailable(
        f"the database {url} is unavailable: {reason[0] if reason else 'unknown reason'}",
        detail={"retry": True},
    )


class SQLStore(SetQueries, SessionQueries, JobsMixin):
    """The ``Store`` over SQLAlchemy Core; see ``predwatch.storage.base.Store`` for the contract.

    A database that is unreachable or locked raises ``StorageUnavailable`` (transient)."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        parsed = normalize_url(url)
        self.url = display_url(parsed)
        path = sqlite_file(parsed)
        # SQLite files: WAL checkpoints on a thread of their own, not inside a write's commit.
        self._checkpointer = WalCheckpointer(path) if path is not None else None
        self.engine: Engine = make_engine(parsed, background_checkpoints=path is not None)
        self.dialect = self.engine.dialect.name
        try:
            ensure_schema(self.engine, create=create)
        except OperationalError as exc:
            self.engine.dispose()
            raise unavailable(exc, self.url) from exc
        except BaseException:
            self.engine.dispose()
            raise
        # preserve_rowcount: SQLAlchemy only keeps UPDATE/DELETE row counts by default; the
        # drivers' executemany sums inserted rows, which is how ON CONFLICT skips are counted.
        self._writer = self.engine.execution_options(**{WRITE: True}, preserve_rowcount=True)
        # One-statement reads need no transaction: on PostgreSQL, autocommit saves the BEGIN
        # and ROLLBACK round trips around the statement (the token lookup of every ingest
        # request was three round trips for one query).
        self._single = (self.engine.execution_options(isolation_level="AUTOCOMMIT")
                        if self.dialect == "postgresql" else self.engine)
        self._encode = rows.PredictionEncoder(self.engine.dialect)
        self._point_writer = queries.PointWriter(self.engine.dialect)

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing -----------------------------------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[Connection]:
        try:
            with self._writer.begin() as conn:
                yield conn
        except OperationalError as exc:
            raise unavailable(exc, self.url) from exc
        if self._checkpointer is not None:
            self._checkpointer.wrote()

    @contextmanager
    def _read(self, engine: Engine | None = None) -> Iterator[Connection]:
        # One transaction: on SQLite (WAL) a consistent snapshot for a page and its total.
        # ``engine``: another configuration of the store's engine (``self._single``).
        try:
            with (engine or self.engine).connect() as conn:
                yield conn
        except OperationalError as exc:
            raise unavailable(exc, self.url) from exc

    def _upsert(self, table: Any) -> Any:
        return (pg_insert if self.dialect == "postgresql" else sqlite_insert)(table)

    # --- runs ---------------------------------------------------------------------------------
    def create_run(self, run: Run) -> Run:
        try:
            with self._write() as conn:
                conn.execute(insert(runs).values(rows.run_to_row(run)))
        except IntegrityError:
            raise Conflict(f"run {run.id!r} already exists") from None
        return self.get_run(run.id)

    def ensure_run(self, run: Run) -> Run:
        with self._write() as conn:
            conn.execute(self._upsert(runs).values(rows.run_to_row(run)).on_conflict_do_nothing())
            queries.heartbeat(conn, run.id)  # a writer (re)opens it: alive
        return self.get_run(run.id)

    def get_run(self, run_id: str, *, owner: str | None = None) -> Run:
        with self._read() as conn:
            row = conn.execute(_RUN_BY_ID, {"run_id": run_id}).mappings().first()
        if row is None or (owner is not None and row["owner"] != owner):
            raise NotFound(f"run {run_id!r} not found")
        return rows.row_to_run(row)

    def list_runs(
        self,
        *,
        owner: str | None = None,
        search: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[Run]:
        conds = queries.run_conditions(owner, search)
        q = select(runs).where(*conds)
        if cursor:
            q = q.where(queries.runs_after(queries.decode_cursor(cursor, "runs", 2)))
        q = q.order_by(R.created_at.desc(), R.id.desc()).limit(max(limit, 0) + 1)
        with self._read() as conn:
            found = [rows.row_to_run(r) for r in conn.execute(q).mappings()]
            total = conn.scalar(select(func.count()).select_from(runs).where(*conds))
        page, more = found[:limit], len(found) > limit
        next_cursor = None
        if more and page:
            last = page[-1]
            next_cursor = queries.encode_cursor(
                "runs", queries.run_cursor_key(last.created_at, last.id)
            )
        return Page(items=page, total=int(total or 0), next_cursor=next_cursor)

    def finish_run(self, run_id: str, *, status: str = "finished") -> Run:
        if status not in RUN_STATUSES:
            raise PayloadError(f"run status must be one of {RUN_STATUSES}, not {status!r}",
                               detail={"field": "status"})
        now = utcnow()
        finished_at = None if status == "running" else now
        with self._write() as conn:
            done = conn.execute(
                update(runs).where(R.id == run_id)
                .values(status=status, finished_at=finished_at, last_seen_at=now)
            )
        if done.rowcount == 0:
            raise NotFound(f"run {run_id!r} not found")
        return self.get_run(run_id)

    def delete_run(self, run_id: str) -> None:
        """Delete a run, its evaluation points, predictions, tokens and checkpoint jobs
        (``NotFound`` if absent: then nothing is deleted)."""
        with self._write() as conn:
            # Children first and explicitly: correct even where foreign keys are not enforced.
            for child in (predictions, point_attempts, eval_points, run_tokens):
                conn.execute(delete(child).where(child.c.run_id == run_id))
            self._delete_run_jobs(conn, run_id)  # (no foreign key: jobs may precede their run)
            done = conn.execute(delete(runs).where(R.id == run_id))
            if done.rowcount == 0:
                raise NotFound(f"run {run_id!r} not found")

    # --- run write tokens and read API keys ---------------------------------------------------
    def add_run_token(self, run_id: str, token_hash: str) -> None:
        self.get_run(run_id)
        try:
            with self._write() as conn:
                conn.execute(insert(run_tokens).values(
                    run_id=run_id, token_hash=token_hash, created_at=utcnow()
                ))
        except IntegrityError:
            raise Conflict("token already registered") from None

    def run_for_token(self, token_hash: str) -> Run | None:
        with self._read(self._single) as conn:  # every ingest request: a statement built once
            row = conn.execute(_RUN_FOR_TOKEN, {"token_hash": token_hash}).mappings().first()
        return None if row is None else rows.row_to_run(row)

    def revoke_run_tokens(self, run_id: str) -> int:
        with self._write() as conn:
            done = conn.execute(
                update(run_tokens)
                .where(run_tokens.c.run_id == run_id, run_tokens.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        return done.rowcount

    def create_user(self, name: str) -> str:
        with self._write() as conn:
            self._ensure_user(conn, name)
        return name

    def _ensure_user(self, conn: Connection, name: str) -> None:
        conn.execute(
            self._upsert(users).values(name=name, created_at=utcnow()).on_conflict_do_nothing()
        )

    def add_api_key(self, user: str, key_hash: str, *, label: str | None = None) -> str:
        """Store a key hash for ``user`` (created when absent); returns the key's id."""
        key_id = uuid.uuid4().hex
        try:
            with self._write() as conn:
                self._ensure_user(conn, user)
                conn.execute(
                    insert(api_keys).values(
                        id=key_id, user_name=user, key_hash=key_hash, label=label,
                        created_at=utcnow(),
                    )
                )
        except IntegrityError:
            raise Conflict("API key already registered") from None
        return key_id

    def user_for_key(self, key_hash: str) -> str | None:
        q = select(api_keys.c.user_name).where(
            api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None)
        )
        with self._read() as conn:
            return conn.scalar(q)

    def list_api_keys(self, user: str | None = None) -> list[dict[str, Any]]:
        """Keys (never their hashes), oldest first: ``[{id, user, label, created_at,
        revoked_at}]``, of one user or of everyone."""
        q = select(api_keys.c.id, api_keys.c.user_name.label("user"), api_keys.c.label,
                   api_keys.c.created_at, api_keys.c.revoked_at)
        if user is not None:
            q = q.where(api_keys.c.user_name == user)
        with self._read() as conn:
            return [dict(r) for r in conn.execute(q.order_by(api_keys.c.created_at)).mappings()]

    def has_api_keys(self) -> bool:
        """Whether any key is not revoked (one indexed probe, not a listing)."""
        q = select(api_keys.c.id).where(api_keys.c.revoked_at.is_(None)).limit(1)
        with self._read() as conn:
            return conn.scalar(q) is not None

    def revoke_api_key(self, key_id: str) -> None:
        """Revoke a key by id (``NotFound`` if unknown; revoking twice is a no-op)."""
        with self._write() as conn:
            known = conn.scalar(select(api_keys.c.id).where(api_keys.c.id == key_id))
            if known is None:
                raise NotFound(f"API key {key_id!r} not found")
            conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )

    # --- writing ------------------------------------------------------------------------------
    def write_eval_point(self, point: EvalPoint, predictions: Sequence[Prediction]) -> int:
        """Store one evaluation point and its predictions in one transaction.

        Every prediction must belong to ``point`` (same run and step; ``PayloadError`` otherwise).
        The run row is created when absent, and its ``last_seen_at`` refreshed. The rows join the
        point's attempt (see ``EvalPoint.writer``): the writer's own attempt when it wrote this
        step before, else the next one. Rows already stored (same identity: run, prompt_id, step,
        attempt, sample_index, sample_number) are skipped. Re-writing the newest attempt keeps the
        stored epoch, generation time and card unless the new record supplies them. The point's
        aggregates are those of its stored rows (taken from the records when the point is new,
        else recomputed). Returns the number of predictions inserted.
        """
        return self.write_eval_points([(point, predictions)])[0]

    def write_eval_points(
        self, items: Sequence[tuple[EvalPoint, Sequence[Prediction]]]
    ) -> list[int]:
        """Store several evaluation points, each as ``write_eval_point`` would, in one
        transaction (all or nothing; one commit): the server's group commit. Returns the number
        of predictions inserted for each item, in order.

        The points are written in (run, step) order whatever their order in ``items``: on
        PostgreSQL each point locks its run's row, and one order in every transaction means
        two concurrent groups never wait for each other in a cycle (no deadlock).
        """
        # Before the transaction (no lock held): the rows, and the points' aggregates in case
        # the points turn out to be new (the common case; see PointWriter.write).
        prepared = [self._prepare(point, preds) for point, preds in items]
        order = sorted(range(len(items)), key=lambda i: (items[i][0].run_id, items[i][0].step))
        try:
            return self._write_prepared(prepared, order)
        except StorageUnavailable as exc:
            # A connection found dead (PostgreSQL restarted while it was checked out, or its
            # end had not reached the socket at checkout, see engine._closed_by_server) fails
            # its transaction, and SQLAlchemy discards the pool: once more, on a new
            # connection. The writes are idempotent: a commit whose answer was lost is not
            # stored twice (its rows then count as skipped, not inserted).
            if not is_connection_lost(exc):
                raise
            log.info("predwatch: %s; writing again on a new connection", exc)
            return self._write_prepared(prepared, order)

    def _write_prepared(self, prepared: list[Any], order: list[int]) -> list[int]:
        """Write prepared points (``_prepare``) in ``order``, in one transaction."""
        inserted = [0] * len(prepared)
        with self._write() as conn:
            for i in order:
                inserted[i] = self._write_point(conn, *prepared[i])
        return inserted

    def _prepare(self, point: EvalPoint, predictions: Sequence[Prediction]
                 ) -> tuple[EvalPoint, float | None, list[tuple[Any, ...]], dict[str, Any] | None]:
        """Check one point and encode its rows: ``(point, epoch, encoded rows, aggregates)``."""
        for p in predictions:
            if p.run_id != point.run_id or p.step != point.step:
                raise PayloadError(
                    f"prediction for run {p.run_id!r} step {p.step} written with evaluation point "
                    f"run {point.run_id!r} step {point.step}; write one point at a time",
                    detail={"field": "step"},
                )
        if not 0 <= point.attempt <= _INT32:
            raise PayloadError(f"attempt must be between 0 and {_INT32}, not {point.attempt}",
                               detail={"field": "eval_point.attempt"})
        params = [self._encode(p) for p in predictions]
        aggregates = queries.point_aggregates(predictions)
        if self.dialect == "postgresql":  # no NUL in PostgreSQL text (the encoder strips rows')
            if aggregates is not None:
                aggregates["metric_avgs"] = without_nul(aggregates["metric_avgs"])
            point = point.model_copy(update={"card": without_nul(point.card)})
        epoch = point.epoch
        if epoch is None:
            epoch = next((p.epoch for p in predictions if p.epoch is not None), None)
        return point, epoch, params, aggregates

    def _write_point(self, conn: Connection, point: EvalPoint, epoch: float | None,
                     params: list[tuple[Any, ...]], aggregates: dict[str, Any] | None) -> int:
        """Write one prepared point inside the caller's transaction (see ``_prepare``)."""
        return self._point_writer.write(conn, point, epoch, params, aggregates)

    # --- reading ------------------------------------------------------------------------------
    def list_predictions(
        self,
        run_id: str,
        *,
        epoch: float | None = None,
        step: int | None = None,
        failed_only: bool = False,
        validator: str | None = None,
        search: str | None = None,
        sort: str | None = None,
        limit: int = 100,
        offset: int = 0,
        cursor: str | None = None,
    ) -> Page[Prediction]:
        """See ``Store.list_predictions``. ``cursor`` wins over ``offset`` when both are given."""
        f = queries.PredictionFilter(run_id, epoch, step, failed_only, validator, search)
        with self._read() as conn:
            page, total, next_cursor = queries.prediction_page(
                conn, f, queries.point_steps(conn, f), sort=sort, limit=limit, offset=offset,
                cursor=cursor)
        return Page(
            items=[rows.row_to_prediction(r._mapping) for r in page],
            total=total,
            next_cursor=next_cursor,
        )

    def eval_points(self, run_id: str) -> list[EvalPoint]:
        with self._read() as conn:
            found = conn.execute(select(eval_points).where(E.run_id == run_id).order_by(E.step))
            return [rows.row_to_eval_point(r) for r in found.mappings()]

    def point_attempts(self, run_id: str, step: int) -> list[EvalPoint]:
        """Every attempt of one evaluation point, oldest first, each with its own card, writer
        and row counts. A point written before attempts existed has one, attempt 0, with the
        point's card."""
        counts = (
            select(P.attempt, func.count().label("sample_count"),
                   func.count(P.error).label("failed_count"))
            .where(P.run_id == run_id, P.step == step)
            .group_by(P.attempt)
            .subquery()
        )
        q = (
            select(point_attempts, counts.c.sample_count, counts.c.failed_count)
            .outerjoin(counts, counts.c.attempt == A.attempt)
            .where(A.run_id == run_id, A.step == step)
            .order_by(A.attempt)
        )
        with self._read() as conn:
            found = [rows.row_to_attempt(r) for r in conn.execute(q).mappings()]
            if not found:
                point = conn.execute(
                    select(eval_points).where(E.run_id == run_id, E.step == step)
                ).mappings().first()
                if point is not None:
                    found = [rows.row_to_eval_point(point)]
        return found

    def epochs(self, run_id: str) -> list[dict[str, Any]]:
        """``[{epoch, prediction_count, latest_step}]`` in training order (from aggregates)."""
        q = (
            select(E.epoch, func.sum(E.sample_count), func.max(E.step))
            .where(E.run_id == run_id)
            .group_by(E.epoch)
            .order_by(func.min(E.step))
        )
        with self._read() as conn:
            return [
                {"epoch": e, "prediction_count": int(n), "latest_step": s}
                for e, n, s in conn.execute(q)
            ]

    def eval_point(
        self, run_id: str, step: int | None = None, *, before: int | None = None
    ) -> EvalPoint | None:
        """One evaluation point: at ``step``; else the last one before ``before``; else the
        run's last. None when there is no such point."""
        q = select(eval_points).where(E.run_id == run_id)
        if step is not None:
            q = q.where(E.step == step)
        elif before is not None:
            q = q.where(E.step < before)
        with self._read() as conn:
            row = conn.execute(q.order_by(E.step.desc()).limit(1)).mappings().first()
        return None if row is None else rows.row_to_eval_point(row)

    def trends(self, run_id: str) -> list[TrendPoint]:
        q = select(*(E[c] for c in rows.TREND_COLUMNS)).where(E.run_id == run_id).order_by(E.step)
        with self._read() as conn:
            return [rows.row_to_trend_point(r) for r in conn.execute(q).mappings()]

    def trends_of_runs(self, run_ids: Sequence[str]) -> dict[str, list[TrendPoint]]:
        """``trends`` of many runs, one query per 500 ids (was one per run in the runs list:
        2,000 queries to sort 1,000 runs with their job counts)."""
        found: dict[str, list[TrendPoint]] = {run_id: [] for run_id in run_ids}
        columns = [E.run_id, *(E[c] for c in rows.TREND_COLUMNS)]
        with self._read() as conn:
            for chunk in queries.id_chunks(run_ids):
                q = select(*columns).where(E.run_id.in_(chunk)).order_by(E.run_id, E.step)
                for r in conn.execute(q).mappings():
                    found[r["run_id"]].append(rows.row_to_trend_point(r))
        return found

    def predictions_after(
        self, run_id: str, after_seq: int, *, limit: int = 500
    ) -> list[tuple[int, Prediction]]:
        q = (
            select(predictions)
            .where(P.run_id == run_id, P.id > after_seq)
            .order_by(P.id)
            .limit(limit)
        )
        with self._read() as conn:
            return [(r["id"], rows.row_to_prediction(r)) for r in conn.execute(q).mappings()]

    def last_sequence(self, run_id: str) -> int:
        """The sequence number of the run's newest prediction (0 when none): where a live
        stream that should only show new rows starts."""
        with self._read() as conn:
            return int(conn.scalar(select(func.max(P.id)).where(P.run_id == run_id)) or 0)

    def timeline(self, run_id: str, prompt_id: str) -> list[Prediction]:
        q = (
            select(*rows.PREDICTION_COLUMNS)
            .where(P.run_id == run_id, P.prompt_id == prompt_id)
            .order_by(P.step, P.attempt, P.sample_index, P.sample_number)
        )
        with self._read() as conn:
            return rows.predictions_from(conn.execute(q))

    def point_predictions(self, run_id: str, step: int) -> list[Prediction]:
        q = (
            select(*rows.PREDICTION_COLUMNS)
            .where(P.run_id == run_id, P.step == step)
            .order_by(P.attempt, P.sample_index, P.sample_number, P.id)
        )
        with self._read() as conn:
            return rows.predictions_from(conn.execute(q))

    # --- the original system's routes (storage/compat.py) -------------------------------------
    def original_predictions(
        self,
        run_id: str,
        *,
        epoch: int | None = None,
        step: int | None = None,
        failed_only: bool = False,
        validator: str | None = None,
        search: str | None = None,
        sort: str | None = None,
        limit: int = 50,
        offset: int = 0,
        cursor: str | None = None,
    ) -> Page[tuple[int, Prediction]]:
        """See ``Store.original_predictions``."""
        with self._read() as conn:
            return compat.page(conn, run_id, epoch=epoch, step=step, failed_only=failed_only,
                               validator=validator, search=search, sort=sort, limit=limit,
                               offset=offset, cursor=cursor)

    def epoch_sums(self, run_id: str) -> list[EpochSums]:
        """See ``Store.epoch_sums``."""
        with self._read() as conn:
            return compat.epoch_sums(conn, run_id)
