"""The ``Store`` protocol: the one seam between predwatch and its database.

One implementation (``storage/sql.py``: ``SQLStore``) serves SQLite and PostgreSQL; ``open_store``
picks by URL. Readers (server, UI, CLI, analysis) and writers (sinks, recorder) use only what is
declared here, so the contract is readable in one sitting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar, runtime_checkable

from predwatch.records import EvalPoint, Prediction, Run, TrendPoint

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
        """Delete a run with its evaluation points, predictions and tokens."""
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

    def list_api_keys(self, user: str | None = None) -> list[dict]:
        """Keys (never their hashes), oldest first: ``[{id, user, label, created_at,
        revoked_at}]``, of one user or of everyone. (Added by storage.)"""
        ...

    def revoke_api_key(self, key_id: str) -> None: ...

    # --- writing ------------------------------------------------------------------------------
    def write_eval_point(self, point: EvalPoint, predictions: Sequence[Prediction]) -> int:
        """Store one evaluation point and its predictions in one transaction.

        Idempotent on (run_id, step, prompt_id, sample_number): rows already there are skipped.
        Returns the number of predictions inserted.
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

    def eval_points(self, run_id: str) -> list[EvalPoint]:
        """Evaluation points of a run in step order, with sample and failed counts."""
        ...

    def eval_point(
        self, run_id: str, step: int | None = None, *, before: int | None = None
    ) -> EvalPoint | None:
        """One evaluation point: at ``step``; else the last one before ``before``; else the
        run's last. None when there is no such point. (Added by storage.)"""
        ...

    def epochs(self, run_id: str) -> list[dict]:
        """``[{epoch, prediction_count, latest_step}]`` (the compat ``/epochs`` route)."""
        ...

    def trends(self, run_id: str) -> list[TrendPoint]:
        """One aggregate entry per evaluation point, in step order."""
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
        that shows only new rows starts. (Added by storage.)"""
        ...

    def timeline(self, run_id: str, prompt_id: str) -> list[Prediction]:
        """Every answer to one prompt across a run's evaluation points, in step order."""
        ...

    def point_predictions(self, run_id: str, step: int) -> list[Prediction]:
        """All predictions of one evaluation point (for comparisons)."""
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
