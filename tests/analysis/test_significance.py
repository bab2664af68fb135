"""Significance: checked against values computed by hand and against scipy's implementations."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from predwatch.analysis.significance import (
    bootstrap_mean,
    disagreement,
    mcnemar_exact,
    pass_at_k,
)


def test_mcnemar_matches_the_binomial_tail_computed_by_hand() -> None:
    # 8 prompts got worse, 2 better: n = 10, P(X <= 2) = (1 + 10 + 45) / 1024.
    test = mcnemar_exact(8, 2)
    assert test.p_value == pytest.approx(2 * 56 / 1024)
    assert test.p_worse == pytest.approx(56 / 1024)  # P(X >= 8) = P(X <= 2) by symmetry
    assert (test.worse, test.better) == (8, 2)


def test_mcnemar_without_discordant_pairs_is_no_evidence() -> None:
    assert mcnemar_exact(0, 0).p_value == 1.0
    assert mcnemar_exact(0, 0).p_worse == 1.0
    assert mcnemar_exact(0, 5).p_worse == 1.0  # nothing got worse


def test_mcnemar_is_symmetric_and_capped_at_one() -> None:
    assert mcnemar_exact(3, 3).p_value == 1.0
    assert mcnemar_exact(7, 1).p_value == pytest.approx(mcnemar_exact(1, 7).p_value)


@pytest.mark.parametrize("worse,better", [(1, 0), (5, 0), (9, 3), (30, 18), (400, 350), (2, 40)])
def test_mcnemar_agrees_with_scipy_binomtest(worse: int, better: int) -> None:
    stats = pytest.importorskip("scipy.stats")
    n = worse + better
    test = mcnemar_exact(worse, better)
    assert test.p_value == pytest.approx(stats.binomtest(worse, n, 0.5).pvalue, rel=1e-9)
    greater = stats.binomtest(worse, n, 0.5, alternative="greater").pvalue
    assert test.p_worse == pytest.approx(greater, rel=1e-9, abs=1e-15)


def test_mcnemar_refuses_negative_counts() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        mcnemar_exact(-1, 2)


def test_bootstrap_interval_holds_the_mean_and_narrows_with_more_prompts() -> None:
    rng = random.Random(1)
    small = [[rng.gauss(0.1, 0.2)] for _ in range(20)]
    large = [[rng.gauss(0.1, 0.2)] for _ in range(800)]
    a, b = bootstrap_mean(small), bootstrap_mean(large)
    assert a is not None and b is not None
    assert a.low <= a.mean <= a.high and b.low <= b.mean <= b.high
    assert (b.high - b.low) < (a.high - a.low) / 3  # ~ 1 / sqrt(40) as wide
    assert b.low > 0  # 800 prompts with a true mean of 0.1: clearly above zero


def test_bootstrap_agrees_with_scipy_percentile_bootstrap() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(7)
    values = [rng.gauss(0.0, 1.0) for _ in range(300)]
    ours = bootstrap_mean([[v] for v in values], resamples=4000, seed=3)
    theirs = stats.bootstrap((values,), statistic=lambda x, axis=-1: x.mean(axis=axis),
                             n_resamples=4000, method="percentile", random_state=3,
                             confidence_level=0.95).confidence_interval
    assert ours is not None
    sd = 1 / math.sqrt(300)
    # Different random streams: the bounds agree to well within a tenth of a standard error.
    assert ours.low == pytest.approx(theirs.low, abs=0.15 * sd)
    assert ours.high == pytest.approx(theirs.high, abs=0.15 * sd)


def test_bootstrap_resamples_prompts_not_answers() -> None:
    # Ten prompts, each answered 8 times identically: the evidence is ten values, not eighty,
    # so the interval is as wide as for one answer per prompt.
    values = [(-1.0) ** i * (i % 3) for i in range(10)]
    once = bootstrap_mean([[v] for v in values], seed=5)
    eight = bootstrap_mean([[v] * 8 for v in values], seed=5)
    assert once is not None and eight is not None
    assert eight.high - eight.low == pytest.approx(once.high - once.low)
    assert eight.prompts == 10


def test_bootstrap_is_reproducible_and_none_on_nothing() -> None:
    data = [[0.1], [0.3], [-0.2], [0.0]]
    assert bootstrap_mean(data, seed=2) == bootstrap_mean(data, seed=2)
    assert bootstrap_mean([]) is None and bootstrap_mean([[]]) is None


def test_pass_at_k_is_the_unbiased_estimator() -> None:
    assert pass_at_k(5, 2, 1) == pytest.approx(2 / 5)  # pass@1 is the pass rate
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 4, 2) == 1.0  # fewer than k failures: some k-subset always passes
    with pytest.raises(ValueError, match="at least 6 answers"):
        pass_at_k(5, 1, 6)


def test_disagreement_is_the_share_of_differing_answer_pairs() -> None:
    assert disagreement(["a", "a", "b"]) == pytest.approx(2 / 3)
    assert disagreement(["x", "x ", "x"]) == 0.0  # surrounding whitespace is not a difference
    assert disagreement(["a", "b", "c", "d"]) == 1.0
    assert disagreement(["only one"]) is None


# --- a whole comparison ---------------------------------------------------------------------
def _point(store: Any, step: int, rows: list[dict[str, Any]]) -> None:
    from predwatch.records import EvalPoint, Prediction, prompt_identity

    preds = [Prediction(run_id="r", step=step, prompt_id=prompt_identity(f"q{i}"),
                        prompt=f"q{i}", ground_truth="t", prediction="p", **row)
             for i, row in enumerate(rows)]
    store.write_eval_point(EvalPoint(run_id="r", step=step), preds)


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Any:
    from predwatch.records import Run
    from predwatch.storage import open_store

    store = open_store(sqlite_url)
    store.create_run(Run(id="r"))
    yield store
    store.close()


def test_many_lost_exact_matches_are_a_significant_regression(sqlite_store: Any) -> None:
    from predwatch.analysis import compare_points
    from predwatch.analysis.significance import assess

    # 30 prompts: 12 lose their exact match, 1 gains one; CER rises for those 12.
    before = [{"exact_match": 1.0, "char_error_rate": 0.0}] * 12 + \
             [{"exact_match": 0.0, "char_error_rate": 0.5}] + \
             [{"exact_match": 1.0, "char_error_rate": 0.0}] * 17
    after = [{"exact_match": 0.0, "char_error_rate": 0.4}] * 12 + \
            [{"exact_match": 1.0, "char_error_rate": 0.0}] + \
            [{"exact_match": 1.0, "char_error_rate": 0.0}] * 17
    _point(sqlite_store, 1, before)
    _point(sqlite_store, 2, after)
    verdict = assess(compare_points(sqlite_store, "r", 1, 2), alpha=0.05)
    assert verdict.exact_match is not None
    assert (verdict.exact_match.worse, verdict.exact_match.better) == (12, 1)
    # P(X >= 12 | n = 13) = (C(13,12) + C(13,13)) / 2^13 = 14 / 8192
    assert verdict.exact_match.p_worse == pytest.approx(14 / 8192)
    assert verdict.significant_regression
    assert any(r.startswith("exact match") for r in verdict.reasons)
    assert any(r.startswith("char_error_rate") for r in verdict.reasons)
    assert verdict.deltas["char_error_rate"].low > 0


def test_a_few_flips_either_way_are_not_significant(sqlite_store: Any) -> None:
    from predwatch.analysis import compare_points
    from predwatch.analysis.significance import assess

    ok, bad = {"validation_pass": True}, {"validation_pass": False}
    _point(sqlite_store, 1, [ok, ok, bad, ok, ok, ok])
    _point(sqlite_store, 2, [bad, bad, ok, ok, ok, ok])  # 2 pass->fail, 1 fail->pass
    verdict = assess(compare_points(sqlite_store, "r", 1, 2))
    assert verdict.validation is not None
    assert (verdict.validation.worse, verdict.validation.better) == (2, 1)
    assert verdict.validation.p_worse == pytest.approx(4 / 8)  # P(X >= 2 | n = 3)
    assert not verdict.significant_regression and verdict.reasons == []


def test_alpha_must_be_a_level() -> None:
    from predwatch.analysis.compare import Comparison, ComparisonCounts, PointRef
    from predwatch.analysis.significance import assess

    empty = Comparison(a=PointRef(run_id="r", step=1), b=PointRef(run_id="r", step=2),
                       tolerance=0.05, counts=ComparisonCounts(), mean_deltas={}, items=[])
    assert assess(empty).significant_regression is False
    with pytest.raises(ValueError, match="alpha"):
        assess(empty, alpha=0.7)


# --- wired into compare_points / compare_runs / regression_report -----------------------------
def test_a_comparison_carries_its_significance_over_every_paired_prompt(
        sqlite_store: Any) -> None:
    from predwatch.analysis import compare_points, regression_report

    ok, bad = {"validation_pass": True}, {"validation_pass": False}
    _point(sqlite_store, 1, [ok, ok, bad, ok, ok, ok])
    _point(sqlite_store, 2, [bad, bad, ok, ok, ok, ok])  # 2 pass->fail, 1 fail->pass
    only_regressed = compare_points(sqlite_store, "r", 1, 2, regressed_only=True)
    assert len(only_regressed.items) == 2
    sig = only_regressed.significance
    assert sig is not None and sig.validation is not None
    # the improved prompt counts although items hold only the regressed two
    assert (sig.validation.worse, sig.validation.better) == (2, 1)
    assert sig.validation.p_value == pytest.approx(1.0)  # 2 * P(X <= 1 | n = 3) = 2 * 4/8
    assert compare_points(sqlite_store, "r", 1, 2, alpha=None).significance is None
    counted = regression_report(sqlite_store, "r", baseline="r", step=2, baseline_step=1)
    assert not counted.passed and counted.alpha is None
    assert counted.significant_regression is None
    gated = regression_report(sqlite_store, "r", baseline="r", step=2, baseline_step=1,
                              alpha=0.05)
    assert gated.passed and gated.significant_regression is False and gated.alpha == 0.05


def test_directions_come_from_the_metric_registry(sqlite_store: Any) -> None:
    from predwatch.analysis import compare_points
    from predwatch.scoring.registry import METRICS, SCORERS, scorer

    @scorer("test_lower_better_cost", higher_is_better=False, replace=True)
    def cost(prediction: str, reference: str | None) -> float:
        return float(len(prediction))

    try:
        # every prompt's cost rises by 1: with lower better, a regression beyond chance
        _point(sqlite_store, 1, [{"metrics": {"test_lower_better_cost": 1.0}}] * 20)
        _point(sqlite_store, 2, [{"metrics": {"test_lower_better_cost": 2.0}}] * 20)
        sig = compare_points(sqlite_store, "r", 1, 2).significance
        assert sig is not None and sig.significant_regression
        interval = sig.deltas["test_lower_better_cost"]
        assert (interval.mean, interval.low, interval.high) == (1.0, 1.0, 1.0)
        assert any(r.startswith("test_lower_better_cost") for r in sig.reasons)
    finally:
        METRICS.pop("test_lower_better_cost", None)
        SCORERS.unregister("test_lower_better_cost")


def test_a_vanishing_alpha_asks_for_the_whole_bootstrap_range(sqlite_store: Any) -> None:
    from predwatch.analysis import compare_points

    _point(sqlite_store, 1, [{"exact_match": 1.0}, {"exact_match": 0.0}])
    _point(sqlite_store, 2, [{"exact_match": 0.0}, {"exact_match": 0.0}])
    # 1 - 2 * 5e-324 is 1.0 in floating point: the interval is the resamples' min and max
    sig = compare_points(sqlite_store, "r", 1, 2, alpha=5e-324).significance
    assert sig is not None and sig.deltas["exact_match"].confidence == 1.0
    assert (sig.deltas["exact_match"].low, sig.deltas["exact_match"].high) == (-1.0, 0.0)
