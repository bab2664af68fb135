"""Initial schema: runs, users, API keys, run tokens, evaluation points, predictions.

Revision ID: 0001
Revises:
Create Date: 2026-11-22

Self-contained on purpose (no import of ``predwatch.storage.tables``): a migration describes the
schema as it was at this revision, whatever the tables module says later.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _str(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.String(), nullable=nullable)


def _int(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.Integer(), nullable=nullable)


def _dbl(name: str) -> sa.Column:
    return sa.Column(name, sa.Double(), nullable=True)


def upgrade() -> None:
    op.create_table(
        "runs",
        _str("id", nullable=False),
        _str("name"),
        _str("owner"),
        _str("model_name"),
        _str("base_model"),
        sa.Column("config", _json(), nullable=False),
        _str("status", nullable=False),
        _ts("created_at"),
        _ts("finished_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
    )
    op.create_index("ix_runs_created_at_id", "runs", ["created_at", "id"])
    op.create_index("ix_runs_owner_created_at_id", "runs", ["owner", "created_at", "id"])

    op.create_table(
        "users",
        _str("name", nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("name", name="pk_users"),
    )
    op.create_table(
        "api_keys",
        _str("id", nullable=False),
        _str("user_name", nullable=False),
        _str("key_hash", nullable=False),
        _str("label"),
        _ts("created_at"),
        _ts("revoked_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["user_name"], ["users.name"], name="fk_api_keys_user_name_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_table(
        "run_tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        _str("run_id", nullable=False),
        _str("token_hash", nullable=False),
        _ts("created_at"),
        _ts("revoked_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_run_tokens_run_id_runs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_run_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_run_tokens_token_hash"),
    )
    op.create_index("ix_run_tokens_run_id", "run_tokens", ["run_id"])

    op.create_table(
        "eval_points",
        _str("run_id", nullable=False),
        _int("step", nullable=False),
        _dbl("epoch"),
        _str("trigger", nullable=False),
        _dbl("generation_ms"),
        sa.Column("card", _json(), nullable=False),
        _ts("created_at"),
        *(
            _int(name, nullable=False)
            for name in (
                "sample_count",
                "failed_count",
                "flagged_count",
                "validated_count",
                "validation_pass_count",
                "truncated_count",
            )
        ),
        *(
            _dbl(name)
            for name in (
                "avg_exact_match",
                "avg_char_error_rate",
                "min_char_error_rate",
                "max_char_error_rate",
                "avg_length_ratio",
                "avg_word_overlap",
                "avg_latency_ms",
                "avg_completion_tokens",
            )
        ),
        sa.Column("metric_avgs", _json(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_eval_points_run_id_runs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "step", name="pk_eval_points"),
    )
    op.create_index("ix_eval_points_run_id_epoch", "eval_points", ["run_id", "epoch"])

    op.create_table(
        "predictions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        _str("run_id", nullable=False),
        _int("step", nullable=False),
        _dbl("epoch"),
        _str("trigger", nullable=False),
        _int("sample_index", nullable=False),
        _int("sample_number", nullable=False),
        _str("prompt_id", nullable=False),
        _int("source_index"),
        _str("sample_source", nullable=False),
        _str("sample_source_id"),
        _str("set_id"),
        _int("set_version"),
        _str("item_id"),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("messages", _json(), nullable=True),
        sa.Column("ground_truth", sa.Text(), nullable=True),
        sa.Column("prediction", sa.Text(), nullable=False),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        _dbl("exact_match"),
        _dbl("char_error_rate"),
        _dbl("length_ratio"),
        _dbl("word_overlap"),
        sa.Column("metrics", _json(), nullable=False),
        sa.Column("validation_pass", sa.Boolean(), nullable=True),
        _str("validation_kind"),
        sa.Column("validation_errors", _json(), nullable=False),
        sa.Column("validation_results", _json(), nullable=False),
        sa.Column("failed_validators", sa.Text(), nullable=True),
        sa.Column("generation_params", _json(), nullable=False),
        _int("prompt_tokens"),
        _int("completion_tokens"),
        _int("total_tokens"),
        _dbl("latency_ms"),
        _int("max_new_tokens"),
        sa.Column("do_sample", sa.Boolean(), nullable=True),
        _str("finish_reason"),
        _str("checkpoint"),
        _str("model_revision"),
        _str("chat_template_hash"),
        _str("precision"),
        sa.Column("library_versions", _json(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        _ts("created_at"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_predictions_run_id_runs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_predictions"),
        sa.UniqueConstraint(
            "run_id",
            "prompt_id",
            "step",
            "sample_number",
            name="uq_predictions_run_id_prompt_id_step_sample_number",
        ),
    )
    op.create_index(
        "ix_predictions_run_id_step_sample_index_id",
        "predictions",
        ["run_id", "step", "sample_index", "id"],
    )
    op.create_index("ix_predictions_run_id_id", "predictions", ["run_id", "id"])


def downgrade() -> None:
    for table in ("predictions", "eval_points", "run_tokens", "api_keys", "users", "runs"):
        op.drop_table(table)
