"""Scoring: metrics and validators in one registry.

``score_prediction`` computes metrics against a ground truth; ``run_validators`` checks an answer
against validator specs. Both are extended with ``@scorer`` / ``@validator`` or through the
``predwatch.scorers`` / ``predwatch.validators`` entry-point groups (see docs/scoring.md).
"""

from predwatch.config import DEFAULT_METRICS
from predwatch.scoring import validators_json, validators_text  # noqa: F401 - registers kinds
from predwatch.scoring.metrics import resolve_scorers, score_prediction
from predwatch.scoring.registry import (
    Check,
    Metric,
    OptionError,
    Scorer,
    ValidationContext,
    Verdict,
    available_scorers,
    available_validators,
    get_scorer,
    get_validator,
    metric_info,
    metrics,
    scorer,
    validator,
)
from predwatch.scoring.validators import (
    BuiltValidator,
    ValidationOutcome,
    build_validators,
    run_validators,
)

__all__ = [
    "DEFAULT_METRICS",
    "BuiltValidator",
    "Check",
    "Metric",
    "OptionError",
    "Scorer",
    "ValidationContext",
    "ValidationOutcome",
    "Verdict",
    "available_scorers",
    "available_validators",
    "build_validators",
    "get_scorer",
    "get_validator",
    "metric_info",
    "metrics",
    "resolve_scorers",
    "run_validators",
    "score_prediction",
    "scorer",
    "validator",
]
