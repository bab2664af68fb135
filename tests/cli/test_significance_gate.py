"""``compare``/``check`` with significance: ``check --alpha`` gates only on real regressions."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner, Result

from predwatch.cli import main
from predwatch.records import EvalPoint, Prediction, Run
from predwatch.storage import open_store
from predwatch.testing import start_server


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def seed(store: Any, run_id: str, verdicts: list[bool]) -> None:
    store.ensure_run(Run(id=run_id, name=run_id))
    rows = [Prediction(run_id=run_id, step=10, prompt_id=f"prompt-{i:03d}", sample_index=i,
                       prompt=f"question {i}", ground_truth="yes",
                       prediction="yes" if ok else "no", exact_match=1.0 if ok else 0.0,
                       char_error_rate=0.0 if ok else 1.0, validation_pass=ok)
            for i, ok in enumerate(verdicts)]
    store.write_eval_point(EvalPoint(run_id=run_id, step=10), rows)


@pytest.fixture
def runs_db(sqlite_url: str) -> str:
    """``base``: 10 prompts pass. ``one``: prompt 0 regressed. ``many``: prompts 0-7 did."""
    with open_store(sqlite_url) as store:
        seed(store, "base", [True] * 10)
        seed(store, "one", [False] + [True] * 9)
        seed(store, "many", [False] * 8 + [True] * 2)
    return sqlite_url


def test_one_flip_fails_the_count_gate_but_not_the_significance_gate(runs_db: str) -> None:
    assert cli("check", "one", "--baseline", "base", "--db", runs_db).exit_code == 1
    gated = cli("check", "one", "--baseline", "base", "--alpha", "0.05", "--db", runs_db)
    assert gated.exit_code == 0, gated.output
    assert "PASS" in gated.output and "no significant regression at α = 0.05" in gated.output
    report = json.loads(cli("check", "one", "--baseline", "base", "--alpha", "0.05",
                            "--json", "--db", runs_db).stdout)
    assert report["passed"] and report["significant_regression"] is False
    # 1 pass -> fail, 0 back: P(X >= 1 | n = 1) = 1/2, two-sided min(1, 2 * 1/2) = 1
    validation = report["comparison"]["significance"]["validation"]
    assert (validation["worse"], validation["better"]) == (1, 0)
    assert validation["p_worse"] == pytest.approx(0.5) and validation["p_value"] == 1.0


def test_eight_flips_of_ten_are_a_significant_regression(runs_db: str) -> None:
    gated = cli("check", "many", "--baseline", "base", "--alpha", "0.05", "--db", runs_db)
    assert gated.exit_code == 1 and "a significant regression" in gated.output
    report = json.loads(cli("check", "many", "--baseline", "base", "--alpha", "0.05",
                            "--json", "--db", runs_db).stdout)
    sig = report["comparison"]["significance"]
    # 8 discordant pairs all one way: one-sided (1/2)^8, two-sided 2/256
    assert sig["validation"]["p_worse"] == pytest.approx(1 / 256)
    assert sig["validation"]["p_value"] == pytest.approx(2 / 256)
    assert sig["exact_match"]["p_worse"] == pytest.approx(1 / 256)
    # every prompt's exact match delta is -1 (8) or 0 (2): the mean is -0.8
    em = sig["deltas"]["exact_match"]
    assert em["mean"] == pytest.approx(-0.8) and em["high"] < 0 and em["confidence"] == 0.9
    # a stricter level than the p-value: no longer significant on the flips alone
    strict = json.loads(cli("check", "many", "--baseline", "base", "--alpha", "0.001",
                            "--json", "--db", runs_db).stdout)
    assert not any(r.startswith("validation") for r in
                   strict["comparison"]["significance"]["reasons"])


def test_compare_prints_p_values_intervals_ids_and_a_ui_link(runs_db: str) -> None:
    shown = cli("compare", "base", "many", "--db", runs_db, "--ui-url", "http://ui:8000/")
    assert shown.exit_code == 0, shown.output
    out = shown.output
    assert "exact McNemar p = 0.00781" in out and "bootstrap interval" in out
    assert "significant regression at α = 0.05" in out
    assert "http://ui:8000/compare?run_a=base&run_b=many&step_a=10&step_b=10" in out
    assert "0 prompt-0" in out  # sample index and the id's start


def test_check_alpha_is_passed_through_the_server(runs_db: str) -> None:
    with start_server(runs_db) as server:
        gated = cli("check", "one", "--baseline", "base", "--alpha", "0.05",
                    "--server", server.url)
        assert gated.exit_code == 0, gated.output
        assert f"{server.url}/compare?run_a=base&run_b=one" in gated.output
        assert cli("check", "many", "--baseline", "base", "--alpha", "0.05",
                   "--server", server.url).exit_code == 1
        assert cli("check", "on", "--baseline", "ba", "--alpha", "0.05",
                   "--server", server.url).exit_code == 0  # prefixes through the client


def test_bad_alpha_is_a_usage_error(runs_db: str) -> None:
    bad = cli("check", "one", "--baseline", "base", "--alpha", "0.7", "--db", runs_db)
    assert bad.exit_code == 2 and "--alpha" in bad.output
