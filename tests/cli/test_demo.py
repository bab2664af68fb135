"""``predwatch demo`` end to end (short): trains the tiny model and records every point."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from predwatch.cli import main
from predwatch.storage import open_store

pytestmark = pytest.mark.slow  # trains the tiny model through a real Trainer


def test_demo_trains_records_and_prints_a_table(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    result = CliRunner().invoke(
        main, ["demo", "--db", str(db), "--steps", "20", "--eval-every", "10", "--no-serve"]
    )
    assert result.exit_code == 0, result.output
    assert "exact match" in result.output and "valid JSON" in result.output
    assert "Recorded 32 answers at 2 evaluation points" in result.output
    store = open_store(f"sqlite:///{db}")
    (run,) = store.list_runs().items
    assert run.status == "finished"
    points = store.eval_points(run.id)
    assert [p.step for p in points] == [10, 20]
    rows = store.list_predictions(run.id, limit=100).items
    assert len(rows) == 32
    assert all(r.validation_kind == "json_schema" for r in rows)
    assert all(r.prompt.startswith("Extract:") for r in rows)
    store.close()
