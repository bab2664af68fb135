"""Read-only commands never create a database; run ids by prefix; ``runs show``, ``keys list``,
``estimate`` with a plan, ``serve`` on a busy port."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from predwatch.cli import main
from predwatch.records import EvalPoint, Prediction, Run
from predwatch.storage import open_store


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def seed(store: Any, run_id: str, steps: dict[int, list[bool]]) -> None:
    store.ensure_run(Run(id=run_id, name=f"name of {run_id}"))
    for step, verdicts in steps.items():
        rows = [Prediction(run_id=run_id, step=step, epoch=step / 10, prompt_id=f"p{i}",
                           sample_index=i, prompt=f"q{i}", ground_truth="yes",
                           prediction="yes" if ok else "no", exact_match=1.0 if ok else 0.0,
                           char_error_rate=0.0 if ok else 1.0, validation_pass=ok)
                for i, ok in enumerate(verdicts)]
        store.write_eval_point(EvalPoint(run_id=run_id, step=step, epoch=step / 10), rows)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "runs.db"
    with open_store(f"sqlite:///{path}") as store:
        seed(store, "abc123-first", {10: [False, False, True, True], 20: [True, True, True, False]})
        seed(store, "abc999-second", {10: [True, True, True, True]})
    return path


@pytest.mark.parametrize("command", [
    ["runs", "list"], ["runs", "show", "x"], ["keys", "list"], ["compare", "a", "b"],
    ["check", "a", "--baseline", "b"], ["sets", "list"], ["estimate", "--run", "r"],
])
def test_read_commands_refuse_a_missing_database_and_create_none(
        tmp_path: Path, command: list[str]) -> None:
    typo = tmp_path / "typo.db"
    result = cli(*command, "--db", str(typo))
    assert result.exit_code in (1, 2) and f"no database at {typo}" in result.output
    assert list(tmp_path.iterdir()) == []


def test_runs_list_shows_full_ids_and_last_point_metrics(db: Path) -> None:
    shown = cli("runs", "list", "--db", str(db))
    assert shown.exit_code == 0, shown.output
    assert "abc123-first" in shown.output and "abc999-second" in shown.output
    assert "75.0%" in shown.output  # abc123's last point: 3 of 4 exact
    listed = json.loads(cli("runs", "list", "--db", str(db), "--json").stdout)["runs"]
    first = next(r for r in listed if r["id"] == "abc123-first")
    assert first["last_step"] == 20 and first["last_point"]["exact_match"] == pytest.approx(0.75)


def test_run_ids_are_taken_by_unique_prefix(db: Path) -> None:
    shown = cli("runs", "show", "abc1", "--db", str(db))
    assert shown.exit_code == 0, shown.output
    assert "abc123-first" in shown.output and "evaluation points" in shown.output
    assert "▁█" in shown.output  # exact match 0.5 -> 0.75: a rising trend
    ambiguous = cli("runs", "show", "abc", "--db", str(db))
    assert ambiguous.exit_code == 1 and "ambiguous" in ambiguous.output
    assert "abc123-first" in ambiguous.output and "abc999-second" in ambiguous.output
    unknown = cli("runs", "show", "zzz", "--db", str(db))
    assert unknown.exit_code == 1 and "'zzz' not found" in unknown.output
    compared = json.loads(cli("compare", "abc9", "abc1", "--db", str(db), "--json").stdout)
    assert (compared["a"]["run_id"], compared["b"]["run_id"]) == ("abc999-second",
                                                                 "abc123-first")
    assert cli("runs", "finish", "abc9", "--db", str(db)).output == \
        "run abc999-second: finished\n"


def test_keys_list_shows_ids_and_users_never_keys(db: Path) -> None:
    made = cli("keys", "create", "--user", "alice", "--label", "ci", "--db", str(db))
    key = made.stdout.split("key:")[1].split()[0]
    listed = cli("keys", "list", "--db", str(db))
    assert listed.exit_code == 0 and "alice" in listed.output and "ci" in listed.output
    assert key not in listed.output
    as_json = json.loads(cli("keys", "list", "--db", str(db), "--json").stdout)
    assert [k["user"] for k in as_json] == ["alice"]


def test_estimate_from_a_run_uses_the_plan_given(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    with open_store(f"sqlite:///{path}") as store:
        store.ensure_run(Run(id="r", config={"predictions": {"sample_frequency": "steps",
                                                             "step_interval": 10}}))
        rows = [Prediction(run_id="r", step=10, prompt_id=f"p{i}", sample_index=i,
                           prompt="q", prediction="a") for i in range(4)]
        store.write_eval_point(EvalPoint(run_id="r", step=10, generation_ms=400.0,
                                         card={"max_steps": 50}), rows)
    default = json.loads(cli("estimate", "--run", "r", "--db", str(path), "--json").stdout)
    assert default["points"] == 5 and default["predictions"] == 20  # the card's 50 steps
    planned = json.loads(cli("estimate", "--run", "r", "--db", str(path), "--json",
                             "--max-steps", "200").stdout)
    assert planned["points"] == 20 and planned["predictions"] == 80  # 200 / 10 points x 4
    measured = cli("estimate", "--run", "r", "--db", str(path), "--prompts", "3")
    assert measured.exit_code == 2 and "--prompts: measured" in measured.output


def test_estimate_errors_name_the_flag(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"sample_frequency": "eval"}))
    missing = cli("estimate", "--config", str(config), "--max-steps", "100")
    assert missing.exit_code == 1 and "needs --eval-strategy" in missing.output
    missing = cli("estimate", "--config", str(config), "--max-steps", "100",
                  "--eval-strategy", "steps")
    assert missing.exit_code == 1 and "needs --eval-steps" in missing.output


def test_serve_on_a_busy_port_says_so_before_serving(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = cli("serve", "--db", str(tmp_path / "s.db"), "--port", str(port))
    assert busy.exit_code == 1
    assert f"port {port} on 127.0.0.1 is already in use" in busy.output
    assert "serving" not in busy.output


def test_db_current_on_a_missing_file_creates_none(tmp_path: Path) -> None:
    shown = cli("db", "current", "--db", str(tmp_path / "nope.db"))
    assert shown.exit_code == 0 and "no database at" in shown.output
    assert list(tmp_path.iterdir()) == []
