"""Several answers per prompt: which answers pass, pass@k levels and values, and how the
registry shows pass@k and disagreement."""

from __future__ import annotations

from typing import Any

import pytest

from predwatch.records import Prediction, TrendPoint
from predwatch.scoring import metric_info, metrics
from predwatch.scoring.samples import answer_passed, pass_levels, prompt_metrics


def row(text: str = "x", **fields: Any) -> Prediction:
    return Prediction(run_id="r", step=1, prompt_id="p", prediction=text, **fields)


def test_pass_at_k_is_reported_at_one_powers_of_two_and_n() -> None:
    assert pass_levels(1) == [1]
    assert pass_levels(4) == [1, 2, 4]
    assert pass_levels(5) == [1, 2, 4, 5]
    assert pass_levels(12) == [1, 2, 4, 8, 12]


def test_an_answer_passes_its_validators_and_its_expected_answer() -> None:
    assert answer_passed(row(validation_pass=True)) is True
    assert answer_passed(row(validation_pass=False)) is False
    assert answer_passed(row()) is None  # no validators, no expected answer: no verdict
    # the expected answer is matched exactly, even when exact_match was not among the metrics
    assert answer_passed(row(" Rain", ground_truth="rain")) is True
    assert answer_passed(row("snow", ground_truth="rain", validation_pass=True)) is False
    assert answer_passed(row("rain", ground_truth="rain", validation_pass=False)) is False
    # a failed generation is never validated; with validators configured it failed
    assert answer_passed(row("", error="boom"), validated=True) is False
    assert answer_passed(row("", error="boom")) is None


def test_a_prompts_metrics_by_hand() -> None:
    answers = [row("a", validation_pass=True), row("a", validation_pass=False),
               row("b", validation_pass=False), row("c", validation_pass=True),
               row("a", validation_pass=False)]
    values = prompt_metrics(answers)
    # n = 5, c = 2: pass@k = 1 - C(3, k) / C(5, k)
    assert values["pass@1"] == pytest.approx(2 / 5)
    assert values["pass@2"] == pytest.approx(1 - 3 / 10)
    assert values["pass@4"] == pytest.approx(1.0)  # C(3, 4) = 0
    assert values["pass@5"] == 1.0
    # pairs: 10; equal pairs: the three "a" answers make 3
    assert values["disagreement"] == pytest.approx(1 - 3 / 10)
    assert set(values) == {"pass@1", "pass@2", "pass@4", "pass@5", "disagreement"}
    unjudged = prompt_metrics([row("a"), row("a")])
    assert unjudged["pass@1"] is None and unjudged["disagreement"] == 0.0


def test_pass_at_k_and_disagreement_are_shown_as_percentages() -> None:
    names = [m.name for m in metrics()]
    assert names[-2:] == ["pass@1", "disagreement"]
    eight = metric_info("pass@8")
    assert (eight.label, eight.format, eight.higher_is_better, eight.range) == (
        "pass@8", "pct", True, (0.0, 1.0))
    assert metric_info("disagreement").higher_is_better is None
    assert metric_info("pass@x").format == "num"  # not a pass@k name


def test_a_run_with_several_answers_shows_each_pass_at_k_after_pass_at_1() -> None:
    pytest.importorskip("jinja2")
    from predwatch.analysis.overview import shown_metrics
    from predwatch.server.pages.ui import axis_title

    trend = TrendPoint(epoch=None, step=1, sample_count=8, averages={
        "pass@1": 0.5, "pass@4": 0.9, "pass@2": 0.7, "disagreement": 0.4, "exact_match": 0.1})
    shown = [m.name for m in shown_metrics([trend])]
    start = shown.index("pass@1")
    assert shown[start:start + 3] == ["pass@1", "pass@2", "pass@4"]
    assert "disagreement" in shown
    assert axis_title(metric_info("pass@4")) == "Pass@4 (%)"
    assert "pass@1" not in [m.name for m in shown_metrics([TrendPoint(
        epoch=None, step=1, sample_count=1, averages={"exact_match": 1.0})])]
