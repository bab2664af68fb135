"""The built-in metrics, and ``score_prediction`` which applies any registered ones.

All six compare stripped, lower-cased texts and are computed only when there is a ground truth.
The original four keep their exact meanings (they have their own columns and trend lines):

- ``exact_match``: 1.0 when the texts are equal, else 0.0.
- ``char_error_rate``: Levenshtein distance / max(len(truth), 1), capped at 1.0.
- ``length_ratio``: len(prediction) / max(len(truth), 1).
- ``word_overlap``: the share of the prediction's distinct whitespace-separated words that appear
  in the truth's words (0.0 when the prediction has no words).

Two more, on word tokens (runs of letters, digits and ``_``; punctuation and whitespace split):

- ``token_f1``: SQuAD-style F1 of the two bags of tokens (articles are kept: the metric is not
  English-only).
- ``rouge_l``: F-measure of the longest common token subsequence (ROUGE-L, beta 1).

Both give 1.0 when neither text has a token and 0.0 when only one has none. Edit distances and
subsequences come from rapidfuzz (C++), never from Python loops.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from rapidfuzz.distance import LCSseq, Levenshtein

from predwatch.config import DEFAULT_METRICS
from predwatch.errors import ConfigError
from predwatch.scoring.registry import Scorer, available_scorers, get_scorer, scorer

_TOKEN = re.compile(r"\w+")


def _normalise(text: str) -> str:
    return text.strip().lower()


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


@scorer("exact_match", label="EM", title="Exact match", format="pct", featured=True)
def exact_match(prediction: str, ground_truth: str) -> float:
    """1.0 when the stripped, lower-cased texts are equal."""
    return 1.0 if _normalise(prediction) == _normalise(ground_truth) else 0.0


@scorer("char_error_rate", label="CER", title="Char error rate", higher_is_better=False,
        featured=True)
def char_error_rate(prediction: str, ground_truth: str) -> float:
    """Levenshtein distance over the truth's length, capped at 1.0 (lower is better)."""
    pred, truth = _normalise(prediction), _normalise(ground_truth)
    return min(Levenshtein.distance(pred, truth) / max(len(truth), 1), 1.0)


@scorer("length_ratio", label="Len", title="Length ratio (answer / expected)",
        higher_is_better=None, range=None, featured=False)
def length_ratio(prediction: str, ground_truth: str) -> float:
    """The prediction's length over the truth's length (1.0: same length)."""
    return len(_normalise(prediction)) / max(len(_normalise(ground_truth)), 1)


@scorer("word_overlap", label="Overlap", title="Word overlap", featured=True)
def word_overlap(prediction: str, ground_truth: str) -> float:
    """The share of the prediction's distinct words that occur in the truth."""
    words = set(_normalise(prediction).split())
    if not words:
        return 0.0
    return len(words & set(_normalise(ground_truth).split())) / len(words)


@scorer("token_f1", label="F1", title="Token F1", featured=True)
def token_f1(prediction: str, ground_truth: str) -> float:
    """F1 of the prediction's and the truth's token bags (SQuAD style)."""
    pred, truth = _tokens(prediction), _tokens(ground_truth)
    if not pred or not truth:
        return 1.0 if pred == truth else 0.0
    common = sum((Counter(pred) & Counter(truth)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(truth)
    return 2 * precision * recall / (precision + recall)


@scorer("rouge_l", label="ROUGE-L", title="ROUGE-L", featured=False)
def rouge_l(prediction: str, ground_truth: str) -> float:
    """ROUGE-L F-measure: the longest common token subsequence against both lengths."""
    pred, truth = _tokens(prediction), _tokens(ground_truth)
    if not pred or not truth:
        return 1.0 if pred == truth else 0.0
    lcs = LCSseq.similarity(pred, truth)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(truth)
    return 2 * precision * recall / (precision + recall)


def resolve_scorers(names: Sequence[str]) -> dict[str, Scorer]:
    """Look up every metric by name at once, so a run fails at start, naming all bad names.

    Raises:
        ConfigError: One or more names are unknown (the message lists the available ones).
    """
    found: dict[str, Scorer] = {}
    unknown: list[str] = []
    for name in names:
        try:
            found[name] = get_scorer(name)
        except ConfigError:
            unknown.append(name)
    if unknown:
        raise ConfigError(
            f"unknown metric{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"available: {', '.join(available_scorers())}",
            detail=[{"field": "metrics", "reason": f"unknown: {name}"} for name in unknown],
        )
    return found


def score_prediction(
    prediction: str,
    ground_truth: str | None,
    metrics: Sequence[str] = DEFAULT_METRICS,
) -> dict[str, float | None]:
    """Score one prediction with the named metrics.

    Args:
        prediction: The model's answer.
        ground_truth: The expected answer; None gives None for every metric.
        metrics: Registered metric names.

    Returns:
        ``{metric name: score}``; a metric may itself answer None (not applicable).

    Raises:
        ConfigError: A metric name is unknown. A metric that raises propagates: a broken metric
            is a bug to see, not a score to hide.
    """
    scorers = resolve_scorers(metrics)
    if ground_truth is None:
        return {name: None for name in scorers}
    scores: dict[str, float | None] = {}
    for name, fn in scorers.items():
        value = fn(prediction, ground_truth)
        scores[name] = None if value is None else float(value)
    return scores
