"""An evaluation point's summary as flat tracker metrics (``predwatch_exact_match`` ...).

Framework-free, so any loop can chart predwatch beside its loss, e.g. with Accelerate::

    summary = recorder.record(model, tokenizer, step=step)
    if summary is not None:
        accelerator.log(point_metrics(summary), step=step)

The Trainer callback adds the same dict to the Trainer's logs (see ``integrations.transformers``).
Every value is a float or int; ``predwatch_url`` (text) is added by the callback when a server
is known.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable

from predwatch.recording.recorder import PointSummary
from predwatch.records import CORE_METRICS, Prediction

PREFIX = "predwatch_"
# The validators whose passing means "the answer is valid JSON" (``predwatch_json_valid_rate``).
JSON_VALIDATORS = ("json_parse", "json_schema")
_NOT_A_NAME = re.compile(r"[^0-9A-Za-z_]+")


def point_metrics(summary: PointSummary) -> dict[str, float | int]:
    """The tracker metrics of one evaluation point.

    Keys (each present only when it has a value): ``predwatch_<metric>`` for every scored metric
    (``exact_match``, ``char_error_rate``, ``token_f1`` ...: means over the answers that have a
    ground truth), ``predwatch_validation_pass_rate`` (answers passing every validator),
    ``predwatch_<validator>_pass_rate`` per validator (its ``name``, else its kind),
    ``predwatch_json_valid_rate`` (answers passing every JSON validator), plus
    ``predwatch_sample_count``, ``predwatch_failed_samples`` (generation errors) and
    ``predwatch_validation_failures`` (answers failing validation).
    """
    rows = summary.predictions
    metrics: dict[str, float | int] = {}
    for name, value in _score_means(rows).items():
        metrics[PREFIX + name] = value
    validated = [r for r in rows if r.validation_pass is not None]
    if validated:
        passed = sum(1 for r in validated if r.validation_pass)
        metrics[PREFIX + "validation_pass_rate"] = passed / len(validated)
        metrics[PREFIX + "validation_failures"] = len(validated) - passed
        for label, rate in _per_validator(validated).items():
            metrics[f"{PREFIX}{label}_pass_rate"] = rate
        json_rate = _json_valid_rate(validated)
        if json_rate is not None:
            metrics[PREFIX + "json_valid_rate"] = json_rate
    metrics[PREFIX + "sample_count"] = summary.sample_count
    metrics[PREFIX + "failed_samples"] = summary.failed_count
    return metrics


def _score_means(rows: Iterable[Prediction]) -> dict[str, float]:
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        scores = {name: getattr(row, name) for name in CORE_METRICS} | dict(row.metrics)
        for name, value in scores.items():
            if value is not None:
                sums[name] += float(value)
                counts[name] += 1
    return {name: sums[name] / counts[name] for name in sums}


def _per_validator(rows: list[Prediction]) -> dict[str, float]:
    """Pass rate per validator label (two unnamed validators of one kind share a label)."""
    passed: dict[str, int] = defaultdict(int)
    seen: dict[str, int] = defaultdict(int)
    for row in rows:
        outcome: dict[str, bool] = {}
        for result in row.validation_results:
            label = _label(result.name or result.validator)
            outcome[label] = outcome.get(label, True) and result.passed
        for label, ok in outcome.items():
            seen[label] += 1
            passed[label] += ok
    return {label: passed[label] / seen[label] for label in seen}


def _json_valid_rate(rows: list[Prediction]) -> float | None:
    judged = [
        all(r.passed for r in row.validation_results if r.validator in JSON_VALIDATORS)
        for row in rows
        if any(r.validator in JSON_VALIDATORS for r in row.validation_results)
    ]
    return sum(judged) / len(judged) if judged else None


def _label(name: str) -> str:
    return _NOT_A_NAME.sub("_", name).strip("_").lower() or "validator"
