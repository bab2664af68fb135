"""Prediction sets in the database: the ``Store`` methods that create versions and read sets,
versions and items (``SQLStore`` inherits them; ``Store`` in ``base`` declares them).

A version is written in one transaction that first locks the set's row, so two concurrent
imports of the same set get consecutive numbers (or the same version, when their content is
the same). Reading files and diffing versions need no SQL: ``predwatch.sets.stored``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, RowMapping

from predwatch.errors import DataError, NotFound
from predwatch.records import utcnow
from predwatch.sets.model import (
    PredictionSet,
    SetItem,
    SetVersion,
    check_name,
    content_hash,
)
from predwatch.storage.tables_sets import prediction_sets, set_items, set_versions

S, V, IT = prediction_sets.c, set_versions.c, set_items.c
_ITEM_COLUMNS = tuple(SetItem.model_fields)


class SetQueries:
    """The sets part of ``SQLStore`` (see ``Store`` for the contract)."""

    # Provided by SQLStore: its dialect and its read and write transactions.
    dialect: str
    _write: Callable[[], AbstractContextManager[Connection]]
    _read: Callable[[], AbstractContextManager[Connection]]

    def create_set_version(
        self,
        name: str,
        items: Sequence[SetItem],
        *,
        description: str | None = None,
        source: str | None = None,
        owner: str | None = None,
    ) -> tuple[SetVersion, bool]:
        """Store ``items`` as the next version of set ``name`` (the set is created when absent).

        Versions are immutable and identified by their content: when a version of this set already
        has exactly these items (in any order), that version is returned and nothing is written.

        Returns:
            ``(version, created)``: ``created`` is False when the content already existed.

        Raises:
            ConfigError: The name is invalid.
            DataError: ``items`` is empty or repeats an item id or a prompt.
        """
        check_name(name)
        _check_items(items)
        digest = content_hash(list(items))
        now = utcnow()
        upsert = pg_insert if self.dialect == "postgresql" else sqlite_insert
        with self._write() as conn:
            conn.execute(
                upsert(prediction_sets)
                .values(id=uuid.uuid4().hex, name=name, description=description, owner=owner,
                        created_at=now)
                .on_conflict_do_nothing()
            )
            # FOR UPDATE serialises versions of one set on PostgreSQL (SQLite: BEGIN IMMEDIATE did).
            set_id = conn.scalar(select(S.id).where(S.name == name).with_for_update())
            existing = conn.execute(
                _version_query().where(V.set_id == set_id, V.content_hash == digest)
            ).mappings().first()
            if existing is not None:
                return _version(existing), False
            number = (conn.scalar(select(func.max(V.version)).where(V.set_id == set_id)) or 0) + 1
            conn.execute(insert(set_versions).values(
                set_id=set_id, version=number, content_hash=digest, item_count=len(items),
                description=description, source=source, created_by=owner, created_at=now,
            ))
            conn.execute(insert(set_items), [
                {"set_id": set_id, "version": number, "position": position,
                 **item.model_dump(include=set(_ITEM_COLUMNS))}
                for position, item in enumerate(items)
            ])
            row = conn.execute(
                _version_query().where(V.set_id == set_id, V.version == number)
            ).mappings().one()
        return _version(row), True


    def list_sets(self) -> list[PredictionSet]:
        """Every set by name, with its latest version number and that version's item count."""
        latest = (
            select(V.set_id, func.max(V.version).label("latest_version"))
            .group_by(V.set_id)
            .subquery()
        )
        q = (
            select(prediction_sets, latest.c.latest_version, V.item_count)
            .outerjoin(latest, latest.c.set_id == S.id)
            .outerjoin(set_versions, (V.set_id == S.id) & (V.version == latest.c.latest_version))
            .order_by(S.name)
        )
        with self._read() as conn:
            return [PredictionSet(**dict(row)) for row in conn.execute(q).mappings()]


    def get_set(self, name: str) -> PredictionSet:
        """One set with all its versions (oldest first); ``NotFound`` when there is none."""
        with self._read() as conn:
            row = conn.execute(select(prediction_sets).where(S.name == name)).mappings().first()
            if row is None:
                raise NotFound(f"prediction set {name!r} not found")
            q = _version_query().where(V.set_id == row["id"]).order_by(V.version)
            versions = [_version(v) for v in conn.execute(q).mappings()]
        latest = versions[-1] if versions else None
        return PredictionSet(
            **dict(row),
            latest_version=latest.version if latest else None,
            item_count=latest.item_count if latest else None,
            versions=versions,
        )


    def get_set_version(self, name: str, version: int | None = None) -> SetVersion:
        """A version of a set (the latest when ``version`` is None); ``NotFound`` when absent."""
        with self._read() as conn:
            return _get_version(conn, name, version)


    def list_set_items(
        self,
        name: str,
        version: int | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
    ) -> tuple[SetVersion, list[SetItem]]:
        """A version and its items in order (a page of them with ``limit``/``offset``)."""
        with self._read() as conn:
            found = _get_version(conn, name, version)
            q = (
                select(*(IT[c] for c in _ITEM_COLUMNS))
                .where(IT.set_id == found.set_id, IT.version == found.version)
                .order_by(IT.position)
                .offset(max(offset, 0))
            )
            if limit is not None:
                q = q.limit(max(limit, 0))
            items = [SetItem(**dict(r)) for r in conn.execute(q).mappings()]
        return found, items


def _check_items(items: Sequence[SetItem]) -> None:
    if not items:
        raise DataError("a set version needs at least one item")
    for key in ("item_id", "prompt_id"):
        seen: set[str] = set()
        for position, item in enumerate(items):
            value = getattr(item, key)
            if value in seen:
                raise DataError(
                    f"item {position} repeats the {key.replace('_', ' ')} {value!r} of an "
                    "earlier item",
                    detail={"field": f"items[{position}]"},
                )
            seen.add(value)


def _version_query() -> Any:
    return select(set_versions, S.name).join(prediction_sets, S.id == V.set_id)


def _version(row: RowMapping) -> SetVersion:
    return SetVersion(**{k: row[k] for k in SetVersion.model_fields})


def _get_version(conn: Connection, name: str, version: int | None) -> SetVersion:
    q = _version_query().where(S.name == name)
    q = q.where(V.version == version) if version is not None else q.order_by(V.version.desc())
    row = conn.execute(q.limit(1)).mappings().first()
    if row is not None:
        return _version(row)
    latest = conn.scalar(
        select(func.max(V.version)).join(prediction_sets, S.id == V.set_id).where(S.name == name)
    )
    if latest is None:
        raise NotFound(f"prediction set {name!r} not found")
    raise NotFound(
        f"prediction set {name!r} has no version {version} (versions 1 to {latest})",
        detail={"name": name, "latest_version": latest},
    )
