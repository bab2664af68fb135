"""Prediction sets: named sets, their immutable versions, and each version's items.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

Self-contained on purpose (no import of ``predwatch.storage.tables_sets``): a migration describes
the schema as it was at this revision.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _str(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.String(), nullable=nullable)


def _ts(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "prediction_sets",
        _str("id", nullable=False),
        _str("name", nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        _str("owner"),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_prediction_sets"),
        sa.UniqueConstraint("name", name="uq_prediction_sets_name"),
    )
    op.create_table(
        "set_versions",
        _str("set_id", nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        _str("content_hash", nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        _str("source"),
        _str("created_by"),
        _ts("created_at"),
        sa.ForeignKeyConstraint(
            ["set_id"], ["prediction_sets.id"], name="fk_set_versions_set_id_prediction_sets",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("set_id", "version", name="pk_set_versions"),
        sa.UniqueConstraint(
            "set_id", "content_hash", name="uq_set_versions_set_id_content_hash"
        ),
    )
    op.create_table(
        "set_items",
        _str("set_id", nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        _str("item_id", nullable=False),
        _str("custom_id"),
        _str("prompt_id", nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("messages", _json(), nullable=True),
        sa.Column("ground_truth", sa.Text(), nullable=True),
        sa.Column("validators", _json(), nullable=False),
        sa.Column("tags", _json(), nullable=False),
        sa.ForeignKeyConstraint(
            ["set_id", "version"], ["set_versions.set_id", "set_versions.version"],
            name="fk_set_items_set_id_set_versions", ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("set_id", "version", "position", name="pk_set_items"),
        sa.UniqueConstraint(
            "set_id", "version", "item_id", name="uq_set_items_set_id_version_item_id"
        ),
    )


def downgrade() -> None:
    for table in ("set_items", "set_versions", "prediction_sets"):
        op.drop_table(table)
