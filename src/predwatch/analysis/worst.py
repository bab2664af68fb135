"""The worst answers at an evaluation point, through one lens (lowest score, largest drop, new
validation failures, truncated, errors)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from predwatch.analysis.compare import Key, find_point, keyed_answers
from predwatch.errors import PayloadError
from predwatch.records import Prediction
from predwatch.storage.base import Store

Lens = Literal["lowest_score", "largest_drop", "new_validation_failures", "truncated", "errors"]
LENSES: tuple[str, ...] = (
    "lowest_score", "largest_drop", "new_validation_failures", "truncated", "errors"
)


class WorstSample(BaseModel):
    """One answer picked by a lens of ``worst_samples``, with why."""

    lens: Lens
    prediction: Prediction
    score: float | None = None  # the lens's score now (CER for score lenses)
    previous: Prediction | None = None  # the same prompt at the previous evaluation point
    previous_score: float | None = None
    delta: float | None = None  # score - previous_score
    validators: list[str] = Field(default_factory=list)  # newly failing validators
    reason: str = ""


# --- worst samples ----------------------------------------------------------------------------
def worst_samples(
    store: Store,
    run_id: str,
    *,
    lens: str,
    step: int | None = None,
    limit: int = 20,
    owner: str | None = None,
) -> list[WorstSample]:
    """The worst answers at an evaluation point (default: the last) through one lens.

    Lenses: ``lowest_score`` (imperfect answers only: highest CER, then lowest exact match),
    ``largest_drop`` (largest CER rise since the previous point), ``new_validation_failures``
    (validators failing now that passed at the previous point), ``truncated``
    (``finish_reason == "length"``), ``errors`` (generation failed).
    """
    if lens not in LENSES:
        raise PayloadError(f"unknown lens {lens!r}; one of {', '.join(LENSES)}",
                           detail={"field": "lens"})
    store.get_run(run_id, owner=owner)
    point = find_point(store, run_id, step)
    current = keyed_answers(store.point_predictions(run_id, point.step))
    now = list(current.values())
    if lens == "truncated":
        return [WorstSample(lens="truncated", prediction=p, score=p.char_error_rate,
                            reason=f"hit the token limit ({p.max_new_tokens or '?'} new tokens)")
                for p in now if p.finish_reason == "length"][:limit]
    if lens == "errors":
        return [WorstSample(lens="errors", prediction=p, reason=p.error or "")
                for p in now if p.error is not None][:limit]
    if lens == "lowest_score":
        # Only imperfect answers: a perfect one (exact match, or CER 0) is nobody's worst.
        scored = [p for p in now if (p.char_error_rate is not None or p.exact_match is not None)
                  and not _perfect(p)]
        scored.sort(key=lambda p: (-(p.char_error_rate or 0.0), p.exact_match or 0.0))
        return [WorstSample(lens="lowest_score", prediction=p, score=p.char_error_rate,
                            reason=_score_text(p)) for p in scored[:limit]]
    previous = store.eval_point(run_id, before=point.step)
    if previous is None:
        return []
    before = keyed_answers(store.point_predictions(run_id, previous.step))
    if lens == "largest_drop":
        return _largest_drops(current, before, limit)
    return _new_validation_failures(current, before, limit)


def _perfect(p: Prediction) -> bool:
    """An exact match, or a character error rate of 0."""
    return (p.exact_match is not None and p.exact_match >= 0.5) or p.char_error_rate == 0


def _score_text(p: Prediction) -> str:
    parts = []
    if p.char_error_rate is not None:
        parts.append(f"char error rate {p.char_error_rate:.2f}")
    if p.exact_match is not None:
        parts.append("exact match" if p.exact_match >= 0.5 else "not an exact match")
    return ", ".join(parts)


def _largest_drops(
    now: dict[Key, Prediction], before: dict[Key, Prediction], limit: int
) -> list[WorstSample]:
    found = []
    for key, p in now.items():
        prev = before.get(key)
        if prev is None or p.char_error_rate is None or prev.char_error_rate is None:
            continue
        delta = p.char_error_rate - prev.char_error_rate
        if delta > 0:
            found.append(WorstSample(
                lens="largest_drop", prediction=p, score=p.char_error_rate, previous=prev,
                previous_score=prev.char_error_rate, delta=delta,
                reason=f"char error rate {prev.char_error_rate:.2f} -> {p.char_error_rate:.2f}",
            ))
    found.sort(key=lambda w: -(w.delta or 0.0))
    return found[:limit]


def _failed_validators(p: Prediction) -> set[str]:
    failed = {r.name or r.validator for r in p.validation_results if not r.passed or r.error}
    return failed | {e.validator for e in p.validation_errors}


def _new_validation_failures(
    now: dict[Key, Prediction], before: dict[Key, Prediction], limit: int
) -> list[WorstSample]:
    found = []
    for key, p in now.items():
        prev = before.get(key)
        if prev is None or p.validation_pass is not False:
            continue
        newly = sorted(_failed_validators(p) - _failed_validators(prev))
        if prev.validation_pass is True or newly:
            found.append(WorstSample(
                lens="new_validation_failures", prediction=p, previous=prev, validators=newly,
                reason="newly failing: " + (", ".join(newly) or "validation"),
            ))
    return found[:limit]
