"""The database schema: one ``MetaData`` for SQLite and PostgreSQL.

Migrations (``storage/migrations/versions``) must produce exactly these tables; a test compares
the migrated schema with this module on both databases. A table added later is defined here (or
in a module imported by ``predwatch.storage``) *and* created by a new migration.

Design notes:
- ``predictions.id`` is the live-stream sequence (``predictions_after``): monotonically
  increasing per run, never supplied by writers.
- ``eval_points`` carries aggregates of its predictions, recomputed in the transaction that writes
  them, so trends, epoch summaries and unfiltered page totals cost O(points), not O(rows).
- ``failed_validators`` is derived at write time (``|kind|name|`` of every failed validator) so
  "failed validator X" is a plain ``LIKE`` on both databases, without JSON path dialects.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

# Constraint names are explicit so later migrations (SQLite batch mode included) can refer to them.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

JSONType = JSON().with_variant(JSONB(), "postgresql")
# SQLite only aliases the rowid (cheap autoincrement) for a column typed exactly INTEGER.
SeqType = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp, stored and returned in UTC on both databases.

    SQLite has no time zone type (SQLAlchemy drops ``tzinfo`` without converting), so values are
    converted to UTC on the way in and marked UTC on the way out; naive inputs are taken as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        # A value that is no timestamp (SQLite stores any text) reads as None, so its row
        # becomes a marked placeholder (storage/undecodable.py) instead of failing the fetch.
        process = super().result_processor(dialect, coltype)
        if process is None:
            return None

        def tolerant(value: Any) -> Any:
            try:
                return process(value)
            except (ValueError, TypeError):
                return None

        return tolerant


def _ts(name: str, nullable: bool = False) -> Column[datetime]:
    return Column(name, UTCDateTime(), nullable=nullable)


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
    # Idempotency key. Column order puts prompt_id before step so this one index also serves a
    # prompt's timeline (run_id, prompt_id -> steps) and ingest maintains one index fewer.
    UniqueConstraint("run_id", "prompt_id", "step", "sample_number"),
    # Pages of a point / of a run in (step, sample_index) order, keyset by id.
    Index(None, "run_id", "step", "sample_index", "id"),
    # Live stream: rows of a run after a sequence number.
    Index(None, "run_id", "id"),
)

# Registers the sets tables on metadata. Imported last: tables_sets imports this module's
# metadata, so importing it at the top would be circular.
from predwatch.storage import tables_sets as _tables_sets  # noqa: E402, F401
