"""Row identity and attempts: same-prompt samples and re-recorded steps are kept, never merged.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

Additive: new columns are nullable or default to what old rows meant, nothing is dropped but the
old idempotency constraint, which a wider unique index replaces (old rows keep their identity:
attempt 0 and their own sample_index).

- ``predictions.attempt`` (0 for existing rows) and the identity index over
  ``(run_id, prompt_id, step, attempt, sample_index, sample_number)``: two samples of one prompt
  at one step (different ``sample_index``) are two rows, and a step recorded again after a
  resume is a new attempt instead of being skipped.
- ``point_attempts``: one row per recording of an evaluation point, with its writer and card.
- ``eval_points.attempt``: the newest attempt of the point (NULL for old points: 0).
- ``runs.last_seen_at``: the heartbeat that tells a crashed run from a running one.

SQLite cannot drop a table constraint, so there the predictions table is rebuilt (batch mode);
that takes a while on a large database (``predwatch db upgrade`` is a deliberate step).
Self-contained on purpose (no import of ``predwatch.storage.tables``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_KEY = "uq_predictions_run_id_prompt_id_step_sample_number"
NEW_KEY = "uq_predictions_identity"
IDENTITY = ["run_id", "prompt_id", "step", "attempt", "sample_index", "sample_number"]


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(
            sa.Column("attempt", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        batch.drop_constraint(OLD_KEY, type_="unique")
    op.create_index(NEW_KEY, "predictions", IDENTITY, unique=True)
    op.add_column("eval_points", sa.Column("attempt", sa.Integer(), nullable=True))
    op.add_column("runs", sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "point_attempts",
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("writer", sa.String(), nullable=True),
        sa.Column("epoch", sa.Double(), nullable=True),
        sa.Column("trigger", sa.String(), nullable=False),
        sa.Column("generation_ms", sa.Double(), nullable=True),
        sa.Column("card", _json(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_point_attempts_run_id_runs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "step", "attempt", name="pk_point_attempts"),
        sa.UniqueConstraint(
            "run_id", "step", "writer", name="uq_point_attempts_run_id_step_writer"
        ),
    )


def downgrade() -> None:
    op.drop_table("point_attempts")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("last_seen_at")
    with op.batch_alter_table("eval_points") as batch:
        batch.drop_column("attempt")
    op.drop_index(NEW_KEY, table_name="predictions")
    # Rows that only the new identity told apart cannot all come back under the old key.
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("attempt")
        batch.create_unique_constraint(OLD_KEY, ["run_id", "prompt_id", "step", "sample_number"])
