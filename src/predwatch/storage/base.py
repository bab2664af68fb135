"""The ``Store`` protocol: the one seam between predwatch and its database.

One implementation (``storage/sql.py``: ``SQLStore``) serves SQLite and PostgreSQL; ``open_store``
picks by URL. Readers (server, UI, CLI, analysis) and writers (sinks, recorder) use only what is
declared here, so the contract is readable in one sitting. This module imports no SQLAlchemy:
code that only talks to a store never loads the database layer.

Errors: ``NotFound``, ``Conflict``, ``PayloadError`` as documented per method, and
``StorageUnavailable`` from any method when the database is unreachable or locked (transient).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, runtime_checkable

from predwatch.records import EvalPoint, Prediction, Run, TrendPoint
from predwatch.sets.model import PredictionSet, SetItem, SetVersion

if TYPE_CHECKING:  # the queue's record lives with its table
    from predwatch.storage.jobs import Job

T = TypeVar("T")


@dataclass
class Page(Generic[T]):
    """One page of a list. ``next_cursor`` is an opaque keyset cursor (None on the last page);
    ``total`` is the number of items matching the filter (None when not computed)."""

    items: list[T] = field(default_factory=list)
    total: int | None = None
    next_cursor: str | None = None


@dataclass
class EpochSums:
    """Sums over the rows of one exact epoch (``Store.epoch_sums``): what the original
    ``/trends`` route needs to average per integer epoch exactly (sums and non-null counts add
    up across epochs; averages of averages would not)."""

    epoch: float | None
    rows: int
    last_step: int
    sums: dict[str, tuple[float, int]] = field(default_factory=dict)  # name -> (sum, non-null)
    min_cer: float | None = None
    max_cer: float | None = None
    validated: int = 0
    passed: int = 0
    failed: int = 0

    def merge(self, other: EpochSums) -> EpochSums:
        """The sums of both (the epoch of ``self`` is kept)."""
        sums = dict(self.sums)
        for name, (total, count) in other.sums.items():
            mine = sums.get(name, (0.0, 0))
            sums[name] = (mine[0] + total, mine[1] + count)
        cers = [c for c in (self.min_cer, other.min_cer) if c is not None]
        tops = [c for c in (self.max_cer, other.max_cer) if c is not None]
        return EpochSums(
            epoch=self.epoch, rows=self.rows + other.rows,
            last_step=max(self.last_step, other.last_step), sums=sums,
            min_cer=min(cers) if cers else None, max_cer=max(tops) if tops else None,
            validated=self.validated + other.validated, passed=self.passed + other.passed,
            failed=self.failed + other.failed,
        )


@runtime_checkable
class Store(Protocol):
    url: str
    dialect: str  # "sqlite" | "postgresql"

    def close(self) -> None: ...

    # --- runs ---------------------------------------------------------------------------------
    def create_run(self, run: Run) -> Run:
        """Insert a run; ``Conflict`` when its id exists."""
        ...

    def ensure_run(self, run: Run) -> Run:
        """Insert the run when absent; return the stored one either way."""
        ...

    def get_run(self, run_id: str, *, owner: str | None = None) -> Run:
        """The run; ``NotFound`` when absent or (with ``owner``) owned by someone else."""
        ...

    def list_runs(
        self,
        *,
        owner: str | None = None,
        search: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[Run]:
        """Runs newest first, keyset paged."""
        ...

    def finish_run(self, run_id: str, *, status: str = "finished") -> Run: ...

    def delete_run(self, run_id: str) -> None:
        """Delete a run with its evaluation points, predictions, tokens and checkpoint jobs."""
        ...

    # --- run write tokens and read API keys (only hashes are stored) --------------------------
    def add_run_token(self, run_id: str, token_hash: str) -> None: ...

    def run_for_token(self, token_hash: str) -> Run | None:
        """The run a non-revoked token hash belongs to, else None."""
        ...

    def revoke_run_tokens(self, run_id: str) -> int: ...

    def create_user(self, name: str) -> str:
        """Create (or return) a user by name; returns the user name."""
        ...

    def add_api_key(self, user: str, key_hash: str, *, label: str | None = None) -> str:
        """Store a key hash for a user; returns the key's id."""
        ...

    def user_for_key(self, key_hash: str) -> str | None: ...

    def list_api_keys(self, user: str | None = None) -> list[dict[str, Any]]:
        """Keys (never their hashes), oldest first: ``[{id, user, label, created_at,
        revoked_at}]``, of one user or of everyone."""
        ...

    def has_api_keys(self) -> bool:
        """Whether any key is not revoked (cheap: the server asks at start-up)."""
        ...

    def revoke_api_key(self, key_id: str) -> None: ...

    # --- browser sessions (``storage/sessions.py``; only digests of session ids are stored) ---
    def create_session(self, session_hash: str, key_hash: str, *, expires_at: datetime
                       ) -> str | None:
        """Store a session signed in by the non-revoked key ``key_hash``; returns the key's
        user, or None (nothing stored) when the key is unknown or revoked."""
        ...

    def user_for_session(self, session_hash: str) -> str | None:
        """The user of a live session (not expired, not revoked, its key not revoked)."""
        ...

    def revoke_session(self, session_hash: str) -> bool:
        """End a session (sign-out); True when there was one."""
        ...

    # --- writing ------------------------------------------------------------------------------
    def write_eval_point(self, point: EvalPoint, predictions: Sequence[Prediction]) -> int:
        """Store one evaluation point and its predictions in one transaction.

        A row's identity is (run_id, prompt_id, step, attempt, sample_index, sample_number):
        two samples of one prompt (different ``sample_index``) are two rows; rows already there
        are skipped, so re-sending a batch is idempotent. The attempt comes from the point's
        ``writer``: its own attempt when it recorded this step before, else 0 for a new point
        or the next number (a resumed run recording a step again: kept, never dropped).
        Returns the number of predictions inserted (never more than were stored).
        """
        ...

    def write_eval_points(
        self, items: Sequence[tuple[EvalPoint, Sequence[Prediction]]]
    ) -> list[int]:
        """Store several evaluation points, each exactly as ``write_eval_point`` would, in one
        transaction (all or nothing, one commit). Returns the rows inserted per item, in order.
        """
        ...

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
        """Predictions of a run, filtered; ``total`` honours the filter.

        ``failed_only``: validation failed or generation errored. ``validator``: a validator kind
        that failed. ``search``: substring of prompt, answer or expected answer. ``sort``: a score
        name, ``-`` prefix for descending (default: step, then sample_index).
        """
        ...

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
        """``list_predictions`` for the original ``/api/training/predictions`` route: items are
        ``(sequence number, prediction)`` and ``epoch`` selects an integer epoch (every point
        whose epoch is in ``[epoch, epoch + 1)``; epoch 0 also holds points without one)."""
        ...

    def epoch_sums(self, run_id: str) -> list[EpochSums]:
        """Score sums and counts per exact epoch, in epoch order (the original ``/trends``)."""
        ...

    def eval_points(self, run_id: str) -> list[EvalPoint]:
        """Evaluation points of a run in step order, with sample and failed counts."""
        ...

    def eval_point(
        self, run_id: str, step: int | None = None, *, before: int | None = None
    ) -> EvalPoint | None:
        """One evaluation point: at ``step``; else the last one before ``before``; else the
        run's last. None when there is no such point."""
        ...

    def point_attempts(self, run_id: str, step: int) -> list[EvalPoint]:
        """Every attempt of one evaluation point, oldest first, each with its own card, writer
        and row counts (``eval_point`` shows the newest)."""
        ...

    def epochs(self, run_id: str) -> list[dict[str, Any]]:
        """``[{epoch, prediction_count, latest_step}]`` (the compat ``/epochs`` route)."""
        ...

    def trends(self, run_id: str) -> list[TrendPoint]:
        """One aggregate entry per evaluation point, in step order."""
        ...

    def trends_of_runs(self, run_ids: Sequence[str]) -> dict[str, list[TrendPoint]]:
        """``trends`` of many runs in one read (a runs list): every id maps to its entries
        (an empty list for a run without points or unknown)."""
        ...

    def predictions_after(
        self, run_id: str, after_seq: int, *, limit: int = 500
    ) -> list[tuple[int, Prediction]]:
        """Predictions inserted after the sequence number ``after_seq`` (for live streams).

        The sequence is the row's monotonically increasing primary key; pass 0 for all.
        """
        ...

    def last_sequence(self, run_id: str) -> int:
        """The sequence number of the run's newest prediction, 0 when none: where a live stream
        that shows only new rows starts."""
        ...

    def timeline(self, run_id: str, prompt_id: str) -> list[Prediction]:
        """Every answer to one prompt across a run's evaluation points, in (step, attempt,
        sample_index) order."""
        ...

    def point_predictions(self, run_id: str, step: int) -> list[Prediction]:
        """All predictions of one evaluation point, every attempt, in (attempt, sample_index)
        order (for comparisons)."""
        ...

    # --- prediction sets (``predwatch.sets.stored`` imports files and diffs versions) -------
    def create_set_version(
        self,
        name: str,
        items: Sequence[SetItem],
        *,
        description: str | None = None,
        source: str | None = None,
        owner: str | None = None,
    ) -> tuple[SetVersion, bool]:
        """Store ``items`` as the next version of set ``name`` (created when absent); when a
        version already has exactly these items it is returned instead. Returns
        ``(version, created)``. ``ConfigError`` for a bad name, ``DataError`` for no items or a
        repeated item id or prompt."""
        ...

    def list_sets(self) -> list[PredictionSet]:
        """Every set by name, with its latest version number and item count."""
        ...

    def get_set(self, name: str) -> PredictionSet:
        """One set with all its versions, oldest first; ``NotFound`` when absent."""
        ...

    def get_set_version(self, name: str, version: int | None = None) -> SetVersion:
        """A version of a set (the latest when ``version`` is None); ``NotFound`` when absent."""
        ...

    def list_set_items(
        self, name: str, version: int | None = None, *, limit: int | None = None,
        offset: int = 0,
    ) -> tuple[SetVersion, list[SetItem]]:
        """A version and its items in order (a page of them with ``limit``/``offset``)."""
        ...

    # --- the job queue of checkpoint workers (storage/jobs.py) --------------------------------
    def enqueue_job(
        self, run_id: str, step: int, path: str, *, epoch: float | None = None,
        payload: dict | None = None, max_attempts: int = 3,
    ) -> tuple[Job, bool]:
        """Queue a checkpoint for ``run_id`` at ``step`` (once per run and step); returns the
        job and whether it is new."""
        ...

    def claim_job(
        self, worker: str, *, lease_s: float = 120.0, run_id: str | None = None
    ) -> Job | None:
        """Lease the oldest pending (or lapsed) job (of ``run_id``) to ``worker``; None when
        there is none."""
        ...

    def heartbeat_job(self, job_id: str, worker: str, *, lease_s: float = 120.0) -> bool:
        """Extend the lease; False when the job is no longer ``worker``'s."""
        ...

    def finish_job(
        self, job_id: str, worker: str, *, error: str | None = None, retry: bool = True
    ) -> Job:
        """Done, or back to the queue with ``error`` while attempts remain (and ``retry``),
        else failed."""
        ...

    def list_jobs(
        self, *, run_id: str | None = None, status: str | None = None, limit: int = 200
    ) -> list[Job]: ...

    def job_counts(self, run_id: str | None = None) -> dict[str, int]:
        """``{pending, running, done, failed}`` counts."""
        ...

    def job_counts_of_runs(self, run_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """``job_counts`` of many runs in one read: every id maps to its four counts."""
        ...
