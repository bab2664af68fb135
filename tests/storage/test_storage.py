"""The store on real SQLite files and a real PostgreSQL database (every test runs on both)."""

from __future__ import annotations

import sqlite3
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError

from predwatch.errors import Conflict, NotFound, PayloadError, SchemaOutdated
from predwatch.records import (
    EvalPoint,
    Prediction,
    Run,
    ValidationIssue,
    ValidatorResult,
    prompt_identity,
)
from predwatch.storage import Page, SQLStore, Store, open_store

RUN = "run-1"
T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)


def pred(step: int, i: int, run: str = RUN, **fields: Any) -> Prediction:
    """A small prediction of prompt ``i`` at ``step``."""
    prompt = fields.pop("prompt", f"question {i}")
    return Prediction(
        run_id=run, step=step, sample_index=i, prompt_id=prompt_identity(prompt), prompt=prompt,
        prediction=fields.pop("prediction", f"answer {i} at {step}"), ground_truth=f"truth {i}",
        **fields,
    )


def write(store: Store, step: int, preds: list[Prediction], run: str = RUN, **point: Any) -> int:
    return store.write_eval_point(EvalPoint(run_id=run, step=step, **point), preds)


def full_prediction() -> Prediction:
    """A prediction with every field set to a non-default value."""
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2? ü"}]
    return Prediction(
        run_id=RUN, step=30, epoch=1.5, trigger="epoch", sample_index=7, sample_number=2,
        attempt=1, prompt_id=prompt_identity(messages=messages), source_index=41,
        sample_source="set",
        sample_source_id="golden.jsonl", set_id="set-1", set_version=3, item_id="item-9",
        prompt="2+2? ü", messages=messages, ground_truth="4", prediction="4 ✓", truncated=True,
        exact_match=1.0, char_error_rate=0.25, length_ratio=1.5, word_overlap=0.75,
        metrics={"token_f1": 0.5, "rouge_l": None, "bleu": 12.5},
        validation_pass=False, validation_kind="json",
        validation_errors=[ValidationIssue(validator="json_schema", message="missing key",
                                           detail={"path": ["a", 0]})],
        validation_results=[
            ValidatorResult(validator="json_schema", name="schema", passed=False,
                            message="missing key", detail={"path": ["a", 0]}),
            ValidatorResult(validator="regex", passed=True, error=True, detail=[1, 2.5, None]),
        ],
        generation_params={"temperature": 0.7, "top_p": 0.9, "seed": 1234, "stop": ["\n"]},
        prompt_tokens=12, completion_tokens=3, total_tokens=15, latency_ms=87.25,
        max_new_tokens=64, do_sample=True, finish_reason="length", checkpoint="ckpt-30",
        model_revision="abc123", chat_template_hash="f00d", precision="bf16",
        library_versions={"torch": "2.3.0", "transformers": "4.44.0"},
        error="CUDA OOM (retried)", created_at=T0,
    )


# --- writing and reading back -----------------------------------------------------------------
def test_store_implements_the_protocol(store: Store) -> None:
    assert isinstance(store, Store)
    assert isinstance(store, SQLStore)
    assert store.dialect in ("sqlite", "postgresql")


def test_every_prediction_field_round_trips(store: Store) -> None:
    p = full_prediction()
    defaults = Prediction(run_id="x", step=0, prompt_id="y")
    unset = [f for f in Prediction.model_fields
             if f not in ("run_id", "step", "prompt_id") and getattr(p, f) == getattr(defaults, f)]
    assert unset == [], "the fixture must set every field"

    assert write(store, 30, [p], epoch=1.5, attempt=1) == 1
    assert store.list_predictions(RUN).items == [p]
    assert store.point_predictions(RUN, 30) == [p]
    assert store.timeline(RUN, p.prompt_id) == [p]
    [(seq, streamed)] = store.predictions_after(RUN, 0)
    assert streamed == p and seq > 0
    assert streamed.created_at.tzinfo is not None and streamed.created_at == T0
    # The bulk reads decode JSON and the timestamp themselves: the same values, in UTC.
    for bulk in (store.point_predictions(RUN, 30), store.timeline(RUN, p.prompt_id)):
        assert [x.created_at.tzinfo for x in bulk] == [timezone.utc]


def test_the_bulk_reads_give_utc_whatever_the_session_time_zone(store: SQLStore) -> None:
    if store.dialect != "postgresql":
        pytest.skip("SQLite has no session time zone")
    write(store, 30, [full_prediction()], epoch=1.5, attempt=1)
    # psycopg hands out timestamps in the session's zone; the store reads them back in UTC.
    event.listen(store.engine, "connect",
                 lambda dbapi, _record: dbapi.execute("SET TIME ZONE 'Asia/Kolkata'"))
    store.engine.dispose()
    for bulk in (store.point_predictions(RUN, 30),
                 store.timeline(RUN, full_prediction().prompt_id)):
        [read] = bulk
        assert read.created_at == T0 and read.created_at.tzinfo is timezone.utc


def test_a_timestamp_the_bulk_read_cannot_parse_marks_only_its_row(store: SQLStore) -> None:
    if store.dialect != "sqlite":
        pytest.skip("only SQLite stores any text in a timestamp column")
    write(store, 10, [pred(10, 0), pred(10, 1)])
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE predictions SET created_at = 'yesterday' "
                             "WHERE sample_index = 1")
    good, bad = store.point_predictions(RUN, 10)
    assert good.error is None and good.created_at.tzinfo is timezone.utc
    assert bad.error is not None and bad.error.startswith("this stored row could not be read")
    assert bad.prompt == "question 1" and bad.step == 10  # what is readable is kept
    [marked] = store.timeline(RUN, pred(10, 1).prompt_id)
    assert marked.error == bad.error


def test_epoch_keeps_its_fraction(store: Store) -> None:
    write(store, 15, [pred(15, 0, epoch=1.5)], epoch=1.5)
    write(store, 20, [pred(20, 0, epoch=2.0)], epoch=2.0)
    assert store.point_predictions(RUN, 15)[0].epoch == 1.5
    assert [p.epoch for p in store.eval_points(RUN)] == [1.5, 2.0]
    assert [t.epoch for t in store.trends(RUN)] == [1.5, 2.0]
    assert store.epochs(RUN) == [
        {"epoch": 1.5, "prediction_count": 1, "latest_step": 15},
        {"epoch": 2.0, "prediction_count": 1, "latest_step": 20},
    ]
    page = store.list_predictions(RUN, epoch=1.5)
    assert page.total == 1 and page.items[0].step == 15


def test_rewriting_a_batch_inserts_nothing(store: Store) -> None:
    batch = [pred(10, i) for i in range(5)]
    assert write(store, 10, batch) == 5
    assert write(store, 10, batch) == 0
    assert write(store, 10, batch + [pred(10, 5)]) == 1
    assert store.list_predictions(RUN).total == 6
    assert len(store.point_predictions(RUN, 10)) == 6
    assert store.eval_points(RUN)[0].sample_count == 6


def test_a_failing_insert_leaves_nothing_of_the_point(store: Store) -> None:
    write(store, 10, [pred(10, 0)])
    # prompt is NOT NULL; model_construct skips validation so the database must refuse it.
    bad = pred(20, 1).model_copy(update={"prompt": None})
    with pytest.raises(IntegrityError):
        write(store, 20, [pred(20, 0), bad], generation_ms=5.0)
    assert [p.step for p in store.eval_points(RUN)] == [10]
    assert store.point_predictions(RUN, 20) == []
    assert store.list_predictions(RUN).total == 1


def test_a_failing_first_write_does_not_create_the_run(store: Store) -> None:
    bad = pred(20, 1, run="ghost").model_copy(update={"prediction": None})
    with pytest.raises(IntegrityError):
        write(store, 20, [bad], run="ghost")
    with pytest.raises(NotFound):
        store.get_run("ghost")


def test_predictions_must_belong_to_the_point(store: Store) -> None:
    with pytest.raises(PayloadError):
        write(store, 10, [pred(11, 0)])
    with pytest.raises(PayloadError):
        write(store, 10, [pred(10, 0, run="other")])


def test_rewriting_a_point_merges_what_the_new_record_supplies(store: Store) -> None:
    write(store, 10, [pred(10, 0)], epoch=0.5, generation_ms=120.0, card={"seed": 1})
    write(store, 10, [pred(10, 1)], trigger="eval")
    [point] = store.eval_points(RUN)
    assert (point.epoch, point.generation_ms, point.card) == (0.5, 120.0, {"seed": 1})
    assert point.trigger == "eval" and point.sample_count == 2
    write(store, 10, [], card={"seed": 2})
    assert store.eval_points(RUN)[0].card == {"seed": 2}


def test_point_epoch_defaults_to_its_predictions(store: Store) -> None:
    write(store, 10, [pred(10, 0, epoch=0.25)])
    assert store.eval_points(RUN)[0].epoch == 0.25


# --- lists, filters, totals, cursors ----------------------------------------------------------
def _filter_fixture(store: Store) -> None:
    ok = ValidatorResult(validator="json_schema", passed=True)
    bad = ValidatorResult(validator="json_schema", name="shape", passed=False, message="no")
    write(store, 10, [
        pred(10, 0, epoch=1.0, char_error_rate=0.5, validation_pass=True, validation_results=[ok]),
        pred(10, 1, epoch=1.0, char_error_rate=0.1, validation_pass=False,
             validation_results=[bad]),
        pred(10, 2, epoch=1.0, char_error_rate=None, error="boom", prediction=""),
    ], epoch=1.0)
    write(store, 20, [
        pred(20, 0, epoch=1.5, char_error_rate=0.9, prediction="the NEEDLE here"),
        pred(20, 1, epoch=1.5, char_error_rate=0.3, validation_pass=False,
             validation_errors=[ValidationIssue(validator="regex", message="no match")]),
        pred(20, 2, epoch=1.5, char_error_rate=0.3),
    ], epoch=1.5)


def test_filters_and_totals(store: Store) -> None:
    _filter_fixture(store)

    def listed(**kw: Any) -> tuple[int | None, list[tuple[int, int]]]:
        page = store.list_predictions(RUN, **kw)
        return page.total, [(p.step, p.sample_index) for p in page.items]

    assert listed() == (6, [(10, 0), (10, 1), (10, 2), (20, 0), (20, 1), (20, 2)])
    assert listed(epoch=1.5) == (3, [(20, 0), (20, 1), (20, 2)])
    assert listed(epoch=1.5, limit=1) == (3, [(20, 0)])
    assert listed(epoch=3.0) == (0, [])
    assert listed(step=10, limit=2) == (3, [(10, 0), (10, 1)])
    assert listed(epoch=1.0, step=20) == (0, [])
    assert listed(failed_only=True) == (3, [(10, 1), (10, 2), (20, 1)])
    assert listed(failed_only=True, epoch=1.0) == (2, [(10, 1), (10, 2)])
    assert listed(validator="json_schema") == (1, [(10, 1)])
    assert listed(validator="shape") == (1, [(10, 1)])
    assert listed(validator="regex") == (1, [(20, 1)])
    assert listed(validator="json") == (0, [])  # a whole name, not a substring
    assert listed(search="needle") == (1, [(20, 0)])
    assert listed(search="truth 2", epoch=1.5) == (1, [(20, 2)])
    assert listed(search="100%") == (0, [])  # LIKE wildcards are escaped
    assert listed(sort="-char_error_rate") == (
        6, [(20, 0), (10, 0), (20, 1), (20, 2), (10, 1), (10, 2)])  # NULL last
    assert listed(sort="char_error_rate")[1][:2] == [(10, 1), (20, 1)]
    assert listed(sort="char_error_rate")[1][-1] == (10, 2)  # NULL last both ways
    assert listed(offset=4) == (6, [(20, 1), (20, 2)])
    assert store.list_predictions("no-such-run") == Page(items=[], total=0)


def test_sort_by_a_metric_of_the_metrics_map(store: Store) -> None:
    write(store, 10, [pred(10, i, metrics={"token_f1": f}) for i, f in enumerate([0.2, 0.9, 0.5])])
    page = store.list_predictions(RUN, sort="-token_f1")
    assert [p.sample_index for p in page.items] == [1, 2, 0]
    with pytest.raises(PayloadError):
        store.list_predictions(RUN, sort="x; DROP TABLE runs")


@pytest.mark.parametrize("sort", [None, "-char_error_rate", "word_overlap"])
def test_keyset_cursor_visits_every_row_once(store: Store, sort: str | None) -> None:
    for step in (10, 20, 30):
        write(store, step, [
            pred(step, i, char_error_rate=(None if i % 4 == 0 else round((i * 7 % 5) / 5, 1)),
                 word_overlap=0.5) for i in range(9)
        ])
    seen: list[tuple[int, int]] = []
    cursor = None
    while True:
        page = store.list_predictions(RUN, sort=sort, limit=4, cursor=cursor)
        assert page.total == 27
        seen += [(p.step, p.sample_index) for p in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 27
    by_offset = [(p.step, p.sample_index)
                 for off in range(0, 27, 5)
                 for p in store.list_predictions(RUN, sort=sort, limit=5, offset=off).items]
    assert by_offset == seen


def test_cursor_of_another_sort_is_rejected(store: Store) -> None:
    write(store, 10, [pred(10, i) for i in range(3)])
    cursor = store.list_predictions(RUN, limit=1).next_cursor
    assert cursor is not None
    with pytest.raises(PayloadError):
        store.list_predictions(RUN, sort="-exact_match", cursor=cursor)
    with pytest.raises(PayloadError):
        store.list_predictions(RUN, cursor="not-a-cursor")


# --- aggregates -------------------------------------------------------------------------------
def _point_row(store: SQLStore, step: int) -> dict[str, Any]:
    from sqlalchemy import select

    from predwatch.storage.tables import eval_points

    with store.engine.connect() as conn:
        q = select(eval_points).where(eval_points.c.run_id == RUN, eval_points.c.step == step)
        return dict(conn.execute(q).mappings().one())


def _odd_metric(kind: str, i: int) -> dict[str, Any]:
    """A metric map with the oddity ``kind`` in some rows."""
    if kind == "nan-metric":
        return {"odd": float("nan") if i == 3 else float(i)}
    if kind == "inf-metrics":  # +inf and -inf in one metric (fsum raises), NaN in all of another
        return {"odd": {5: float("inf"), 6: -float("inf")}.get(i, float(i)), "nan": float("nan")}
    if kind == "ragged":  # metrics that only some rows have
        return {"extra": i} if i % 3 == 0 else {"late": 2.5} if i > 30 else {}
    return {"odd": float(i)}


@pytest.mark.parametrize("odd", ["plain", "nan-metric", "inf-metrics", "ragged"])
def test_new_point_aggregates_equal_those_recomputed_from_stored_rows(
    store: SQLStore, odd: str
) -> None:
    # A new point takes its aggregates from the records; re-writing it recomputes them in SQL.
    preds = [
        pred(10, i, exact_match=float(i % 3 == 0), char_error_rate=i / 7 if i % 5 else None,
             length_ratio=0.1 * i, word_overlap=None if i % 4 == 0 else 1 / (i + 1),
             validation_pass=None if i % 6 == 0 else i % 2 == 0,
             error="oom" if i % 9 == 0 else None,
             finish_reason="length" if i % 4 == 1 else "eos", latency_ms=i * 1.5,
             completion_tokens=i % 11 or None,
             metrics={"token_f1": i / 13, "rouge_l": None if i % 2 else 0.3,
                      **_odd_metric(odd, i)})
        for i in range(40)
    ]
    from predwatch.storage.queries import point_aggregates

    assert point_aggregates(preds) is not None  # the records' own aggregates, not SQL's
    write(store, 10, preds)
    fresh = _point_row(store, 10)
    assert write(store, 10, preds) == 0
    recomputed = _point_row(store, 10)
    assert fresh.keys() == recomputed.keys()
    for name, value in fresh.items():
        if name == "metric_avgs":
            assert value == pytest.approx(recomputed[name], rel=1e-12), name
        elif isinstance(value, float):
            assert value == pytest.approx(recomputed[name], rel=1e-12), name
        else:
            assert value == recomputed[name], name
    assert fresh["sample_count"] == 40 and fresh["validated_count"] == 33
    assert set(fresh["metric_avgs"]) == {"token_f1", "rouge_l"} | {
        "plain": {"odd"}, "nan-metric": {"odd"}, "inf-metrics": {"odd"},
        "ragged": {"extra", "late"}}[odd]  # an all-NaN metric has no mean


def test_trends_have_one_hand_checked_entry_per_point(store: Store) -> None:
    write(store, 10, [
        pred(10, 0, exact_match=1.0, char_error_rate=0.0, length_ratio=1.0, word_overlap=1.0,
             validation_pass=True, metrics={"token_f1": 1.0}, latency_ms=10.0,
             completion_tokens=4),
        pred(10, 1, exact_match=0.0, char_error_rate=0.5, length_ratio=2.0, word_overlap=0.5,
             validation_pass=False, metrics={"token_f1": 0.5, "rouge_l": 0.25},
             latency_ms=30.0, completion_tokens=7),
        pred(10, 2, exact_match=0.0, char_error_rate=1.0, length_ratio=0.0, word_overlap=0.0,
             error="oom", finish_reason="error"),
    ], epoch=0.5)
    write(store, 20, [pred(20, 0, char_error_rate=0.2, finish_reason="length")], epoch=1.0)
    first, second = store.trends(RUN)
    assert (first.step, first.epoch, first.sample_count) == (10, 0.5, 3)
    assert first.avg_exact_match == pytest.approx(1 / 3)
    assert first.avg_char_error_rate == pytest.approx(0.5)
    assert (first.min_char_error_rate, first.max_char_error_rate) == (0.0, 1.0)
    assert first.avg_length_ratio == pytest.approx(1.0)
    assert first.avg_word_overlap == pytest.approx(0.5)
    assert first.validation_pass_rate == pytest.approx(0.5)  # of the rows that were validated
    assert first.avg_token_f1 == pytest.approx(0.75)
    assert first.avg_rouge_l == pytest.approx(0.25)
    assert first.failed_count == 1
    assert first.avg_latency_ms == pytest.approx(20.0)
    assert first.avg_completion_tokens == pytest.approx(5.5)
    assert (second.step, second.sample_count, second.avg_char_error_rate) == (20, 1, 0.2)
    assert second.validation_pass_rate is None and second.avg_exact_match is None
    points = store.eval_points(RUN)
    assert [(p.step, p.sample_count, p.failed_count) for p in points] == [(10, 3, 1), (20, 1, 0)]


def test_epochs_group_points(store: Store) -> None:
    write(store, 5, [pred(5, i, epoch=1.0) for i in range(2)], epoch=1.0)
    write(store, 8, [pred(8, i, epoch=1.0) for i in range(3)], epoch=1.0)
    write(store, 12, [pred(12, i, epoch=2.0) for i in range(4)], epoch=2.0)
    assert store.epochs(RUN) == [
        {"epoch": 1.0, "prediction_count": 5, "latest_step": 8},
        {"epoch": 2.0, "prediction_count": 4, "latest_step": 12},
    ]
    assert store.list_predictions(RUN, epoch=1.0, limit=2).total == 5
    assert store.epochs("no-such-run") == []


# --- live stream, timeline, point ---------------------------------------------------------------
def test_predictions_after_a_sequence(store: Store) -> None:
    write(store, 10, [pred(10, i) for i in range(3)])
    write(store, 10, [pred(10, 0, run="other")], run="other")
    write(store, 20, [pred(20, i) for i in range(2)])
    everything = store.predictions_after(RUN, 0)
    seqs = [s for s, _ in everything]
    assert seqs == sorted(seqs) and len(seqs) == 5
    assert {p.run_id for _, p in everything} == {RUN}
    assert [p.step for _, p in store.predictions_after(RUN, seqs[2])] == [20, 20]
    assert len(store.predictions_after(RUN, 0, limit=2)) == 2
    assert store.predictions_after(RUN, seqs[-1]) == []
    assert store.last_sequence(RUN) == seqs[-1]
    assert store.last_sequence("no-such-run") == 0


def test_a_live_reader_never_steps_past_a_row_still_being_written(store: SQLStore) -> None:
    """Rows of one run become visible in sequence order, even with two writers at once.

    A live stream reads ``predictions_after(run, last_seen)``; if a later writer's rows (higher
    sequence numbers) could commit while an earlier writer's are still open, the reader would
    move past the earlier rows and never send them. Writes to one run are serialised instead.
    """
    write(store, 0, [pred(0, 0)])
    seen = store.last_sequence(RUN)
    first = [pred(10, i) for i in range(3)]
    with store._write() as conn:  # a writer that holds its transaction open
        store._point_writer.write(conn, EvalPoint(run_id=RUN, step=10), None,
                                  [store._encode(p) for p in first])
        second = threading.Thread(target=write, args=(store, 20, [pred(20, i) for i in range(2)]))
        second.start()
        second.join(timeout=1.0)
        assert second.is_alive()  # waits for the first writer's commit
        # What a live reader polling now would see: nothing new yet.
        assert store.predictions_after(RUN, seen) == []
    second.join(timeout=30)
    assert not second.is_alive()
    rows = store.predictions_after(RUN, seen)
    assert [p.step for _, p in rows] == [10, 10, 10, 20, 20]


def test_eval_point_lookup(store: Store) -> None:
    for step in (10, 20, 30):
        write(store, step, [pred(step, 0)], generation_ms=float(step))
    assert store.eval_point(RUN).step == 30  # type: ignore[union-attr]
    assert store.eval_point(RUN, 20).generation_ms == 20.0  # type: ignore[union-attr]
    assert store.eval_point(RUN, before=30).step == 20  # type: ignore[union-attr]
    assert store.eval_point(RUN, before=10) is None
    assert store.eval_point(RUN, 15) is None and store.eval_point("nope") is None


def test_timeline_and_point_are_ordered(store: Store) -> None:
    for step in (30, 10, 20):
        write(store, step, [pred(step, i) for i in (2, 0, 1)])
    prompt_id = pred(0, 1).prompt_id
    assert [p.step for p in store.timeline(RUN, prompt_id)] == [10, 20, 30]
    assert [p.sample_index for p in store.point_predictions(RUN, 20)] == [0, 1, 2]
    assert [p.step for p in store.eval_points(RUN)] == [10, 20, 30]


# --- runs, tokens, keys -----------------------------------------------------------------------
def test_runs_crud(store: Store) -> None:
    run = store.create_run(Run(id="r", name="first", owner="ann", config={"lr": 1e-4}))
    assert store.get_run("r") == run and run.config == {"lr": 1e-4}
    with pytest.raises(Conflict):
        store.create_run(Run(id="r"))
    assert store.ensure_run(Run(id="r", name="ignored")).name == "first"
    assert store.ensure_run(Run(id="s")).id == "s"
    assert store.get_run("r", owner="ann").id == "r"
    with pytest.raises(NotFound):
        store.get_run("r", owner="bob")
    with pytest.raises(NotFound):
        store.get_run("nope")
    finished = store.finish_run("r", status="failed")
    assert finished.status == "failed" and finished.finished_at is not None
    with pytest.raises(PayloadError):
        store.finish_run("r", status="exploded")
    with pytest.raises(NotFound):
        store.finish_run("nope")


def test_list_runs_pages_newest_first_with_search_and_owner(store: Store) -> None:
    for i in range(7):
        store.create_run(Run(id=f"run-{i}", name=f"{'llama' if i % 2 else 'qwen'} {i}",
                             owner="ann" if i < 5 else "bob",
                             created_at=T0 + timedelta(minutes=i // 2)))  # ties on created_at
    ids: list[str] = []
    cursor = None
    while True:
        page = store.list_runs(limit=3, cursor=cursor)
        assert page.total == 7
        ids += [r.id for r in page.items]
        if (cursor := page.next_cursor) is None:
            break
    assert ids == ["run-6", "run-5", "run-4", "run-3", "run-2", "run-1", "run-0"]
    ann = store.list_runs(owner="ann")
    assert ann.total == 5 and {r.owner for r in ann.items} == {"ann"}
    assert [r.id for r in store.list_runs(search="LLAMA", owner="ann").items] == ["run-3", "run-1"]
    assert store.list_runs(owner="carol").items == []


def test_delete_run_cascades(store: Store) -> None:
    write(store, 10, [pred(10, i) for i in range(3)])
    write(store, 10, [pred(10, 0, run="keep")], run="keep")
    store.add_run_token(RUN, "hash-1")
    store.delete_run(RUN)
    with pytest.raises(NotFound):
        store.get_run(RUN)
    assert store.eval_points(RUN) == [] and store.predictions_after(RUN, 0) == []
    assert store.run_for_token("hash-1") is None
    assert store.list_predictions("keep").total == 1
    with pytest.raises(NotFound):
        store.delete_run(RUN)


def test_run_tokens(store: Store) -> None:
    store.create_run(Run(id="r", owner="ann"))
    store.add_run_token("r", "h1")
    store.add_run_token("r", "h2")
    assert store.run_for_token("h1") == store.get_run("r")
    assert store.run_for_token("unknown") is None
    with pytest.raises(Conflict):
        store.add_run_token("r", "h1")
    with pytest.raises(NotFound):
        store.add_run_token("nope", "h3")
    assert store.revoke_run_tokens("r") == 2
    assert store.run_for_token("h1") is None and store.run_for_token("h2") is None
    assert store.revoke_run_tokens("r") == 0


def test_api_keys(store: Store) -> None:
    assert store.create_user("ann") == "ann"
    assert store.create_user("ann") == "ann"
    key_id = store.add_api_key("ann", "kh1", label="laptop")
    other = store.add_api_key("bob", "kh2")  # the user is created on the way
    assert store.user_for_key("kh1") == "ann" and store.user_for_key("kh2") == "bob"
    assert store.user_for_key("nope") is None
    with pytest.raises(Conflict):
        store.add_api_key("ann", "kh1")
    store.revoke_api_key(key_id)
    store.revoke_api_key(key_id)
    assert store.user_for_key("kh1") is None and store.user_for_key("kh2") == "bob"
    assert other != key_id
    listed = store.list_api_keys()
    assert [(k["id"], k["user"], k["label"]) for k in listed] == [
        (key_id, "ann", "laptop"), (other, "bob", None)]
    assert listed[0]["revoked_at"] is not None and listed[1]["revoked_at"] is None
    assert [k["id"] for k in store.list_api_keys("bob")] == [other]
    with pytest.raises(NotFound):
        store.revoke_api_key("no-such-key")


# --- SQLite specifics and opening -------------------------------------------------------------
def test_sqlite_connection_settings(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "p.db"
    with open_store(f"sqlite:///{path}") as store, store.engine.connect() as conn:
        pragma = {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                  for name in ("journal_mode", "foreign_keys", "synchronous", "busy_timeout")}
    assert pragma == {"journal_mode": "wal", "foreign_keys": 1, "synchronous": 1,
                      "busy_timeout": 30000}
    assert sqlite3.connect(path).execute("PRAGMA page_size").fetchone() == (16384,)


def test_sqlite_timestamps_are_stored_as_sqlalchemy_writes_them(sqlite_url: str) -> None:
    from sqlalchemy.dialects import sqlite

    from predwatch.storage.rows import PredictionEncoder
    from predwatch.storage.tables import predictions

    dialect = sqlite.dialect()
    encode = PredictionEncoder(dialect)
    reference = predictions.c.created_at.type.dialect_impl(dialect).bind_processor(dialect)
    assert reference is not None
    at = encode._created_at
    for ts in (T0, T0.replace(microsecond=0),
               T0.astimezone(timezone(timedelta(hours=-5))), T0.replace(tzinfo=None)):
        assert encode(pred(1, 0, created_at=ts))[at] == reference(ts)


def test_in_memory_sqlite_is_one_database() -> None:
    with open_store("sqlite://") as store:
        write(store, 10, [pred(10, 0)])
        assert store.list_predictions(RUN).total == 1


def test_open_without_create_refuses_an_empty_database(sqlite_url: str) -> None:
    with pytest.raises(SchemaOutdated, match="predwatch db upgrade --db"):
        open_store(sqlite_url, create=False)


def test_unsupported_url_is_a_config_error() -> None:
    from predwatch.errors import ConfigError

    with pytest.raises(ConfigError):
        open_store("mysql://localhost/x")
