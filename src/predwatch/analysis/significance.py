"""Is a regression real? Exact tests and bootstrap intervals for comparisons of two points.

- Pass/fail and exact-match flips between two points are paired binary outcomes: the exact
  McNemar test (a two-sided binomial test on the discordant pairs) says whether more prompts
  went one way than chance allows.
- Score deltas (``b - a`` per prompt) get a percentile bootstrap interval of their mean. With
  several answers per prompt (sampling on), prompts are resampled as clusters, so answers to one
  prompt are never treated as independent evidence.
- ``pass_at_k`` is the unbiased estimator of Chen et al. (2021), "Evaluating Large Language
  Models Trained on Code", and ``disagreement`` the share of answer pairs to one prompt that
  differ.

Pure Python (``math`` and ``random``): the core stays free of numpy/scipy, and results are
reproducible from the seed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from pydantic import BaseModel

DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95


class FlipTest(BaseModel):
    """The exact McNemar test on paired binary outcomes.

    ``worse``: pairs that went from good to bad (pass to fail, match to no match); ``better``:
    the reverse. ``p_value`` is two-sided; ``p_worse`` one-sided (more went worse than better).
    """

    worse: int
    better: int
    p_value: float
    p_worse: float


class MeanInterval(BaseModel):
    """A bootstrap interval of the mean of per-prompt deltas (``b - a``)."""

    mean: float
    low: float
    high: float
    confidence: float
    prompts: int


class Significance(BaseModel):
    """What of a comparison is beyond chance, at ``alpha``."""

    alpha: float
    validation: FlipTest | None = None
    exact_match: FlipTest | None = None
    deltas: dict[str, MeanInterval] = {}
    significant_regression: bool = False
    reasons: list[str] = []


def _binomial_tail(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), exactly (in log space, so large n is safe)."""
    if n == 0:
        return 1.0
    log_half_n = -n * math.log(2.0)
    total = 0.0
    for i in range(k + 1):
        log_term = math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + log_half_n
        total += math.exp(log_term)
    return min(1.0, total)


def mcnemar_exact(worse: int, better: int) -> FlipTest:
    """The exact McNemar test for ``worse`` vs ``better`` discordant pairs.

    Two-sided p = min(1, 2 * P(X <= min(worse, better))) with X ~ Binomial(worse + better, 1/2),
    as ``scipy.stats.binomtest(worse, worse + better, 0.5).pvalue`` and statsmodels'
    ``mcnemar(..., exact=True)`` compute it. One-sided ``p_worse`` = P(X >= worse).
    """
    if worse < 0 or better < 0:
        raise ValueError("flip counts must be non-negative")
    n = worse + better
    two_sided = min(1.0, 2.0 * _binomial_tail(min(worse, better), n)) if n else 1.0
    one_sided = 1.0 - _binomial_tail(worse - 1, n) if worse > 0 else 1.0
    return FlipTest(worse=worse, better=better, p_value=two_sided,
                    p_worse=min(1.0, max(0.0, one_sided)))


def bootstrap_mean(
    clusters: Sequence[Sequence[float]],
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> MeanInterval | None:
    """A percentile bootstrap interval of the mean delta, resampling prompts (clusters).

    Each element of ``clusters`` holds one prompt's deltas (one per answer; several when
    sampling). The statistic is the mean over all answers of the resampled prompts. None when
    there is nothing to resample.
    """
    groups = [list(c) for c in clusters if len(c)]
    if not groups:
        return None
    if not 0 < confidence < 1:
        raise ValueError("confidence must be between 0 and 1")
    sums = [sum(g) for g in groups]
    sizes = [len(g) for g in groups]
    mean = sum(sums) / sum(sizes)
    rng = random.Random(seed)
    n = len(groups)
    stats = []
    for _ in range(resamples):
        picks = [rng.randrange(n) for _ in range(n)]
        stats.append(sum(sums[i] for i in picks) / sum(sizes[i] for i in picks))
    stats.sort()
    tail = (1 - confidence) / 2
    low = stats[max(0, math.floor(tail * resamples))]
    high = stats[min(resamples - 1, math.ceil((1 - tail) * resamples) - 1)]
    return MeanInterval(mean=mean, low=low, high=high, confidence=confidence, prompts=n)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` answers of which ``c`` passed: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or k < 1:
        raise ValueError("need 0 <= c <= n and k >= 1")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} answers per prompt, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def disagreement(answers: Sequence[str]) -> float | None:
    """The share of pairs of answers to one prompt that differ (0: all agree); None below 2."""
    n = len(answers)
    if n < 2:
        return None
    counts: dict[str, int] = {}
    for a in answers:
        key = a.strip()
        counts[key] = counts.get(key, 0) + 1
    same = sum(c * (c - 1) // 2 for c in counts.values())
    pairs = n * (n - 1) // 2
    return 1.0 - same / pairs
