"""Several answers per prompt: the sign-flip permutation test on per-prompt pass rates replaces
McNemar on single answers, checked against values computed by hand (both databases)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from predwatch.analysis import compare_points
from predwatch.analysis.significance import pass_rate, sign_flip_test
from predwatch.cli import main
from predwatch.records import EvalPoint, Prediction, Run, prompt_identity
from predwatch.storage import Store, open_store


def test_sign_flips_of_three_negative_changes_enumerate_eight_patterns() -> None:
    # sums of the 8 sign patterns of (0.5, 0.25, 0.75): only all-negative reaches -1.5
    two, worse, exact = sign_flip_test([-0.5, -0.25, -0.75])
    assert exact and worse == pytest.approx(1 / 8) and two == pytest.approx(2 / 8)


def test_zero_changes_do_not_flip_and_mixed_signs_are_no_evidence() -> None:
    # non-zero (-0.5, 0.25): pattern sums 0.75, 0.25, -0.25, -0.75; observed -0.25
    two, worse, exact = sign_flip_test([0.0, -0.5, 0.25, 0.0])
    assert exact and worse == pytest.approx(2 / 4) and two == 1.0
    assert sign_flip_test([0.0, 0.0]) == (1.0, 1.0, True)


def test_many_changes_are_tested_with_random_patterns_reproducibly() -> None:
    changes = [-0.25] * 20  # exact p would be 2^-20: no random pattern is that extreme
    two, worse, exact = sign_flip_test(changes, resamples=999, seed=3)
    assert not exact and worse == pytest.approx(1 / 1000) and two == pytest.approx(1 / 1000)
    assert sign_flip_test(changes, resamples=999, seed=3) == (two, worse, exact)


def test_a_prompts_pass_rate_is_the_share_of_its_answers_that_pass() -> None:
    def row(ok: bool | None, **fields: Any) -> Prediction:
        return Prediction(run_id="r", step=1, prompt_id="p", validation_pass=ok, **fields)

    assert pass_rate([row(True), row(False), row(True), row(True)]) == 0.75
    # an expected answer must also be matched; a failed generation never passes
    assert pass_rate([row(True, ground_truth="a", prediction="a", exact_match=1.0),
                      row(True, ground_truth="a", prediction="b", exact_match=0.0),
                      row(None, ground_truth="a", prediction="", error="boom")]) == \
        pytest.approx(1 / 3)
    assert pass_rate([row(None), row(None)]) is None  # no rule says what passing means
    # the recorder's own pass@1 wins (it knew which answers had validators)
    assert pass_rate([row(None, error="x", metrics={"pass@1": 0.5}),
                      row(True, metrics={"pass@1": 0.5})]) == 0.5


def write_point(store: Store, step: int, passes: list[int], n: int = 4) -> None:
    """One point: prompt i gets n answers, of which passes[i] pass their validators."""
    rows = [Prediction(run_id="r", step=step, prompt_id=prompt_identity(f"q{i}"), prompt=f"q{i}",
                       sample_index=i, sample_number=k, prediction=f"answer {k}",
                       validation_pass=k < c, exact_match=None)
            for i, c in enumerate(passes) for k in range(n)]
    store.write_eval_point(EvalPoint(run_id="r", step=step), rows)


@pytest.fixture
def sampled(store: Store) -> Store:
    store.create_run(Run(id="r"))
    write_point(store, 1, [4, 3, 4, 2, 3])
    write_point(store, 2, [2, 2, 1, 1, 0])
    return store


def test_per_prompt_pass_rates_that_all_fall_are_a_significant_regression(
    sampled: Store,
) -> None:
    comparison = compare_points(sampled, "r", 1, 2)
    sig = comparison.significance
    assert sig is not None and sig.test == "sign_flip" and "sign-flip" in sig.test_description
    assert sig.validation is None and sig.exact_match is None  # no McNemar on single answers
    rate = sig.pass_rate
    assert rate is not None and rate.exact
    assert (rate.prompts, rate.answers_a, rate.answers_b) == (5, 4, 4)
    assert rate.mean_a == pytest.approx(16 / 20) and rate.mean_b == pytest.approx(6 / 20)
    assert rate.mean_change == pytest.approx(-0.5) and (rate.worse, rate.better) == (5, 0)
    # every change is negative: only 1 of the 2^5 sign patterns is as low
    assert rate.p_worse == pytest.approx(1 / 32) and rate.p_value == pytest.approx(2 / 32)
    assert sig.significant_regression and sig.reasons[0].startswith("pass rate: 80.0% -> 30.0%")
    # the items still pair first answers (sample number 0), one per prompt
    assert comparison.counts.paired == 5


def test_three_prompts_falling_are_not_yet_significant(store: Store) -> None:
    store.create_run(Run(id="r"))
    write_point(store, 1, [4, 4, 4])
    write_point(store, 2, [2, 3, 1])
    sig = compare_points(store, "r", 1, 2).significance
    assert sig is not None and sig.pass_rate is not None
    assert sig.pass_rate.p_worse == pytest.approx(1 / 8)  # 3 changes: 8 patterns
    assert not sig.significant_regression and sig.reasons == []


def test_check_says_which_test_ran(sqlite_url: str) -> None:
    with open_store(sqlite_url) as store:
        store.create_run(Run(id="r"))
        write_point(store, 1, [4, 3, 4, 2, 3])
        write_point(store, 2, [2, 2, 1, 1, 0])
        store.create_run(Run(id="single"))
        store.write_eval_point(EvalPoint(run_id="single", step=1), [
            Prediction(run_id="single", step=1, prompt_id="p", validation_pass=True)])
    runner = CliRunner()
    out = runner.invoke(main, ["compare", "r", "r", "--step-a", "1", "--step-b", "2", "--db",
                               sqlite_url], catch_exceptions=False).output
    assert "test: paired sign-flip permutation test over prompts" in out
    assert "pass rate per prompt: 80.0% → 30.0% over 5 prompts" in out
    report = json.loads(runner.invoke(main, [
        "check", "r", "--step", "2", "--baseline", "r", "--baseline-step", "1",
        "--alpha", "0.05", "--json", "--db", sqlite_url]).stdout)
    assert report["passed"] is False
    assert report["comparison"]["significance"]["test"] == "sign_flip"
    single = runner.invoke(main, ["compare", "single", "single", "--step-a", "1", "--step-b", "1",
                                  "--db", sqlite_url]).output
    assert "test: exact McNemar test on the pass/fail flips of single answers" in single
