"""Column types and the one ``MetaData`` shared by every table module (no tables here).

``tables`` (runs, predictions, ...) and ``tables_sets`` (prediction sets) both build on this
module, so neither imports the other's internals.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, Integer, MetaData
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


def as_utc(value: datetime) -> datetime:
    """``value`` as an aware UTC ``datetime``; a naive one is taken as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp, stored and returned in UTC on both databases.

    SQLite has no time zone type (SQLAlchemy drops ``tzinfo`` without converting), so values are
    converted to UTC on the way in and marked UTC on the way out; naive inputs are taken as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)

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


def ts_column(name: str, nullable: bool = False) -> Column[datetime]:
    return Column(name, UTCDateTime(), nullable=nullable)
