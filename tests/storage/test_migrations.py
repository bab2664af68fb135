"""Schema versions: empty databases are created at head, the migrations produce exactly the
table definitions, and databases at another revision are refused with what to do."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from predwatch.errors import SchemaOutdated
from predwatch.records import EvalPoint
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


OLD_ROW = {  # a predictions row as schema 0002 stored it
    "run_id": "old", "step": 10, "epoch": 1.0, "trigger": "eval", "sample_index": 0,
    "sample_number": 0, "prompt_id": "p1", "sample_source": "dataset", "prompt": "q",
    "prediction": "a", "truncated": False, "metrics": "{}", "validation_errors": "[]",
    "validation_results": "[]", "generation_params": "{}", "library_versions": "{}",
    "created_at": "2026-11-30 12:00:00",
}


def test_a_database_at_0002_upgrades_with_its_rows_readable_and_gains_attempts(
    db_url: str,
) -> None:
    migrate.upgrade(db_url, "0002")
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO runs (id, config, status, created_at) "
            "VALUES ('old', '{}', 'running', '2026-11-30 12:00:00')"))
        conn.execute(text(
            "INSERT INTO eval_points (run_id, step, epoch, trigger, card, created_at, "
            "sample_count, failed_count, flagged_count, validated_count, validation_pass_count, "
            "truncated_count, metric_avgs) VALUES ('old', 10, 1.0, 'eval', '{\"seed\": 1}', "
            "'2026-11-30 12:00:00', 1, 0, 0, 0, 0, 0, '{}')"))
        names = ", ".join(OLD_ROW)
        conn.execute(text(f"INSERT INTO predictions ({names}) "
                          f"VALUES ({', '.join(':' + k for k in OLD_ROW)})"), OLD_ROW)
    engine.dispose()
    with pytest.raises(SchemaOutdated, match="predwatch db upgrade"):
        open_store(db_url)

    migrate.upgrade(db_url)
    assert schema_diff(db_url) == []
    with open_store(db_url) as store:
        [row] = store.point_predictions("old", 10)
        assert (row.prompt_id, row.prediction, row.attempt) == ("p1", "a", 0)
        assert store.get_run("old").last_seen_at is None
        [attempt] = store.point_attempts("old", 10)
        assert (attempt.attempt, attempt.card) == (0, {"seed": 1})
        again = row.model_copy(update={"prediction": "b"})
        point = EvalPoint(run_id="old", step=10, trigger="eval", writer="resumed")
        assert store.write_eval_point(point, [again]) == 1  # a new attempt, not a dropped row
        assert [(p.attempt, p.prediction) for p in store.point_predictions("old", 10)] == [
            (0, "a"), (1, "b"),
        ]
        twin = row.model_copy(update={"sample_index": 1, "prediction": "c"})
        assert store.write_eval_point(EvalPoint(run_id="old", step=10), [twin]) == 1
