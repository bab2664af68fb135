"""Comparisons, worst samples and timelines stay right when a prompt repeats at a point and when
a step is recorded again (a resumed run): both databases."""

from __future__ import annotations

from typing import Any

from predwatch.analysis import compare_points, prompt_timeline, worst_samples
from predwatch.records import EvalPoint, Prediction, prompt_identity
from predwatch.storage import Store

RUN = "run-r"


def pred(step: int, index: int, name: str, text: str, cer: float, **fields: Any) -> Prediction:
    return Prediction(run_id=RUN, step=step, sample_index=index, prompt_id=prompt_identity(name),
                      prompt=name, ground_truth="truth", prediction=text, char_error_rate=cer,
                      **fields)


def point(store: Store, step: int, rows: list[Prediction], **fields: Any) -> None:
    store.write_eval_point(EvalPoint(run_id=RUN, step=step, **fields), rows)


def test_a_repeated_prompt_pairs_occurrence_by_occurrence(store: Store) -> None:
    point(store, 10, [pred(10, 0, "dup", "x", 0.1), pred(10, 1, "solo", "s", 0.1),
                      pred(10, 2, "dup", "y", 0.1)])
    point(store, 20, [pred(20, 0, "dup", "x", 0.1), pred(20, 1, "solo", "s", 0.1),
                      pred(20, 2, "dup", "z", 0.9)])
    result = compare_points(store, RUN, 10, 20)
    assert result.counts.paired == 3 and result.counts.added == 0
    assert result.counts.changed == 1 and result.counts.regressed == 1
    [worst] = [i for i in result.items if i.regressed]
    assert (worst.occurrence, worst.a.prediction, worst.b.prediction) == (1, "y", "z")  # type: ignore[union-attr]

    [drop] = worst_samples(store, RUN, lens="largest_drop", step=20)
    assert (drop.previous.prediction, drop.prediction.prediction) == ("y", "z")  # type: ignore[union-attr]


def test_a_repeated_prompt_has_one_timeline_entry_per_occurrence(store: Store) -> None:
    point(store, 10, [pred(10, 0, "dup", "x", 0.5), pred(10, 1, "dup", "y", 0.5)])
    point(store, 20, [pred(20, 0, "dup", "x", 0.2), pred(20, 1, "dup", "w", 0.4)])
    timeline = prompt_timeline(store, RUN, prompt_identity("dup"))
    assert [(e.step, e.occurrence, e.prediction.prediction, e.changed)
            for e in timeline.entries] == [
        (10, 0, "x", False), (10, 1, "y", False), (20, 0, "x", False), (20, 1, "w", True),
    ]
    assert timeline.best_step == 20


def test_a_step_recorded_again_is_read_at_its_newest_attempt(store: Store) -> None:
    point(store, 10, [pred(10, 0, "q", "old", 0.5)], writer="first")
    point(store, 20, [pred(20, 0, "q", "crashed", 0.9)], writer="first")
    point(store, 20, [pred(20, 0, "q", "resumed", 0.1)], writer="second")
    assert len(store.point_predictions(RUN, 20)) == 2  # both attempts are stored

    result = compare_points(store, RUN, 10, 20)
    [item] = result.items
    assert item.b is not None and item.b.prediction == "resumed" and item.b.attempt == 1
    timeline = prompt_timeline(store, RUN, prompt_identity("q"))
    assert [e.prediction.prediction for e in timeline.entries] == ["old", "resumed"]
    assert [w.prediction.prediction for w in worst_samples(store, RUN, lens="lowest_score")] == [
        "resumed",
    ]
