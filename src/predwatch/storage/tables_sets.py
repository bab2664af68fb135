"""Tables of prediction sets: a named set, its immutable versions, and each version's items.

Defined on the one ``metadata`` of ``predwatch.storage.columns`` (``tables`` imports this module,
so its ``metadata`` is whole) and created by migration ``0002_prediction_sets``.

- ``prediction_sets``: one row per name. ``id`` is what predictions record as ``set_id``.
- ``set_versions``: numbered 1, 2, ... per set; ``content_hash`` identifies the content, so
  importing the same items again finds the existing version instead of adding one.
- ``set_items``: the items of one version in their order (``position``). Items are stored per
  version (a golden set has hundreds to a few thousand items; copying keeps every version
  readable with one indexed range scan and makes a version's rows immutable by construction).
  ``item_id`` is unique within a version and stable across versions while the item is unchanged.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    ForeignKey,
    ForeignKeyConstraint,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from predwatch.storage.columns import JSONType, UTCDateTime, metadata

prediction_sets = Table(
    "prediction_sets",
    metadata,
    Column("id", String, primary_key=True),
    Column("name", String, nullable=False, unique=True),
    Column("description", Text),
    Column("owner", String),  # the user who created the set (None on an open server)
    Column("created_at", UTCDateTime(), nullable=False),
)

set_versions = Table(
    "set_versions",
    metadata,
    Column(
        "set_id", String, ForeignKey("prediction_sets.id", ondelete="CASCADE"), nullable=False
    ),
    Column("version", Integer, nullable=False),
    Column("content_hash", String, nullable=False),
    Column("item_count", Integer, nullable=False),
    Column("description", Text),  # what changed, like a commit message
    Column("source", String),  # where the items came from (a file name), when known
    Column("created_by", String),
    Column("created_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("set_id", "version"),
    UniqueConstraint("set_id", "content_hash"),
)

set_items = Table(
    "set_items",
    metadata,
    Column("set_id", String, nullable=False),
    Column("version", Integer, nullable=False),
    Column("position", Integer, nullable=False),
    Column("item_id", String, nullable=False),
    Column("custom_id", String),  # the item's own ``id`` when the file gave one
    Column("prompt_id", String, nullable=False),  # what predictions of this item record
    Column("prompt", Text, nullable=False),
    Column("messages", JSONType),
    Column("ground_truth", Text),
    Column("validators", JSONType, nullable=False),
    Column("tags", JSONType, nullable=False),
    ForeignKeyConstraint(
        ["set_id", "version"],
        ["set_versions.set_id", "set_versions.version"],
        ondelete="CASCADE",
    ),
    PrimaryKeyConstraint("set_id", "version", "position"),
    UniqueConstraint("set_id", "version", "item_id"),
)
