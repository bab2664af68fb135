"""Significance: checked against values computed by hand and against scipy's implementations."""

from __future__ import annotations

import math
import random

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
