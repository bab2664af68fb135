"""Comparisons, worst samples and timelines on hand-built data (a real SQLite store)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from predwatch.analysis import (
    compare_points,
    compare_runs,
    count_regressions,
    prompt_timeline,
    regression_report,
    worst_samples,
)
from predwatch.errors import NotFound, PayloadError
from predwatch.records import EvalPoint, Prediction, Run, ValidatorResult, prompt_identity
from predwatch.storage import SQLStore, open_store

RUN = "run-a"


@pytest.fixture
def store(sqlite_url: str) -> Iterator[SQLStore]:
    s = open_store(sqlite_url)
    yield s
    s.close()


def pred(step: int, name: str, run: str = RUN, **fields: Any) -> Prediction:
    return Prediction(run_id=run, step=step, prompt_id=prompt_identity(name), prompt=name,
                      ground_truth=f"{name} truth", **fields)


def point(store: SQLStore, step: int, preds: list[Prediction], run: str = RUN) -> None:
    store.write_eval_point(EvalPoint(run_id=run, step=step, epoch=step / 10), preds)


OK = {"validation_pass": True,
      "validation_results": [ValidatorResult(validator="json_schema", passed=True)]}
BAD = {"validation_pass": False,
       "validation_results": [ValidatorResult(validator="json_schema", passed=False)]}


@pytest.fixture
def planted(store: SQLStore) -> SQLStore:
    """Step 10 -> 20 with one planted case per rule."""
    point(store, 10, [
        pred(10, "flips", prediction="{}", char_error_rate=0.1, **OK),
        pred(10, "exact", prediction="4", exact_match=1.0, char_error_rate=0.0),
        pred(10, "worse", prediction="aaaa", char_error_rate=0.2),
        pred(10, "noise", prediction="bbbb", char_error_rate=0.2),
        pred(10, "better", prediction="cccc", char_error_rate=0.9, **BAD),
        pred(10, "crash", prediction="dddd", char_error_rate=0.3),
        pred(10, "gone", prediction="eeee"),
    ])
    point(store, 20, [
        pred(20, "flips", prediction="{", char_error_rate=0.1, **BAD),
        pred(20, "exact", prediction="5", exact_match=0.0, char_error_rate=0.0),
        pred(20, "worse", prediction="aaab", char_error_rate=0.5),
        pred(20, "noise", prediction="bbbb", char_error_rate=0.24),
        pred(20, "better", prediction="ccc", char_error_rate=0.1, **OK),
        pred(20, "crash", prediction="", char_error_rate=None, error="OOM"),
        pred(20, "new", prediction="ffff", char_error_rate=0.5),
    ])
    return store


def test_compare_points_finds_the_planted_regressions(planted: SQLStore) -> None:
    cmp = compare_points(planted, RUN, 10, 20)
    by = {item.prompt: item for item in cmp.items}
    assert (cmp.a.step, cmp.b.step, cmp.a.epoch, cmp.b.sample_count) == (10, 20, 1.0, 7)
    assert cmp.counts.model_dump() == {
        "paired": 6, "added": 1, "removed": 1, "changed": 5, "regressed": 4, "improved": 1,
        "pass_to_fail": 1, "fail_to_pass": 1,
    }
    assert {p for p, i in by.items() if i.regressed} == {"flips", "exact", "worse", "crash"}
    assert by["flips"].flip == "pass_to_fail" and by["better"].flip == "fail_to_pass"
    assert not by["noise"].regressed and not by["noise"].changed  # within tolerance, same text
    assert by["better"].improved and not by["better"].regressed
    assert by["worse"].deltas["char_error_rate"] == pytest.approx(0.3)
    assert (by["gone"].status, by["gone"].b) == ("removed", None)
    assert (by["new"].status, by["new"].a) == ("added", None)
    assert by["crash"].reasons == ["generation failed"]
    # Regressed first, the largest rise in CER first among them.
    assert [i.prompt for i in cmp.items][:4] == ["worse", "flips", "exact", "crash"]
    assert cmp.mean_deltas["char_error_rate"] == pytest.approx((0 + 0 + 0.3 + 0.04 - 0.8) / 5)
    assert cmp.mean_deltas["word_overlap"] is None


def test_tolerance_and_regressed_only(planted: SQLStore) -> None:
    strict = compare_points(planted, RUN, 10, 20, tolerance=0.01, regressed_only=True)
    assert {i.prompt for i in strict.items} == {"flips", "exact", "worse", "crash", "noise"}
    assert strict.counts.paired == 6  # counts still cover every prompt


def test_compare_runs_defaults_to_each_runs_last_point(planted: SQLStore) -> None:
    planted.create_run(Run(id="run-b", owner="ann"))
    point(planted, 5, [pred(5, "exact", run="run-b", exact_match=1.0)], run="run-b")
    point(planted, 7, [pred(7, "exact", run="run-b", exact_match=0.0)], run="run-b")
    cmp = compare_runs(planted, "run-b", RUN)
    assert (cmp.a.run_id, cmp.a.step, cmp.b.run_id, cmp.b.step) == ("run-b", 7, RUN, 20)
    assert cmp.counts.paired == 1 and cmp.counts.added == 6
    assert compare_runs(planted, "run-b", RUN, step_a=5).counts.regressed == 1
    with pytest.raises(NotFound):
        compare_runs(planted, "run-b", RUN, owner="ann")  # run-a is not ann's
    with pytest.raises(NotFound):
        compare_runs(planted, "run-b", RUN, step_b=15)


def test_regression_report_gates_on_the_count(planted: SQLStore) -> None:
    point(planted, 30, [pred(30, "exact", exact_match=0.0), pred(30, "flips", **OK)])
    report = regression_report(planted, RUN, baseline=RUN, baseline_step=10, step=20,
                               max_regressions=3)
    assert (report.regressed, report.passed) == (4, False)
    assert all(i.regressed for i in report.comparison.items)
    assert count_regressions(report.comparison) == 4
    latest = regression_report(planted, RUN, baseline=RUN, baseline_step=10)  # vs step 30
    assert (latest.comparison.b.step, latest.regressed, latest.passed) == (30, 1, False)
    assert regression_report(planted, RUN, baseline=RUN, baseline_step=20).passed is True


def test_worst_samples_lenses(planted: SQLStore) -> None:
    lowest = worst_samples(planted, RUN, lens="lowest_score")
    # a perfect answer ("exact": CER 0, exact match) is nobody's worst: left out
    assert [w.prediction.prompt for w in lowest] == ["worse", "new", "noise", "flips", "better"]
    drops = worst_samples(planted, RUN, lens="largest_drop")
    assert [(w.prediction.prompt, round(w.delta or 0, 2)) for w in drops] == [
        ("worse", 0.3), ("noise", 0.04)]
    assert drops[0].previous is not None and drops[0].previous_score == 0.2
    failures = worst_samples(planted, RUN, lens="new_validation_failures")
    assert [(w.prediction.prompt, w.validators) for w in failures] == [("flips", ["json_schema"])]
    errors = worst_samples(planted, RUN, lens="errors")
    assert [(w.prediction.prompt, w.reason) for w in errors] == [("crash", "OOM")]
    assert worst_samples(planted, RUN, lens="truncated") == []
    assert worst_samples(planted, RUN, lens="largest_drop", step=10) == []  # no earlier point
    assert len(worst_samples(planted, RUN, lens="lowest_score", step=10, limit=2)) == 2
    with pytest.raises(PayloadError):
        worst_samples(planted, RUN, lens="vibes")


def test_truncated_lens(store: SQLStore) -> None:
    point(store, 10, [pred(10, "long", finish_reason="length", max_new_tokens=32),
                      pred(10, "short", finish_reason="eos")])
    [w] = worst_samples(store, RUN, lens="truncated")
    assert w.prediction.prompt == "long" and "32" in w.reason


def test_prompt_timeline(store: SQLStore) -> None:
    answers = [("a", 0.5, True), ("a", 0.5, False), ("b", 0.2, False), ("c", 0.2, True)]
    for step, (text, cer, passed) in zip((10, 20, 30, 40), answers, strict=True):
        point(store, step, [pred(step, "q", prediction=text, char_error_rate=cer,
                                 validation_pass=passed)])
    tl = prompt_timeline(store, RUN, prompt_identity("q"))
    assert (tl.prompt, tl.ground_truth, tl.best_step) == ("q", "q truth", 30)  # tie: earliest
    assert [e.step for e in tl.entries] == [10, 20, 30, 40]
    assert [e.changed for e in tl.entries] == [False, False, True, True]
    assert [e.flip for e in tl.entries] == [None, "pass_to_fail", None, "fail_to_pass"]
    assert [e.is_best for e in tl.entries] == [False, False, True, False]
    with pytest.raises(NotFound):
        prompt_timeline(store, RUN, "no-such-prompt")
