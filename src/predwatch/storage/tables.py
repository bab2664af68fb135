"""The database schema: one ``MetaData`` for SQLite and PostgreSQL.

Migrations (``storage/migrations/versions``) must produce exactly these tables; a test compares
the migrated schema with this module on both databases. A table added later is defined here (or
in ``tables_sets``, which this module imports) *and* created by a new migration.

Design notes:
- ``predictions.id`` is the live-stream sequence (``predictions_after``): monotonically
  increasing per run, never supplied by writers.
- ``eval_points`` carries aggregates of its predictions, recomputed in the transaction that writes
  them, so trends, epoch summaries and unfiltered page totals cost O(points), not O(rows).
- ``failed_validators`` is derived at write time (``|kind|name|`` of every failed validator) so
  "failed validator X" is a plain ``LIKE`` on both databases, without JSON path dialects.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

# The sets tables register on the same metadata: importing them here makes ``metadata`` whole.
from predwatch.storage import tables_sets as _tables_sets  # noqa: F401
from predwatch.storage.columns import JSONType, SeqType, UTCDateTime, metadata
from predwatch.storage.columns import ts_column as _ts

__all__ = ["IDENTITY_COLUMNS", "JSONType", "SeqType", "UTCDateTime", "metadata"]

# The identity of a prediction row (see ``predictions``); ON CONFLICT names these columns.
IDENTITY_COLUMNS = ("run_id", "prompt_id", "step", "attempt", "sample_index", "sample_number")
IDENTITY_INDEX = "uq_predictions_identity"

runs = Table(
    "runs",
    metadata,
    Column("id", String, primary_key=True),
    Column("name", String),
    Column("owner", String),
    Column("model_name", String),
    Column("base_model", String),
    Column("config", JSONType, nullable=False),
    Column("status", String, nullable=False),
    _ts("created_at"),
    _ts("finished_at", nullable=True),
    # Heartbeat: the last write of the run's writer (a running run not seen for long is stale).
    _ts("last_seen_at", nullable=True),
    Index(None, "created_at", "id"),
    Index(None, "owner", "created_at", "id"),
)

users = Table(
    "users",
    metadata,
    Column("name", String, primary_key=True),
    _ts("created_at"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String, primary_key=True),
    Column("user_name", String, ForeignKey("users.name", ondelete="CASCADE"), nullable=False),
    Column("key_hash", String, nullable=False, unique=True),
    Column("label", String),
    _ts("created_at"),
    _ts("revoked_at", nullable=True),
)

run_tokens = Table(
    "run_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("token_hash", String, nullable=False, unique=True),
    _ts("created_at"),
    _ts("revoked_at", nullable=True),
)

eval_points = Table(
    "eval_points",
    metadata,
    Column("run_id", String, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("step", Integer, nullable=False),
    Column("epoch", Double),
    Column("trigger", String, nullable=False),
    Column("generation_ms", Double),
    Column("card", JSONType, nullable=False),
    _ts("created_at"),
    # Aggregates over the point's stored predictions (see queries.PointWriter).
    Column("sample_count", Integer, nullable=False),  # rows stored
    Column("failed_count", Integer, nullable=False),  # rows whose generation failed
    Column("flagged_count", Integer, nullable=False),  # failed generation or failed validation
    Column("validated_count", Integer, nullable=False),  # rows with a validation verdict
    Column("validation_pass_count", Integer, nullable=False),
    Column("truncated_count", Integer, nullable=False),  # finish_reason == "length"
    Column("avg_exact_match", Double),
    Column("avg_char_error_rate", Double),
    Column("min_char_error_rate", Double),
    Column("max_char_error_rate", Double),
    Column("avg_length_ratio", Double),
    Column("avg_word_overlap", Double),
    Column("avg_latency_ms", Double),
    Column("avg_completion_tokens", Double),
    Column("metric_avgs", JSONType, nullable=False),  # {metric: mean} of ``predictions.metrics``
    # The newest attempt (whose card, trigger and epoch the row shows); NULL: 0 (before 0003).
    Column("attempt", Integer),
    PrimaryKeyConstraint("run_id", "step"),
    Index(None, "run_id", "epoch"),
)

predictions = Table(
    "predictions",
    metadata,
    Column("id", SeqType, primary_key=True, autoincrement=True),
    # where
    Column("run_id", String, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("step", Integer, nullable=False),
    Column("epoch", Double),
    Column("trigger", String, nullable=False),
    Column("sample_index", Integer, nullable=False),
    Column("sample_number", Integer, nullable=False),
    # 0, then 1, 2, ... for each later recording of the same step (a resumed run): never merged
    Column("attempt", Integer, nullable=False, server_default=text("0")),
    # identity
    Column("prompt_id", String, nullable=False),
    Column("source_index", Integer),
    Column("sample_source", String, nullable=False),
    Column("sample_source_id", String),
    Column("set_id", String),
    Column("set_version", Integer),
    Column("item_id", String),
    # content
    Column("prompt", Text, nullable=False),
    Column("messages", JSONType),
    Column("ground_truth", Text),
    Column("prediction", Text, nullable=False),
    Column("truncated", Boolean, nullable=False),
    # scores
    Column("exact_match", Double),
    Column("char_error_rate", Double),
    Column("length_ratio", Double),
    Column("word_overlap", Double),
    Column("metrics", JSONType, nullable=False),
    # validation
    Column("validation_pass", Boolean),
    Column("validation_kind", String),
    Column("validation_errors", JSONType, nullable=False),
    Column("validation_results", JSONType, nullable=False),
    Column("failed_validators", Text),  # derived: "|kind|name|..." of failed validators
    # reproducibility
    Column("generation_params", JSONType, nullable=False),
    Column("prompt_tokens", Integer),
    Column("completion_tokens", Integer),
    Column("total_tokens", Integer),
    Column("latency_ms", Double),
    Column("max_new_tokens", Integer),
    Column("do_sample", Boolean),
    Column("finish_reason", String),
    Column("checkpoint", String),
    Column("model_revision", String),
    Column("chat_template_hash", String),
    Column("precision", String),
    Column("library_versions", JSONType, nullable=False),
    Column("error", Text),
    _ts("created_at"),
    # Idempotency key: a row is one answer of one attempt at one step to one occurrence
    # (sample_index) of a prompt, so a prompt drawn twice keeps both answers. Column order puts
    # prompt_id before step so this one index also serves a prompt's timeline (run_id,
    # prompt_id -> steps) and ingest maintains one index fewer. A unique index, not a
    # constraint: SQLite cannot drop a constraint without rebuilding the table.
    Index(IDENTITY_INDEX, *IDENTITY_COLUMNS, unique=True),
    # Pages of a point / of a run in (step, sample_index) order, keyset by id.
    Index(None, "run_id", "step", "sample_index", "id"),
    # Live stream: rows of a run after a sequence number.
    Index(None, "run_id", "id"),
)

point_attempts = Table(
    "point_attempts",
    metadata,
    # One row per recording of an evaluation point: the first is attempt 0; a writer (recorder
    # session) that records an already recorded step adds the next attempt, with its own card.
    Column("run_id", String, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("step", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("writer", String),  # the writer's id (None: a writer that sends none)
    Column("epoch", Double),
    Column("trigger", String, nullable=False),
    Column("generation_ms", Double),
    Column("card", JSONType, nullable=False),
    _ts("created_at"),
    PrimaryKeyConstraint("run_id", "step", "attempt"),
    UniqueConstraint("run_id", "step", "writer"),
)
