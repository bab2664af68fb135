"""The original shapes made from records: integer epochs, exact per-epoch averages, error
bodies (pure functions of ``predwatch.server.compat``)."""

from __future__ import annotations

import json

import pytest

from predwatch.records import Prediction, Run
from predwatch.server.compat import (
    epoch_trends,
    humanize_error,
    int_epoch,
    original_epochs,
    original_row,
    overall_improvement,
)
from predwatch.storage.base import EpochSums


def test_an_epoch_is_the_epoch_its_step_is_in() -> None:
    assert [int_epoch(e) for e in (None, 0.0, 0.99, 1.0, 1.5, 2.999, float("nan"))] == [
        0, 0, 0, 1, 1, 2, 0]


def test_a_row_has_a_string_id_the_owner_and_an_integer_epoch() -> None:
    p = Prediction(run_id="r", step=3, epoch=1.75, prompt_id="p", prompt="q")
    row = original_row(41, p, Run(id="r", owner="alice"))
    assert (row["id"], row["job_id"], row["user_id"], row["epoch"], row["epoch_exact"]) == (
        "41", "r", "alice", 1, 1.75)
    assert json.dumps(row)  # plain JSON values only


def test_epochs_merge_the_exact_epochs_of_one_integer_epoch() -> None:
    merged = original_epochs([
        {"epoch": 0.5, "prediction_count": 4, "latest_step": 10},
        {"epoch": 1.0, "prediction_count": 4, "latest_step": 20},
        {"epoch": 1.5, "prediction_count": 3, "latest_step": 30},
        {"epoch": None, "prediction_count": 2, "latest_step": 2}])
    assert merged == [{"epoch": 0, "prediction_count": 6, "latest_step": 10},
                      {"epoch": 1, "prediction_count": 7, "latest_step": 30}]


def test_trend_averages_are_exact_across_exact_epochs_with_nulls() -> None:
    # 1.0: CERs 0.2, 0.4 (and one null); 1.5: CER 0.9 (and two nulls)
    a = EpochSums(epoch=1.0, rows=3, last_step=10, sums={"char_error_rate": (0.6, 2)},
                  min_cer=0.2, max_cer=0.4, validated=3, passed=2, failed=1)
    b = EpochSums(epoch=1.5, rows=3, last_step=20, sums={"char_error_rate": (0.9, 1)},
                  min_cer=0.9, max_cer=0.9, validated=1, passed=0)
    (trend,) = epoch_trends([a, b])
    assert (trend.epoch, trend.step, trend.sample_count, trend.failed_count) == (1, 20, 6, 1)
    assert trend.avg_char_error_rate == pytest.approx(1.5 / 3)  # not the mean of 0.3 and 0.9
    assert (trend.min_char_error_rate, trend.max_char_error_rate) == (0.2, 0.9)
    assert trend.validation_pass_rate == pytest.approx(2 / 4)
    assert trend.avg_exact_match is None  # no value at all: null, not 0


def test_overall_improvement_needs_two_entries_and_a_positive_first_cer() -> None:
    assert overall_improvement([0.5, 0.25]) == pytest.approx(50.0)
    assert overall_improvement([0.2, 0.3]) == pytest.approx(-50.0)
    for cers in ([], [0.5], [0.0, 0.5], [None, 0.5], [0.5, None]):
        assert overall_improvement(cers) is None, cers


def test_an_error_body_gets_a_sentence_and_keeps_its_keys() -> None:
    raw = b'{"error":"unauthorized","message":"unknown or revoked run token",' \
          b'"detail":{"field":"Authorization"}}'
    body = json.loads(humanize_error(401, raw))
    assert body == {"error": "Unauthorized: unknown or revoked run token",
                    "code": "unauthorized", "message": "unknown or revoked run token",
                    "detail": {"field": "Authorization"}}
    assert humanize_error(500, b"not json") == b"not json"
