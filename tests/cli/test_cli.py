"""The server-side commands: keys, runs, compare, check (the CI gate), replay, db, serve."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from click.testing import CliRunner, Result

from predwatch.cli import main
from predwatch.delivery import Batch, Spool
from predwatch.records import EvalPoint, Prediction, Run
from predwatch.server.auth import hash_secret
from predwatch.storage import open_store
from predwatch.testing import start_server


def cli(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def seed(store: Any, run_id: str, step: int, verdicts: list[bool], name: str | None = None) -> None:
    """One evaluation point: prompt i passes validation when ``verdicts[i]``."""
    store.ensure_run(Run(id=run_id, name=name))
    rows = [Prediction(run_id=run_id, step=step, prompt_id=f"p{i}", sample_index=i,
                       prompt=f"prompt number {i}", ground_truth="yes",
                       prediction="yes" if ok else "no", exact_match=1.0 if ok else 0.0,
                       char_error_rate=0.0 if ok else 1.0, validation_pass=ok)
            for i, ok in enumerate(verdicts)]
    store.write_eval_point(EvalPoint(run_id=run_id, step=step), rows)


@pytest.fixture
def baseline_and_candidate(db_url: str) -> str:
    """``base``: all four prompts pass; ``cand``: prompts 1 and 2 regressed, 3 improved."""
    with open_store(db_url) as store:
        seed(store, "base", 100, [True, True, True, False], name="baseline")
        seed(store, "cand", 200, [True, False, False, True], name="candidate")
    return db_url


def test_keys_and_runs_lifecycle(db_url: str) -> None:
    created = cli("keys", "create", "--user", "alice", "--label", "ci", "--db", db_url)
    assert created.exit_code == 0, created.output
    key = re.search(r"key:\s+(pwk_\S+)", created.stdout).group(1)  # type: ignore[union-attr]
    key_id = re.search(r"key id:\s+(\S+)", created.stdout).group(1)  # type: ignore[union-attr]
    made = cli("runs", "create", "--db", db_url, "--id", "exp-1", "--name", "first",
               "--owner", "alice")
    assert made.exit_code == 0 and "shown again" in made.stderr
    token = re.search(r"token:\s+(pwr_\S+)", made.stdout).group(1)  # type: ignore[union-attr]
    with open_store(db_url) as store:
        assert store.user_for_key(hash_secret(key)) == "alice"
        assert store.run_for_token(hash_secret(token)).id == "exp-1"  # type: ignore[union-attr]
    listed = cli("runs", "list", "--db", db_url, "--json")
    assert [r["id"] for r in json.loads(listed.stdout)["runs"]] == ["exp-1"]
    assert "exp-1" in cli("runs", "list", "--db", db_url).stdout
    assert cli("runs", "finish", "exp-1", "--status", "failed", "--db", db_url).exit_code == 0
    rotated = cli("runs", "token", "exp-1", "--revoke-others", "--db", db_url)
    new_token = rotated.stdout.split()[-1]
    with open_store(db_url) as store:
        assert store.get_run("exp-1").status == "failed"
        assert store.run_for_token(hash_secret(token)) is None
        assert store.run_for_token(hash_secret(new_token)) is not None
    assert "1 token(s) revoked" in cli("runs", "revoke", "exp-1", "--db", db_url).stdout
    assert cli("keys", "revoke", key_id, "--db", db_url).exit_code == 0
    with open_store(db_url) as store:
        store.enqueue_job("exp-1", 10, "/out/checkpoint-10")
    assert cli("runs", "delete", "exp-1", "--db", db_url, "--yes").exit_code == 0
    with open_store(db_url) as store:
        assert store.list_jobs(run_id="exp-1") == []  # the run's checkpoint jobs go with it
    missing = cli("runs", "delete", "exp-1", "--db", db_url, "--yes")
    assert missing.exit_code == 1 and "not found" in missing.output


def test_compare_prints_flips_and_deltas(baseline_and_candidate: str) -> None:
    report = cli("compare", "base", "cand", "--db", baseline_and_candidate)
    assert report.exit_code == 0, report.output
    out = report.stdout
    assert "baseline (base) @ step 100" in out and "candidate (cand) @ step 200" in out
    assert "regressed" in out and "pass→fail" in out and "prompt number 1" in out
    data = json.loads(cli("compare", "base", "cand", "--regressed-only", "--json",
                          "--db", baseline_and_candidate).stdout)
    assert data["counts"]["regressed"] == 2 and data["counts"]["fail_to_pass"] == 1
    assert {i["prompt_id"] for i in data["items"]} == {"p1", "p2"}


def test_check_is_a_ci_gate_with_exit_codes(baseline_and_candidate: str) -> None:
    db = baseline_and_candidate
    failed = cli("check", "cand", "--baseline", "base", "--db", db)
    assert failed.exit_code == 1
    assert "FAIL" in failed.stdout and "2 prompt(s) regressed" in failed.stdout
    allowed = cli("check", "cand", "--baseline", "base", "--max-regressions", "2", "--db", db)
    assert allowed.exit_code == 0
    assert cli("check", "base", "--baseline", "base", "--db", db).exit_code == 0
    unknown = cli("check", "nope", "--baseline", "base", "--db", db)
    assert unknown.exit_code == 2 and "not found" in unknown.output
    assert cli("check", "cand", "--db", db).exit_code == 2  # --baseline is required
    assert cli("check", "cand", "--baseline", "base", "--max-regressions", "-1",
               "--db", db).exit_code == 2
    report = json.loads(cli("check", "cand", "--baseline", "base", "--json", "--db", db).stdout)
    assert (report["regressed"], report["passed"]) == (2, False)


def test_replay_delivers_spooled_batches_once(tmp_path: Any, sqlite_url: str) -> None:
    spool = Spool(tmp_path / "spool")
    for step in (1, 2):
        point = EvalPoint(run_id="r", step=step)
        rows = [Prediction(run_id="r", step=step, prompt_id=f"p{i}", prompt="q") for i in range(3)]
        spool.put(Batch(run_id="r", point=point, predictions=rows), target=sqlite_url)
    with open_store(sqlite_url) as store:  # step 1 already arrived once
        store.write_eval_point(EvalPoint(run_id="r", step=1),
                               [Prediction(run_id="r", step=1, prompt_id="p0", prompt="q")])
    done = cli("replay", "--spool", str(tmp_path / "spool"))
    assert done.exit_code == 0, done.output
    assert "replayed 2 batch(es): 6 rows, 5 newly stored, 1 already present; 0" in done.stdout
    with open_store(sqlite_url) as store:
        assert store.list_predictions("r").total == 6
    assert "replayed 0 batch(es)" in cli("replay", "--spool", str(tmp_path / "spool")).stdout


def test_db_current_and_upgrade(sqlite_url: str) -> None:
    fresh = cli("db", "current", "--db", sqlite_url)
    assert fresh.exit_code == 0 and "(none)" in fresh.stdout
    assert cli("db", "upgrade", "--db", sqlite_url).exit_code == 0
    assert "up to date" in cli("db", "current", "--db", sqlite_url).stdout


def test_serve_refuses_to_expose_data_without_auth(sqlite_url: str) -> None:
    open_off = cli("serve", "--db", sqlite_url, "--host", "0.0.0.0", "--auth", "off")
    assert open_off.exit_code == 1 and "predwatch keys create" in open_off.output
    no_key = cli("serve", "--db", sqlite_url, "--host", "0.0.0.0")
    assert no_key.exit_code == 1 and "no API key" in no_key.output


def test_read_commands_work_against_a_server(sqlite_url: str) -> None:
    with open_store(sqlite_url) as store:
        seed(store, "base", 100, [True, True, True])
        seed(store, "cand", 200, [True, False, True])
    with start_server(sqlite_url) as server:
        url = server.url
        assert "cand" in cli("runs", "list", "--server", url).stdout
        assert json.loads(cli("compare", "base", "cand", "--json", "--server", url).stdout
                          )["counts"]["regressed"] == 1
        assert cli("check", "cand", "--baseline", "base", "--server", url).exit_code == 1
        assert cli("check", "cand", "--baseline", "base", "--max-regressions", "1",
                   "--server", url).exit_code == 0
        assert cli("check", "cand", "--baseline", "nope", "--server", url).exit_code == 2
        made = cli("runs", "create", "--server", url, "--name", "remote")
        assert made.exit_code == 0 and "pwr_" in made.stdout
    unreachable = cli("check", "cand", "--baseline", "base", "--server", url)
    assert unreachable.exit_code == 2 and "cannot reach" in unreachable.output
