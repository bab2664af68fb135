"""Schema versions: empty databases are created at head, the migrations produce exactly the
table definitions, and databases at another revision are refused with what to do."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from predwatch.errors import SchemaOutdated
from predwatch.storage import migrate, open_store
from predwatch.storage.engine import make_engine
from predwatch.storage.tables import metadata

SHIPPED_HEAD = migrate.head()
NEXT_REVISION = '''
revision = "9999"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
'''


def schema_diff(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()


@pytest.fixture
def newer_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Pretend this predwatch ships one more migration (a no-op); returns its revision."""
    scripts = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "9999_next.py").write_text(NEXT_REVISION.format(head=migrate.head()))
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", scripts)
    return "9999"


def test_an_empty_database_is_created_at_head(db_url: str) -> None:
    assert migrate.current(db_url) is None
    open_store(db_url).close()
    assert migrate.current(db_url) == migrate.head()
    open_store(db_url, create=False).close()  # and opens again as is


def test_migrations_produce_exactly_the_table_definitions(db_url: str) -> None:
    migrate.upgrade(db_url)
    assert migrate.current(db_url) == migrate.head()
    assert schema_diff(db_url) == []


def test_the_schema_comparison_sees_a_missing_index(sqlite_url: str) -> None:
    migrate.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_predictions_run_id_id")
    engine.dispose()
    assert [d[0] for d in schema_diff(sqlite_url)] == ["add_index"]


def test_an_older_database_is_refused_with_the_exact_command(db_url: str, newer_code: str) -> None:
    migrate.upgrade(db_url, SHIPPED_HEAD)  # one revision behind the (pretend) code
    with pytest.raises(SchemaOutdated) as refused:
        open_store(db_url)
    assert f"predwatch db upgrade --db {db_url}" in refused.value.message
    assert refused.value.detail["head"] == newer_code

    migrate.upgrade(db_url)
    assert migrate.current(db_url) == newer_code
    open_store(db_url).close()


def test_a_database_newer_than_the_code_is_refused(
    sqlite_url: str, newer_code: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate.upgrade(sqlite_url)
    monkeypatch.undo()  # back to the revisions this predwatch really ships
    with pytest.raises(SchemaOutdated, match="newer than this predwatch.*upgrade predwatch"):
        open_store(sqlite_url)


def test_predwatch_tables_without_a_revision_are_refused(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    metadata.create_all(engine)
    engine.dispose()
    with pytest.raises(SchemaOutdated, match="no schema revision"):
        open_store(sqlite_url)


def test_other_tables_do_not_make_a_database_non_empty(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE someone_elses (x INTEGER)")
    engine.dispose()
    open_store(sqlite_url).close()
    assert migrate.current(sqlite_url) == migrate.head()


def test_downgrade_to_base_removes_every_table(sqlite_url: str) -> None:
    migrate.upgrade(sqlite_url)
    migrate.command.downgrade(migrate.alembic_config(sqlite_url), "base")
    engine = make_engine(sqlite_url)
    with engine.connect() as conn:
        names = set(conn.dialect.get_table_names(conn))
    engine.dispose()
    assert names & set(metadata.tables) == set()
