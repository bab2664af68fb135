"""``predwatch doctor``: one PASS/FAIL line per check, a verdict, exit 0/1, nothing created."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from predwatch.cli import main
from predwatch.records import Run
from predwatch.server.auth import issue_run_token
from predwatch.storage import open_store
from predwatch.testing import start_server


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def write_setup(tmp_path: Path) -> Path:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "2+2?", "response": "4"}\n{"unknown": 1}\nnot json\n'
                       '{"messages": [{"role": "user", "content": "hi"}, '
                       '{"role": "assistant", "content": "hello"}]}\n')
    config = tmp_path / "predictions.json"
    config.write_text(json.dumps({"samples_path": str(prompts), "sample_count": 2,
                                  "sample_frequency": "steps", "step_interval": 50,
                                  "max_new_tokens": 16}))
    return config


def test_a_good_setup_passes_and_creates_no_database(tmp_path: Path) -> None:
    config = write_setup(tmp_path)
    db = tmp_path / "new.db"
    result = cli("doctor", str(config), "--db", str(db), "--max-steps", "500",
                 "--tokens-per-second", "100", "--seconds-per-step", "1")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("PASS  config:")
    prompts = next(line for line in lines if "prompts:" in line)
    assert prompts.startswith("PASS") and "2 usable of 4 records" in prompts
    assert "1 malformed entry" in prompts and "1 record skipped" in prompts
    assert any(line.startswith("PASS  database:") and "created at the first write" in line
               for line in lines)
    cost = next(line for line in lines if "cost:" in line)
    # 500 / 50 = 10 points x 2 answers; 20 x 16 tokens / 100 tok/s = 3.2 s of 500 s: 0.6%
    assert cost.startswith("PASS") and "20 answers" in cost and "0.6%" in cost
    assert lines[-1].startswith("READY")
    assert not db.exists()


def test_every_bad_field_and_a_missing_directory_fail(tmp_path: Path) -> None:
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"sample_count": 0, "max_new_tokens": 0, "smaple_path": "x"}))
    result = cli("doctor", str(config), "--db", str(tmp_path / "nowhere" / "p.db"))
    assert result.exit_code == 1
    out = result.output
    assert "FAIL  config" in out and "3 problems" in out
    for field in ("sample_count", "max_new_tokens", "smaple_path"):
        assert field in out
    assert "FAIL  database" in out and "does not exist" in out
    assert "NOT READY: config, database failed" in out


def test_an_unreadable_prompts_file_and_an_outdated_schema_fail(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"samples_path": str(tmp_path / "missing.jsonl")}))
    db = tmp_path / "old.db"
    with open_store(f"sqlite:///{db}") as store:
        store.ensure_run(Run(id="r"))
    import sqlite3

    with sqlite3.connect(db) as conn:  # an older predwatch's schema revision
        conn.execute("UPDATE alembic_version SET version_num = '0001'")
    result = cli("doctor", str(config), "--db", str(db))
    assert result.exit_code == 1
    assert "FAIL  prompts" in result.output and "missing.jsonl" in result.output
    assert "FAIL  database" in result.output and "predwatch db upgrade" in result.output
    assert "SKIP  cost" in result.output and "--max-steps" in result.output


def test_a_server_and_token_are_checked_through_the_api(tmp_path: Path) -> None:
    config = write_setup(tmp_path)
    db_url = f"sqlite:///{tmp_path / 'served.db'}"
    with open_store(db_url) as store:
        store.ensure_run(Run(id="remote-run"))
        token = issue_run_token(store, "remote-run")
    with start_server(db_url) as server:
        good = cli("doctor", str(config), "--server", server.url, "--token", token)
        assert good.exit_code == 0, good.output
        assert "PASS  server" in good.output and "accepted: run remote-run" in good.output
        bad = cli("doctor", str(config), "--server", server.url, "--token", "pwr_wrong")
        assert bad.exit_code == 1 and "FAIL  credentials" in bad.output
    gone = cli("doctor", str(config), "--server", server.url, "--token", token)
    assert gone.exit_code == 1 and "FAIL  server" in gone.output
