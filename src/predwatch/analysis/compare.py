"""What changed, what regressed, what is worst: framework-free functions over a ``Store``.

The server's JSON API, its HTML pages and the CLI all call these, so every view of a comparison
agrees. Answers are paired across evaluation points by prompt and occurrence: the k-th answer
(sample number 0, in ``sample_index`` order) to a prompt at ``a`` with the k-th at ``b``, so a
prompt drawn twice pairs twice. A step recorded again (a resumed run) is read at its newest
attempt, the one its card describes.

A paired prompt **regressed** from ``a`` to ``b`` when any of these holds:
  - validation flipped from pass to fail (``pass_to_fail``);
  - exact match went from 1 to 0;
  - the character error rate rose by more than ``tolerance`` (absolute, default 0.05);
  - generation newly failed (``error`` set in ``b``, not in ``a``).
It **improved** on the mirror conditions (fail to pass, 0 to 1, CER fell by more than
``tolerance``, generation error gone). A prompt can do both at once (e.g. a lower CER but a new
validation failure); ``reasons`` says which.

Whether the change as a whole is beyond chance (exact McNemar tests on the flips, bootstrap
intervals on the mean score deltas) is in ``Comparison.significance`` (see ``significance``).
With several answers per prompt (``num_samples`` > 1) the items still pair the first answers,
but the significance compares each prompt's pass rate over all its answers (a sign-flip
permutation test; ``Significance.test`` says which test ran).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, Field

from predwatch.analysis.significance import DEFAULT_ALPHA, Significance, assess_pairs
from predwatch.errors import NotFound
from predwatch.records import CORE_METRICS, EvalPoint, Prediction
from predwatch.storage.base import Store

Flip = Literal["pass_to_fail", "fail_to_pass"]
PairStatus = Literal["paired", "added", "removed"]
DEFAULT_TOLERANCE = 0.05


class PointRef(BaseModel):
    """One side of a comparison: an evaluation point of a run."""

    run_id: str
    run_name: str | None = None
    step: int
    epoch: float | None = None
    sample_count: int = 0


class PromptPair(BaseModel):
    """One prompt's answers at ``a`` and ``b``; ``deltas`` are ``b - a`` per score."""

    prompt_id: str
    occurrence: int = 0  # 0: the prompt's first answer at the point; k: its k-th repeat
    prompt: str
    ground_truth: str | None = None
    a: Prediction | None = None
    b: Prediction | None = None
    status: PairStatus
    changed: bool = False  # the answer text differs
    flip: Flip | None = None  # validation verdict flipped
    deltas: dict[str, float] = Field(default_factory=dict)
    regressed: bool = False
    improved: bool = False
    reasons: list[str] = Field(default_factory=list)  # e.g. "char_error_rate +0.31"


class ComparisonCounts(BaseModel):
    paired: int = 0
    added: int = 0  # prompts only in b
    removed: int = 0  # prompts only in a
    changed: int = 0
    regressed: int = 0
    improved: int = 0
    pass_to_fail: int = 0
    fail_to_pass: int = 0


class Comparison(BaseModel):
    """Two evaluation points compared prompt by prompt (regressed first, then largest drop)."""

    a: PointRef
    b: PointRef
    tolerance: float
    counts: ComparisonCounts
    mean_deltas: dict[str, float | None]  # mean of ``b - a`` over paired prompts, per score
    items: list[PromptPair]
    # Over every paired prompt (also when ``items`` holds only the regressed): None when not
    # asked for (``alpha=None``).
    significance: Significance | None = None


class RegressionReport(BaseModel):
    """The verdict of ``predwatch check``.

    Without ``alpha``: ``passed`` when ``regressed <= max_regressions`` (the count gate). With
    ``alpha``: ``passed`` unless the comparison's significance finds a significant regression
    at that level (``max_regressions`` is then not used).
    """

    comparison: Comparison
    regressed: int
    max_regressions: int
    alpha: float | None = None
    significant_regression: bool | None = None  # None: the count gate decided
    passed: bool


# --- comparisons ------------------------------------------------------------------------------
def compare_points(
    store: Store,
    run_id: str,
    step_a: int,
    step_b: int,
    *,
    regressed_only: bool = False,
    tolerance: float = DEFAULT_TOLERANCE,
    owner: str | None = None,
    alpha: float | None = DEFAULT_ALPHA,
) -> Comparison:
    """Compare two evaluation points of one run (``a`` = before, ``b`` = after)."""
    return compare_runs(store, run_id, run_id, step_a=step_a, step_b=step_b,
                        regressed_only=regressed_only, tolerance=tolerance, owner=owner,
                        alpha=alpha)


def compare_runs(
    store: Store,
    run_a: str,
    run_b: str,
    *,
    step_a: int | None = None,
    step_b: int | None = None,
    regressed_only: bool = False,
    tolerance: float = DEFAULT_TOLERANCE,
    owner: str | None = None,
    alpha: float | None = DEFAULT_ALPHA,
) -> Comparison:
    """Compare an evaluation point of ``run_a`` with one of ``run_b``.

    Args:
        step_a, step_b: the points to compare; default each run's last evaluation point.
        regressed_only: keep only regressed prompts in ``items`` (counts cover all prompts).
        tolerance: how much the character error rate must move to count (absolute).
        owner: when given, both runs must belong to it (``NotFound`` otherwise).
        alpha: the level of ``significance`` (computed over all paired prompts); None: skip it.
    """
    ref_a = _point_ref(store, run_a, step_a, owner)
    ref_b = _point_ref(store, run_b, step_b, owner)
    preds_a = store.point_predictions(run_a, ref_a.step)
    preds_b = store.point_predictions(run_b, ref_b.step)
    pairs = _pair(preds_a, preds_b)
    counts = ComparisonCounts()
    sums: dict[str, list[float]] = {}
    every = []
    for (_, occurrence), a, b in pairs:
        item = _compare_pair(a, b, tolerance)
        item.occurrence = occurrence
        _count(counts, item)
        for name, d in item.deltas.items():
            sums.setdefault(name, []).append(d)
        every.append(item)
    significance = None
    if alpha is not None:
        significance = assess_pairs(every, alpha=alpha, samples=sampled_pairs(preds_a, preds_b))
    items = [item for item in every if item.regressed or not regressed_only]
    items.sort(key=_severity)
    mean_deltas: dict[str, float | None] = {name: None for name in CORE_METRICS}
    mean_deltas.update({name: sum(v) / len(v) for name, v in sums.items()})
    return Comparison(a=ref_a, b=ref_b, tolerance=tolerance, counts=counts,
                      mean_deltas=mean_deltas, items=items, significance=significance)


def count_regressions(comparison: Comparison) -> int:
    """The number of regressed prompts (the gate of ``predwatch check``)."""
    return comparison.counts.regressed


def regression_report(
    store: Store,
    run_id: str,
    *,
    baseline: str,
    step: int | None = None,
    baseline_step: int | None = None,
    max_regressions: int = 0,
    tolerance: float = DEFAULT_TOLERANCE,
    alpha: float | None = None,
) -> RegressionReport:
    """``predwatch check RUN --baseline RUN_B``: compare the baseline (``a``) with the run
    (``b``). Without ``alpha``, pass when at most ``max_regressions`` prompts regressed; with
    it, pass unless the regression is significant at ``alpha`` (``--alpha``)."""
    comparison = compare_runs(store, baseline, run_id, step_a=baseline_step, step_b=step,
                              regressed_only=True, tolerance=tolerance,
                              alpha=DEFAULT_ALPHA if alpha is None else alpha)
    regressed = count_regressions(comparison)
    if alpha is None:
        return RegressionReport(comparison=comparison, regressed=regressed,
                                max_regressions=max_regressions,
                                passed=regressed <= max_regressions)
    significant = bool(comparison.significance
                       and comparison.significance.significant_regression)
    return RegressionReport(comparison=comparison, regressed=regressed,
                            max_regressions=max_regressions, alpha=alpha,
                            significant_regression=significant, passed=not significant)


def _point_ref(store: Store, run_id: str, step: int | None, owner: str | None) -> PointRef:
    run = store.get_run(run_id, owner=owner)
    point = find_point(store, run_id, step)
    return PointRef(run_id=run_id, run_name=run.name, step=point.step, epoch=point.epoch,
                    sample_count=point.sample_count)


def find_point(store: Store, run_id: str, step: int | None) -> EvalPoint:
    """The point at ``step`` (default: the run's last); ``NotFound`` when there is none."""
    point = store.eval_point(run_id, step)
    if point is None:
        where = "evaluation points" if step is None else f"evaluation point at step {step}"
        raise NotFound(f"run {run_id!r} has no {where}")
    return point


Key = tuple[str, int]  # (prompt_id, occurrence)


def newest_attempts(preds: Iterable[Prediction]) -> list[Prediction]:
    """The rows of each step's newest attempt (in their order): what the point's card shows."""
    rows = list(preds)
    newest: dict[int, int] = {}
    for p in rows:
        newest[p.step] = max(newest.get(p.step, 0), p.attempt)
    return [p for p in rows if p.attempt == newest[p.step]]


def keyed_answers(preds: Iterable[Prediction]) -> dict[Key, Prediction]:
    """The first-drawn answers (sample number 0) of one point's newest attempt, by (prompt_id,
    occurrence): the k-th answer to a prompt in ``sample_index`` order is occurrence k."""
    seen: dict[str, int] = {}
    keyed: dict[Key, Prediction] = {}
    answers = [p for p in newest_attempts(preds) if p.sample_number == 0]
    for p in sorted(answers, key=lambda p: p.sample_index):
        k = seen.get(p.prompt_id, 0)
        seen[p.prompt_id] = k + 1
        keyed[(p.prompt_id, k)] = p
    return keyed


def answer_groups(preds: Iterable[Prediction]) -> dict[Key, list[Prediction]]:
    """Every answer (all sample numbers) of one point's newest attempt, grouped by (prompt_id,
    occurrence) as ``keyed_answers`` keys the first ones."""
    by_index: dict[int, list[Prediction]] = {}
    for p in newest_attempts(preds):
        by_index.setdefault(p.sample_index, []).append(p)
    seen: dict[str, int] = {}
    groups: dict[Key, list[Prediction]] = {}
    for index in sorted(by_index):
        rows = sorted(by_index[index], key=lambda p: p.sample_number)
        k = seen.get(rows[0].prompt_id, 0)
        seen[rows[0].prompt_id] = k + 1
        groups[(rows[0].prompt_id, k)] = rows
    return groups


def sampled_pairs(
    a: Sequence[Prediction], b: Sequence[Prediction]
) -> dict[str, tuple[list[Prediction], list[Prediction]]] | None:
    """With several answers per prompt at either point (a sample number above 0): each paired
    prompt's answers at ``a`` and at ``b``, keyed ``PROMPT_ID#OCCURRENCE``; else None."""
    if not any(p.sample_number > 0 for p in (*a, *b)):
        return None
    groups_a, groups_b = answer_groups(a), answer_groups(b)
    return {f"{key[0]}#{key[1]}": (rows, groups_b[key])
            for key, rows in groups_a.items() if key in groups_b}


def _pair(
    a: Sequence[Prediction], b: Sequence[Prediction]
) -> list[tuple[Key, Prediction | None, Prediction | None]]:
    """Answers paired by (prompt_id, occurrence), in a's order then b's new ones."""
    by_a, by_b = keyed_answers(a), keyed_answers(b)
    pairs: list[tuple[Key, Prediction | None, Prediction | None]] = [
        (key, p, by_b.get(key)) for key, p in by_a.items()
    ]
    pairs += [(key, None, p) for key, p in by_b.items() if key not in by_a]
    return pairs


def flip_between(a: Prediction, b: Prediction) -> Flip | None:
    if a.validation_pass is True and b.validation_pass is False:
        return "pass_to_fail"
    if a.validation_pass is False and b.validation_pass is True:
        return "fail_to_pass"
    return None


def _deltas(a: Prediction, b: Prediction) -> dict[str, float]:
    deltas = {}
    for name in CORE_METRICS:
        va, vb = getattr(a, name), getattr(b, name)
        if va is not None and vb is not None:
            deltas[name] = vb - va
    for name, vb in b.metrics.items():
        va = a.metrics.get(name)
        if va is not None and vb is not None:
            deltas[name] = vb - va
    return deltas


def _compare_pair(a: Prediction | None, b: Prediction | None, tolerance: float) -> PromptPair:
    if a is None or b is None:
        only = a if a is not None else b
        assert only is not None
        return PromptPair(prompt_id=only.prompt_id, prompt=only.prompt,
                          ground_truth=only.ground_truth, a=a, b=b,
                          status="added" if a is None else "removed")
    flip = flip_between(a, b)
    deltas = _deltas(a, b)
    worse: list[str] = []
    better: list[str] = []
    if flip == "pass_to_fail":
        worse.append("validation pass -> fail")
    elif flip == "fail_to_pass":
        better.append("validation fail -> pass")
    if a.exact_match is not None and b.exact_match is not None:
        if a.exact_match >= 0.5 > b.exact_match:
            worse.append("exact match 1 -> 0")
        elif b.exact_match >= 0.5 > a.exact_match:
            better.append("exact match 0 -> 1")
    cer = deltas.get("char_error_rate")
    if cer is not None and cer > tolerance:
        worse.append(f"char_error_rate +{cer:.2f}")
    elif cer is not None and cer < -tolerance:
        better.append(f"char_error_rate {cer:.2f}")
    if a.error is None and b.error is not None:
        worse.append("generation failed")
    elif a.error is not None and b.error is None:
        better.append("generation recovered")
    return PromptPair(prompt_id=b.prompt_id, prompt=b.prompt, ground_truth=b.ground_truth, a=a,
                      b=b, status="paired", changed=a.prediction != b.prediction, flip=flip,
                      deltas=deltas, regressed=bool(worse), improved=bool(better),
                      reasons=worse + better)


def _count(counts: ComparisonCounts, item: PromptPair) -> None:
    if item.status != "paired":
        setattr(counts, item.status, getattr(counts, item.status) + 1)
        return
    counts.paired += 1
    counts.changed += item.changed
    counts.regressed += item.regressed
    counts.improved += item.improved
    counts.pass_to_fail += item.flip == "pass_to_fail"
    counts.fail_to_pass += item.flip == "fail_to_pass"


def _severity(item: PromptPair) -> tuple[bool, bool, float]:
    """Regressed first, then by the largest rise in character error rate (unknown last)."""
    drop = item.deltas.get("char_error_rate")
    return (not item.regressed, drop is None, -(drop or 0.0))
