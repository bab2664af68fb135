"""The identity index in point order: ingest stays flat as a run grows.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04

The same unique index over the same six columns, its columns reordered from
``(run_id, prompt_id, step, ...)`` to ``(run_id, step, prompt_id, ...)``. Keyed by prompt
first, the 1,000 rows of a new point went to 1,000 places in the index (one per prompt, after
that prompt's earlier steps), so each point rewrote a page per prompt: on SQLite a 1,000-row
point took 11.9 ms to write at a run's first points and 27.6 ms from its 150th on. Keyed by
step first, a point's rows are one contiguous run of entries (9.2-10.1 ms at every point). A
prompt's timeline now probes the index once per evaluation point.

Nothing else changes: the index keeps its name and its columns, so ``ON CONFLICT`` and every
row's identity are what they were. Rebuilding the index reads the whole table once (on SQLite
about 10 s per million rows on 2 cores). Self-contained on purpose (no import of
``predwatch.storage.tables``).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "uq_predictions_identity"
PROMPT_ORDER = ["run_id", "prompt_id", "step", "attempt", "sample_index", "sample_number"]
POINT_ORDER = ["run_id", "step", "prompt_id", "attempt", "sample_index", "sample_number"]


def upgrade() -> None:
    op.drop_index(INDEX, table_name="predictions")
    op.create_index(INDEX, "predictions", POINT_ORDER, unique=True)


def downgrade() -> None:
    op.drop_index(INDEX, table_name="predictions")
    op.create_index(INDEX, "predictions", PROMPT_ORDER, unique=True)
