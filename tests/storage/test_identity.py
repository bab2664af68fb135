"""Row identity and attempts on both databases: two samples of one prompt are two rows, a step
recorded again by another writer is a new attempt with its own card, re-sends dedupe, and the
count a write returns is what was stored."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from predwatch import Recorder, StoreSink
from predwatch.errors import PayloadError, StorageUnavailable
from predwatch.generation.fake import FakeGenerator
from predwatch.records import EvalPoint, Prediction, Run, prompt_identity, utcnow
from predwatch.storage import Store, engine, open_store

RUN = "run-id"


def answer(step: int, index: int, prompt: str = "same question", text: str = "a",
           **fields: Any) -> Prediction:
    return Prediction(run_id=RUN, step=step, sample_index=index, prompt=prompt,
                      prompt_id=prompt_identity(prompt), prediction=text, ground_truth="a",
                      char_error_rate=0.0 if text == "a" else 1.0, **fields)


def write(store: Store, step: int, rows: list[Prediction], **point: Any) -> int:
    return store.write_eval_point(EvalPoint(run_id=RUN, step=step, **point), rows)


def test_two_samples_of_one_prompt_are_two_rows_and_resending_them_dedupes(store: Store) -> None:
    rows = [answer(10, 0, text="a"), answer(10, 1, text="b")]
    assert write(store, 10, rows) == 2
    assert write(store, 10, rows) == 0  # a re-send
    stored = store.point_predictions(RUN, 10)
    assert [(p.sample_index, p.prediction) for p in stored] == [(0, "a"), (1, "b")]
    assert store.list_predictions(RUN).total == 2
    assert store.eval_point(RUN, 10).sample_count == 2  # type: ignore[union-attr]


def test_the_inserted_count_is_what_was_stored(store: Store) -> None:
    first = [answer(5, 0), answer(5, 1, prompt="other")]
    assert write(store, 5, first) == 2
    mixed = [*first, answer(5, 2, text="c")]  # two already stored, one new
    assert write(store, 5, mixed) == 1
    assert len(store.point_predictions(RUN, 5)) == 3


def test_another_writer_at_a_recorded_step_is_a_new_attempt_with_its_own_card(
    store: Store,
) -> None:
    before = [answer(20, 0, text="a"), answer(20, 1, prompt="q2", text="a")]
    after = [answer(20, 0, text="b"), answer(20, 1, prompt="q2", text="b")]
    assert write(store, 20, before, writer="crashed", card={"seed": 1}) == 2
    assert write(store, 20, before, writer="crashed", card={"seed": 1}) == 0  # same attempt
    assert write(store, 20, after, writer="resumed", card={"seed": 2}) == 2  # never dropped
    assert write(store, 20, after, writer="resumed") == 0
    assert write(store, 20, before, writer="crashed") == 0  # a late re-send of attempt 0

    rows = store.point_predictions(RUN, 20)
    assert [(p.attempt, p.prediction) for p in rows] == [(0, "a"), (0, "a"), (1, "b"), (1, "b")]
    point = store.eval_point(RUN, 20)
    assert point is not None and point.attempt == 1 and point.card == {"seed": 2}
    attempts = store.point_attempts(RUN, 20)
    assert [(a.attempt, a.writer, a.card, a.sample_count) for a in attempts] == [
        (0, "crashed", {"seed": 1}, 2), (1, "resumed", {"seed": 2}, 2),
    ]


def test_a_point_without_writer_keeps_its_attempt_and_a_writer_after_it_gets_the_next(
    store: Store,
) -> None:
    assert write(store, 30, [answer(30, 0)]) == 1  # e.g. the original writer: attempt 0
    assert write(store, 30, [answer(30, 0)]) == 0
    assert write(store, 30, [answer(30, 0, text="b")], writer="w") == 1
    assert [p.attempt for p in store.point_predictions(RUN, 30)] == [0, 1]


def test_writes_are_a_heartbeat_and_a_silent_running_run_is_stale(store: Store) -> None:
    store.ensure_run(Run(id=RUN))
    run = store.get_run(RUN)
    assert run.last_seen_at is not None and not run.is_stale()
    assert run.is_stale(utcnow() + timedelta(days=1))
    write(store, 1, [answer(1, 0)])
    assert store.get_run(RUN).last_seen_at is not None
    finished = store.finish_run(RUN)
    assert not finished.is_stale(utcnow() + timedelta(days=1))


def test_a_locked_or_unopenable_database_raises_storage_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(StorageUnavailable) as caught:
        open_store(f"sqlite:///{tmp_path}")  # a directory is no database file
    assert caught.value.status_code == 503 and caught.value.code == "database_unavailable"

    monkeypatch.setattr(engine, "SQLITE_BUSY_TIMEOUT_S", 0.05)  # fail fast once locked
    path = tmp_path / "locked.db"
    with open_store(f"sqlite:///{path}") as store:
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN EXCLUSIVE")
            with pytest.raises(StorageUnavailable, match="locked"):
                write(store, 1, [answer(1, 0)])
        finally:
            other.close()
        assert write(store, 1, [answer(1, 0)]) == 1  # and works once the lock is gone


def test_the_recorder_keeps_every_answer_when_the_sampler_repeats_a_prompt(
    db_url: str, tmp_path: Path,
) -> None:
    samples = [{"prompt": f"q{i % 6}", "completion": "a"} for i in range(8)]  # 6 prompts, 8 rows
    with open_store(db_url) as store:
        recorder = Recorder({"sample_count": 8}, samples=samples,
                            sink=StoreSink(store, spool_dir=tmp_path / "spool"))
        recorder.start()
        assert len({s.prompt_id for s in recorder.samples}) == 6 and len(recorder.samples) == 8
        summary = recorder.record(generator=FakeGenerator(), step=1)
        assert summary is not None and summary.sample_count == 8
        assert recorder.close() == 0
        assert len(store.point_predictions(recorder.run.id, 1)) == 8


def test_a_second_recorder_at_the_same_steps_adds_attempts(db_url: str, tmp_path: Path) -> None:
    samples = [{"prompt": f"q{i}", "completion": "a"} for i in range(3)]
    with open_store(db_url) as store:
        for _ in range(2):  # the same run id, as after a resume
            recorder = Recorder({"sample_count": 3}, samples=samples, run_id="resumed",
                                sink=StoreSink(store, spool_dir=tmp_path / "spool"))
            recorder.record(generator=FakeGenerator(), step=4)
            assert recorder.close() == 0
        rows = store.point_predictions("resumed", 4)
        stored_counts = [sum(p.attempt == a for p in rows) for a in (0, 1)]
        assert [a.attempt for a in store.point_attempts("resumed", 4)] == [0, 1]
    assert stored_counts == [3, 3]


def test_an_attempt_out_of_range_is_refused_naming_the_field(store: Store) -> None:
    with pytest.raises(PayloadError) as refused:
        write(store, 1, [answer(1, 0)], attempt=2**40)
    assert refused.value.detail == {"field": "eval_point.attempt"}
