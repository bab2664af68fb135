"""Several answers per prompt (``num_samples``): what passed, pass@k and disagreement.

An answer **passes** when it was generated (no ``error``), no validator failed it
(``validation_pass`` is not False) and, when the prompt has an expected answer, it matches it
exactly (``exact_match`` >= 0.5, the rule comparisons use for "match"; computed for this even
when ``exact_match`` is not among the run's metrics). An answer with neither
validators nor an expected answer has no verdict (None): nothing says what passing means.

Per prompt and point, with ``n`` answers of which ``c`` passed:

- ``pass@k`` for k = 1, 2, 4, ... (powers of 2 below ``n``) and ``n``: the unbiased estimator of
  Chen et al. (2021), 1 - C(n-c, k) / C(n, k), the chance that at least one of k answers drawn
  without replacement passes (``pass@1`` is the prompt's pass rate);
- ``disagreement``: the share of pairs of its answers whose texts differ (stripped), 0 when all
  agree, 1 when all differ.

The recorder writes a prompt's values into ``metrics`` of each of its ``n`` answers, so the
point's stored mean over its rows is the mean over its prompts (every prompt has ``n`` rows).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from predwatch.records import Prediction
from predwatch.scoring.metrics import exact_match

DISAGREEMENT = "disagreement"


def pass_name(k: int) -> str:
    """The metric name of pass@k (``pass@4``)."""
    return f"pass@{k}"


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


def pass_levels(n: int) -> list[int]:
    """The k of pass@k reported for ``n`` answers per prompt: 1, 2, 4, ... below n, and n."""
    levels = [1 << i for i in range(n.bit_length()) if (1 << i) < n]
    return [*levels, n] if n > 0 else []


def answer_passed(row: Prediction, *, validated: bool | None = None) -> bool | None:
    """Whether one answer passed (see the module docstring); None: no rule applies.

    ``validated``: whether validators were configured for it (a failed generation is never
    validated, so its ``validation_pass`` is None); default: whether it has a verdict.
    """
    validated = row.validation_pass is not None if validated is None else validated
    has_truth = row.ground_truth is not None
    if not validated and not has_truth:
        return None
    if row.error is not None or row.validation_pass is False:
        return False
    if has_truth:
        assert row.ground_truth is not None
        match = row.exact_match
        if match is None:  # exact_match not among the run's metrics: the rule still holds
            match = exact_match(row.prediction, row.ground_truth)
        return match >= 0.5
    return True


def prompt_metrics(
    rows: Sequence[Prediction], validated: Sequence[bool] | None = None
) -> dict[str, float | None]:
    """pass@k (each reported k) and disagreement of one prompt's answers at one point.

    pass@k is None for every k when no answer has a verdict; answers without one (among others
    that have one) count as not passed. Disagreement is over the generated answers.
    ``validated``: per row, whether validators were configured for it (see ``answer_passed``).
    """
    n = len(rows)
    checked: Sequence[bool | None] = validated if validated is not None else [None] * n
    verdicts = [answer_passed(r, validated=v) for r, v in zip(rows, checked, strict=True)]
    out: dict[str, float | None] = {}
    known = any(v is not None for v in verdicts)
    passed = sum(v is True for v in verdicts)
    for k in pass_levels(n):
        out[pass_name(k)] = pass_at_k(n, passed, k) if known else None
    out[DISAGREEMENT] = disagreement([r.prediction for r in rows if r.error is None])
    return out
