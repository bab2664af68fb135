"""Is a regression real? Exact tests and bootstrap intervals for comparisons of two points.

- Pass/fail and exact-match flips between two points are paired binary outcomes: the exact
  McNemar test (a two-sided binomial test on the discordant pairs) says whether more prompts
  went one way than chance allows.
- Score deltas (``b - a`` per prompt) get a percentile bootstrap interval of their mean. With
  several answers per prompt (sampling on), prompts are resampled as clusters, so answers to one
  prompt are never treated as independent evidence.
- With several answers per prompt (``num_samples`` > 1 at either point) one answer per prompt
  is no longer the outcome: each prompt's **pass rate** (the share of its answers that pass,
  ``scoring.samples``) is, and the pass/fail test is a paired **sign-flip permutation test**
  over prompts of the per-prompt change in pass rate (exact over every sign pattern up to
  ``EXACT_FLIPS`` changed prompts, else Monte Carlo), in place of McNemar on single answers.
  Score deltas are then per-prompt differences of means over all answers. ``Significance.test``
  says which ran.
- ``pass_at_k`` is the unbiased estimator of Chen et al. (2021), "Evaluating Large Language
  Models Trained on Code", and ``disagreement`` the share of answer pairs to one prompt that
  differ (both in ``scoring.samples``, re-exported here).

Pure Python (``math`` and ``random``): the core stays free of numpy/scipy, and results are
reproducible from the seed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel

from predwatch.records import CORE_METRICS, Prediction
from predwatch.scoring.samples import answer_passed, disagreement, pass_at_k

if TYPE_CHECKING:  # compare.py holds a Significance in each Comparison: no import cycle
    from predwatch.analysis.compare import Comparison, PromptPair

__all__ = [
    "DEFAULT_ALPHA", "DEFAULT_CONFIDENCE", "DEFAULT_RESAMPLES", "EXACT_FLIPS", "FlipTest",
    "MeanInterval", "PassRateTest", "Significance", "assess", "assess_pairs", "bootstrap_mean",
    "bootstrap_means", "disagreement", "mcnemar_exact", "pass_at_k", "pass_rate",
    "registry_directions", "sign_flip_test",
]

DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95
DEFAULT_ALPHA = 0.05
EXACT_FLIPS = 16  # up to this many changed prompts, every sign pattern is enumerated (65,536)
MCNEMAR = "mcnemar"
SIGN_FLIP = "sign_flip"
TESTS = {
    MCNEMAR: "exact McNemar test on the pass/fail flips of single answers",
    SIGN_FLIP: "paired sign-flip permutation test over prompts of the per-prompt pass rate "
               "(several answers per prompt)",
}


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


class PassRateTest(BaseModel):
    """The sign-flip permutation test on per-prompt pass rates (several answers per prompt).

    Over the ``prompts`` paired prompts whose answers have a verdict at both points: the mean
    pass rate at each side, ``worse``/``better`` the prompts whose pass rate fell/rose, and the
    p-values of the mean change under random sign flips of the per-prompt changes: two-sided
    (|mean| at least as large) and ``p_worse`` one-sided (at least as negative). ``exact``:
    every sign pattern was enumerated, else ``resamples`` random ones (p = (hits + 1) /
    (resamples + 1)).
    """

    prompts: int
    answers_a: int
    answers_b: int
    mean_a: float
    mean_b: float
    mean_change: float
    worse: int
    better: int
    p_value: float
    p_worse: float
    exact: bool
    resamples: int | None = None


class Significance(BaseModel):
    """What of a comparison is beyond chance, at ``alpha``.

    ``test`` names the pass/fail test that ran (``mcnemar``: ``validation`` and
    ``exact_match``; ``sign_flip``: ``pass_rate``) and ``test_description`` says it in words.
    """

    alpha: float
    test: str = MCNEMAR
    test_description: str = TESTS[MCNEMAR]
    pass_rate: PassRateTest | None = None
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
    by_prompt = {str(i): list(c) for i, c in enumerate(clusters)}
    return bootstrap_means({"": by_prompt}, confidence=confidence, resamples=resamples,
                           seed=seed).get("")


def bootstrap_means(
    clusters: Mapping[str, Mapping[str, Sequence[float]]],
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict[str, MeanInterval]:
    """``bootstrap_mean`` for several scores at once: ``{score: {prompt_id: deltas}}``.

    The scores share each resample of prompts (one draw serves them all, as a paired design
    should, and costs a draw per resample instead of one per score). A score no prompt has is
    left out.
    """
    # 1 is allowed (the range of the resampled means): ``assess`` at a tiny alpha asks for it
    if not 0 < confidence <= 1:
        raise ValueError("confidence must be in (0, 1]")
    prompts = sorted({p for by_prompt in clusters.values() for p, d in by_prompt.items() if d})
    if not prompts:
        return {}
    sums: dict[str, list[float]] = {}
    sizes: dict[str, list[int]] = {}
    for score, by_prompt in clusters.items():
        if any(by_prompt.get(p) for p in prompts):
            sums[score] = [float(sum(by_prompt.get(p) or ())) for p in prompts]
            sizes[score] = [len(by_prompt.get(p) or ()) for p in prompts]
    rng = random.Random(seed)
    indices = range(len(prompts))
    stats: dict[str, list[float]] = {score: [] for score in sums}
    for _ in range(resamples):
        # choices + map keep the loop in C: 2,000 resamples of 300 prompts in ~0.1 s.
        picks = rng.choices(indices, k=len(prompts))
        for score in sums:
            size = sum(map(sizes[score].__getitem__, picks))
            if size:  # a score only some prompts have can miss a resample entirely
                stats[score].append(sum(map(sums[score].__getitem__, picks)) / size)
    tail = (1 - confidence) / 2
    found = {}
    for score, values in stats.items():
        if not values:
            continue
        values.sort()
        n = len(values)
        found[score] = MeanInterval(
            mean=sum(sums[score]) / sum(sizes[score]),
            low=values[max(0, math.floor(tail * n))],
            high=values[min(n - 1, math.ceil((1 - tail) * n) - 1)],
            confidence=confidence, prompts=sum(1 for size in sizes[score] if size),
        )
    return found


def sign_flip_test(
    changes: Sequence[float], *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> tuple[float, float, bool]:
    """Two-sided and one-sided ("worse": the mean is at least as negative) p-values of the
    mean of paired per-prompt ``changes`` under the null that each change's sign is a coin
    flip, and whether they are exact.

    Zero changes do not move under a flip and are left out. Up to ``EXACT_FLIPS`` non-zero
    changes, all 2^m sign patterns are enumerated; above, ``resamples`` random patterns are
    drawn (reproducible from ``seed``) and p = (hits + 1) / (resamples + 1).
    """
    values = [float(c) for c in changes if c != 0]
    if not values:
        return 1.0, 1.0, True
    observed = sum(values)
    eps = 1e-12 * max(1.0, sum(abs(v) for v in values))  # ties within rounding count as hits
    m = len(values)
    if m <= EXACT_FLIPS:
        totals = [0.0]
        for v in values:  # every sign pattern's sum, built one change at a time
            totals = [t + v for t in totals] + [t - v for t in totals]
        n = len(totals)
        two = sum(abs(t) >= abs(observed) - eps for t in totals) / n
        worse = sum(t <= observed + eps for t in totals) / n
        return min(1.0, two), min(1.0, worse), True
    rng = random.Random(seed)
    hits_two = hits_worse = 0
    for _ in range(resamples):
        t = sum(v if rng.random() < 0.5 else -v for v in values)
        hits_two += abs(t) >= abs(observed) - eps
        hits_worse += t <= observed + eps
    return ((hits_two + 1) / (resamples + 1), (hits_worse + 1) / (resamples + 1), False)


def pass_rate(rows: Sequence[Prediction]) -> float | None:
    """The share of one prompt's answers at one point that passed (``scoring.samples``): its
    recorded ``pass@1`` when the recorder wrote one, else from each answer's verdict; None
    when no answer has one."""
    recorded = [r.metrics.get("pass@1") for r in rows]
    if rows and all(v is not None for v in recorded):
        return float(recorded[0])  # type: ignore[arg-type]
    verdicts = [answer_passed(r) for r in rows]
    known = [v for v in verdicts if v is not None]
    return sum(known) / len(known) if known else None


def registry_directions(names: Iterable[str]) -> dict[str, bool | None]:
    """Per metric, True when higher is better, False when lower is, None for neither: from the
    metric registry (``@scorer(higher_is_better=...)``); unregistered metrics have none."""
    from predwatch.scoring.registry import metric_info, metrics

    metrics()  # loads the built-in and entry-point metrics, so their registrations count
    return {name: metric_info(name).higher_is_better for name in names}


def assess(
    comparison: Comparison,
    *,
    alpha: float = DEFAULT_ALPHA,
    directions: Mapping[str, bool | None] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Significance:
    """What of ``comparison`` (``a`` -> ``b``) is beyond chance at level ``alpha``.

    ``comparison.significance`` already holds this, computed over every paired prompt; this
    function looks at ``comparison.items`` only (all prompts unless ``regressed_only``).
    See ``assess_pairs`` for the tests and arguments.
    """
    return assess_pairs(comparison.items, alpha=alpha, directions=directions,
                        resamples=resamples, seed=seed)


def assess_pairs(
    items: Sequence[PromptPair],
    *,
    alpha: float = DEFAULT_ALPHA,
    directions: Mapping[str, bool | None] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    samples: Mapping[str, tuple[Sequence[Prediction], Sequence[Prediction]]] | None = None,
) -> Significance:
    """What of the paired prompts ``items`` (``a`` -> ``b``) is beyond chance at ``alpha``.

    A **significant regression** is any of: more prompts flipped pass -> fail than fail -> pass
    with one-sided exact McNemar p < alpha; the same for exact match 1 -> 0; a score whose
    bootstrap interval (confidence 1 - 2 alpha, i.e. a one-sided test at alpha) lies wholly on
    the worse side of 0. Several answers to one prompt count as one cluster.

    Args:
        items: Prompt pairs, as ``compare_points``/``compare_runs`` build them (unpaired
            ones are ignored).
        alpha: The significance level (0 < alpha < 0.5).
        directions: Per score, True when higher is better, False when lower is, None for no
            direction (reported, never a regression). Default: the metric registry's.
        resamples, seed: Of the bootstrap (and of a Monte Carlo sign-flip test).
        samples: Several answers per prompt at either point: per paired prompt, its answers
            at ``a`` and at ``b``. The pass/fail test is then ``sign_flip_test`` on the
            per-prompt pass rates and score deltas are per-prompt differences of means (see
            the module docstring); ``items`` are not used.
    """
    if not 0 < alpha < 0.5:
        raise ValueError("alpha must be between 0 and 0.5")
    if samples is not None:
        return _assess_samples(samples, alpha=alpha, directions=directions,
                               resamples=resamples, seed=seed)
    paired = [item for item in items if item.a is not None and item.b is not None]
    validation = mcnemar_exact(
        sum(item.flip == "pass_to_fail" for item in paired),
        sum(item.flip == "fail_to_pass" for item in paired),
    )
    em_worse = em_better = 0
    for item in paired:
        before, after = item.a.exact_match, item.b.exact_match  # type: ignore[union-attr]
        if before is None or after is None:
            continue
        em_worse += before >= 0.5 > after
        em_better += after >= 0.5 > before
    exact = mcnemar_exact(em_worse, em_better)
    clusters: dict[str, dict[str, list[float]]] = {}
    for item in paired:
        for metric, delta in item.deltas.items():
            clusters.setdefault(metric, {}).setdefault(item.prompt_id, []).append(delta)
    intervals = dict(sorted(bootstrap_means(clusters, confidence=1 - 2 * alpha,
                                            resamples=resamples, seed=seed).items()))
    better_when_higher = {**registry_directions(intervals), **(directions or {})}
    reasons = []
    if validation.worse > validation.better and validation.p_worse < alpha:
        reasons.append(f"validation: {validation.worse} pass -> fail vs {validation.better} "
                       f"fail -> pass (McNemar p = {validation.p_worse:.3g})")
    if exact.worse > exact.better and exact.p_worse < alpha:
        reasons.append(f"exact match: {exact.worse} lost vs {exact.better} gained "
                       f"(McNemar p = {exact.p_worse:.3g})")
    for metric, interval in intervals.items():
        higher = better_when_higher.get(metric)
        if higher is None:
            continue
        worse = interval.high < 0 if higher else interval.low > 0
        if worse:
            reasons.append(f"{metric}: mean change {interval.mean:+.3f}, "
                           f"{interval.confidence:.0%} interval [{interval.low:+.3f}, "
                           f"{interval.high:+.3f}] excludes 0")
    return Significance(
        alpha=alpha,
        validation=validation if validation.worse + validation.better else None,
        exact_match=exact if exact.worse + exact.better else None,
        deltas=intervals,
        significant_regression=bool(reasons),
        reasons=reasons,
    )


def _assess_samples(
    samples: Mapping[str, tuple[Sequence[Prediction], Sequence[Prediction]]],
    *,
    alpha: float,
    directions: Mapping[str, bool | None] | None,
    resamples: int,
    seed: int,
) -> Significance:
    """``assess_pairs`` with several answers per prompt (see the module docstring)."""
    from predwatch.scoring.registry import SAMPLE_METRICS, pass_at_k_of

    rates: list[tuple[float, float]] = []
    sizes_a: list[int] = []
    sizes_b: list[int] = []
    clusters: dict[str, dict[str, list[float]]] = {}
    for key, (rows_a, rows_b) in samples.items():
        if not rows_a or not rows_b:
            continue
        ra, rb = pass_rate(rows_a), pass_rate(rows_b)
        if ra is not None and rb is not None:
            rates.append((ra, rb))
            sizes_a.append(len(rows_a))
            sizes_b.append(len(rows_b))
        means_a, means_b = _score_means(rows_a), _score_means(rows_b)
        for metric in means_a.keys() & means_b.keys():
            clusters.setdefault(metric, {})[key] = [means_b[metric] - means_a[metric]]
    test = None
    reasons = []
    if rates:
        changes = [b - a for a, b in rates]
        p_two, p_worse, exact = sign_flip_test(changes, resamples=resamples, seed=seed)
        test = PassRateTest(
            prompts=len(rates), answers_a=max(sizes_a), answers_b=max(sizes_b),
            mean_a=sum(a for a, _ in rates) / len(rates),
            mean_b=sum(b for _, b in rates) / len(rates),
            mean_change=sum(changes) / len(changes),
            worse=sum(c < 0 for c in changes), better=sum(c > 0 for c in changes),
            p_value=p_two, p_worse=p_worse, exact=exact,
            resamples=None if exact else resamples,
        )
        if test.mean_change < 0 and test.p_worse < alpha:
            reasons.append(
                f"pass rate: {test.mean_a:.1%} -> {test.mean_b:.1%} over {test.prompts} prompts "
                f"({test.worse} worse, {test.better} better; sign-flip p = {test.p_worse:.3g})")
    intervals = dict(sorted(bootstrap_means(clusters, confidence=1 - 2 * alpha,
                                            resamples=resamples, seed=seed).items()))
    # pass@k and disagreement are functions of the pass rates just tested: reported, but the
    # permutation test alone decides (a bootstrap of a handful of prompts is too eager).
    neutral = {m: None for m in intervals if m in SAMPLE_METRICS or pass_at_k_of(m)}
    better_when_higher = {**registry_directions(intervals), **neutral, **(directions or {})}
    for metric, interval in intervals.items():
        higher = better_when_higher.get(metric)
        if higher is None:
            continue
        if interval.high < 0 if higher else interval.low > 0:
            reasons.append(f"{metric}: mean change {interval.mean:+.3f}, "
                           f"{interval.confidence:.0%} interval [{interval.low:+.3f}, "
                           f"{interval.high:+.3f}] excludes 0")
    return Significance(alpha=alpha, test=SIGN_FLIP, test_description=TESTS[SIGN_FLIP],
                        pass_rate=test, deltas=intervals, significant_regression=bool(reasons),
                        reasons=reasons)


def _score_means(rows: Sequence[Prediction]) -> dict[str, float]:
    """Each score's mean over the answers that have it (the original four and ``metrics``)."""
    sums: dict[str, list[float]] = {}
    for row in rows:
        values = {name: getattr(row, name) for name in CORE_METRICS} | dict(row.metrics)
        for name, value in values.items():
            if value is not None and math.isfinite(value):
                sums.setdefault(name, []).append(float(value))
    return {name: sum(v) / len(v) for name, v in sums.items()}
