"""The store's queries for the original routes: integer-epoch filters over fractional epochs,
row ids equal to the live stream's sequence numbers, and per-epoch sums (both databases)."""

from __future__ import annotations

from typing import Any

import pytest

from predwatch.records import EvalPoint, Prediction
from predwatch.server.compat import epoch_trends


def point(store: Any, step: int, epoch: float | None, cers: list[float | None]) -> None:
    rows = [Prediction(run_id="r", step=step, epoch=epoch, sample_index=i, prompt_id=f"p{i}",
                       prompt=f"q{i}", char_error_rate=cer, validation_pass=cer == 0.0)
            for i, cer in enumerate(cers)]
    store.write_eval_point(EvalPoint(run_id="r", step=step, epoch=epoch), rows)


def test_an_integer_epoch_selects_every_point_inside_it(store: Any) -> None:
    point(store, 5, None, [0.5])
    point(store, 10, 0.5, [0.4, None])
    point(store, 20, 1.0, [0.3, 0.3])
    point(store, 30, 1.5, [0.0, 0.6])
    point(store, 40, 2.0, [0.1])
    one = store.original_predictions("r", epoch=1)
    assert one.total == 4
    assert [(p.step, p.sample_index) for _, p in one.items] == [(20, 0), (20, 1), (30, 0),
                                                                (30, 1)]
    assert store.original_predictions("r", epoch=0).total == 3  # no epoch counts as 0
    assert store.original_predictions("r", epoch=1, step=30).total == 2
    assert store.original_predictions("r", epoch=9).items == []
    everything = store.original_predictions("r", limit=100)
    assert [seq for seq, _ in everything.items] == [
        seq for seq, _ in store.predictions_after("r", 0)]  # the stream's ids
    second = store.original_predictions("r", limit=3, cursor=store.original_predictions(
        "r", limit=3).next_cursor)
    assert [seq for seq, _ in second.items] == [seq for seq, _ in everything.items][3:6]


def test_epoch_sums_give_exact_means_per_integer_epoch(store: Any) -> None:
    point(store, 20, 1.0, [0.3, 0.3, None])
    point(store, 30, 1.5, [0.0])
    point(store, 40, 2.25, [None])
    sums = store.epoch_sums("r")
    assert [s.epoch for s in sums] == [1.0, 1.5, 2.25]
    one, two = epoch_trends(sums)
    assert (one.epoch, one.step, one.sample_count) == (1, 30, 4)
    assert one.avg_char_error_rate == pytest.approx(0.2)  # (0.3 + 0.3 + 0.0) / 3
    assert one.validation_pass_rate == 0.25 and one.min_char_error_rate == 0.0
    assert (two.epoch, two.avg_char_error_rate, two.max_char_error_rate) == (2, None, None)
