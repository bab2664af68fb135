"""The framework-free pipeline: samples → generate → score → validate → store, never raising."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from predwatch.delivery import Spool, StoreSink
from predwatch.errors import ConfigError, DeliveryError
from predwatch.generation.fake import FakeGenerator
from predwatch.recording.recorder import Recorder
from predwatch.records import Generation, Sample
from predwatch.storage import open_store, tables

RECORDS = [
    {"prompt": f"Give {i} as JSON", "completion": json.dumps({"value": i})} for i in range(12)
]


def recorder_for(db: str, tmp_path: Path, **config: Any) -> Recorder:
    base = {"sample_count": 4, "validators": {"json_parse": True}}
    return Recorder({**base, **config}, samples=RECORDS, db=db, run_name="unit",
                    spool_dir=str(tmp_path / "spool"))


def test_one_row_per_prompt_per_point_with_scores_and_validation(
    sqlite_url: str, tmp_path: Path
) -> None:
    recorder = recorder_for(sqlite_url, tmp_path)
    perfect = FakeGenerator()  # answers the ground truth
    broken = FakeGenerator(lambda s: "not json")
    first = recorder.record(generator=broken, step=10, epoch=0.5, trigger="eval")
    second = recorder.record(generator=perfect, step=20, epoch=1.0, trigger="eval")
    assert recorder.close() == 0
    assert first is not None and second is not None
    assert first.validation_pass_rate == 0.0 and second.validation_pass_rate == 1.0
    assert second.exact_match == 1.0 and second.char_error_rate == 0.0

    store = open_store(sqlite_url)
    run = store.get_run(recorder.run.id)
    assert run.status == "finished" and run.name == "unit"
    page = store.list_predictions(recorder.run.id, limit=100)
    assert page.total == 8
    by_step = {p.step: p for p in page.items}
    row = by_step[10]
    assert row.epoch == 0.5 and row.trigger == "eval"
    assert row.validation_pass is False and row.validation_kind == "json_parse"
    assert row.validation_errors[0].validator == "json_parse"
    assert row.metrics["token_f1"] is not None
    assert row.generation_params["seed"] == 42 and row.max_new_tokens == 256
    # the same prompts at every point, identified by prompt_id
    ids = lambda step: sorted(p.prompt_id for p in page.items if p.step == step)  # noqa: E731
    assert ids(10) == ids(20)
    points = store.eval_points(recorder.run.id)
    assert [p.step for p in points] == [10, 20]
    # batch_size unset, and a generator that does not batch: nothing to resolve it to
    assert points[0].card["generation_params"]["batch_size"] is None
    assert points[0].card["batch_size"] is None
    store.close()


def test_a_step_is_recorded_once(sqlite_url: str, tmp_path: Path) -> None:
    recorder = recorder_for(sqlite_url, tmp_path)
    gen = FakeGenerator()
    assert recorder.record(generator=gen, step=5) is not None
    assert recorder.record(generator=gen, step=5) is None
    recorder.close()
    assert len(gen.calls) == 1


def test_failed_samples_still_get_a_row_with_the_error(sqlite_url: str, tmp_path: Path) -> None:
    recorder = recorder_for(sqlite_url, tmp_path)
    first_id = recorder.start()[0].prompt_id
    summary = recorder.record(generator=FakeGenerator(fail_on=lambda s: s.prompt_id == first_id),
                              step=1)
    recorder.close()
    assert summary is not None and summary.failed_count == 1
    store = open_store(sqlite_url)
    rows = store.list_predictions(recorder.run.id).items
    failed = [r for r in rows if r.error]
    assert len(rows) == 4 and len(failed) == 1
    assert failed[0].prompt_id == first_id and failed[0].finish_reason == "error"
    assert store.eval_points(recorder.run.id)[0].failed_count == 1
    store.close()


class ExplodingGenerator:
    def generate(self, samples: Sequence[Sample], params: Mapping[str, Any]) -> list[Generation]:
        raise RuntimeError("CUDA error: device-side assert triggered")


def test_a_failing_generator_never_raises_into_training(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = recorder_for(sqlite_url, tmp_path)
    with caplog.at_level(logging.ERROR, logger="predwatch"):
        assert recorder.record(generator=ExplodingGenerator(), step=3) is None
    assert "recording failed at step 3" in caplog.text
    assert "device-side assert" in caplog.text  # the traceback is logged
    # the next evaluation point works
    assert recorder.record(generator=FakeGenerator(), step=4) is not None
    recorder.close()


def test_bad_samples_path_is_logged_not_raised(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder({"samples_path": str(tmp_path / "missing.jsonl")}, db=sqlite_url,
                        spool_dir=str(tmp_path / "spool"))
    with caplog.at_level(logging.ERROR, logger="predwatch"):
        assert recorder.record(generator=FakeGenerator(), step=1) is None
    assert "missing.jsonl" in caplog.text


def test_disabled_config_records_nothing(sqlite_url: str, tmp_path: Path) -> None:
    recorder = recorder_for(sqlite_url, tmp_path, enabled=False)
    assert recorder.record(generator=FakeGenerator(), step=1) is None


def test_rows_are_spooled_when_the_store_fails_and_delivered_when_it_is_back(
    sqlite_url: str, tmp_path: Path
) -> None:
    store = open_store(sqlite_url)
    spool_dir = tmp_path / "spool"
    sink = StoreSink(store, spool_dir=spool_dir)
    recorder = Recorder({"sample_count": 3}, samples=RECORDS, sink=sink)
    recorder.start()
    assert sink.flush(timeout=10) == 0  # the run is open (on the delivery thread)
    tables.metadata.drop_all(store.engine)  # the database loses its tables mid-run
    recorder.record(generator=FakeGenerator(), step=1)
    assert sink.flush(timeout=10) == 1  # one batch kept on disk
    spooled = Spool(spool_dir).files()
    assert len(spooled) == 1
    batch = Spool(spool_dir).load(spooled[0])
    assert len(batch.predictions) == 3 and batch.point.step == 1

    tables.metadata.create_all(store.engine)  # back
    store.ensure_run(recorder.run)
    recorder.record(generator=FakeGenerator(), step=2)  # a success replays the spool
    assert sink.flush(timeout=10) == 0
    assert Spool(spool_dir).files() == []
    assert store.list_predictions(recorder.run.id).total == 6
    recorder.close()
    store.close()


def test_a_bad_metric_or_validator_fails_at_start_not_at_every_point(
    sqlite_url: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="bleu_typo"):
        recorder_for(sqlite_url, tmp_path, metrics=["exact_match", "bleu_typo"]).start()
    bad_regex = {"json_parse": False, "rules": [{"kind": "regex", "pattern": "("}]}
    with pytest.raises(ConfigError, match="pattern"):
        recorder_for(sqlite_url, tmp_path, validators=bad_regex).start()


class DownSink(StoreSink):
    """A sink whose set-up fails (as loading the prompts may, say a set on a server that is
    down): the recorder's start raises and is retried later."""

    opens = 0

    def open_run(self, run: Any) -> Any:
        DownSink.opens += 1
        if DownSink.opens == 1:
            raise DeliveryError("connection refused")
        return super().open_run(run)


def test_a_failed_set_up_is_retried_later_not_at_every_point(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(sqlite_url)
    sink = DownSink(store, spool_dir=tmp_path / "spool")
    recorder = Recorder({"sample_count": 3}, samples=RECORDS, sink=sink)
    with caplog.at_level(logging.ERROR, logger="predwatch"):
        for step in (10, 20, 30):
            assert recorder.record(generator=FakeGenerator(), step=step) is None
    assert DownSink.opens == 1  # one attempt; the next waits START_RETRY_S
    assert "next attempt is in 60s" in caplog.text
    recorder._retry_start_at = 0.0  # time passes; the set-up works now
    assert recorder.record(generator=FakeGenerator(), step=40) is not None
    recorder.close()
    assert [p.step for p in store.eval_points(recorder.run.id)] == [40]
    store.close()


def test_a_bad_server_only_variable_does_not_stop_a_training_job(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREDWATCH_PORT", "abc")  # a server setting: not the recorder's business
    monkeypatch.setenv("PREDWATCH_MAX_TEXT_CHARS", "-1")
    recorder = recorder_for(sqlite_url, tmp_path)
    assert recorder.record(generator=FakeGenerator(), step=1) is not None
    recorder.close()
    monkeypatch.setenv("PREDWATCH_DELIVERY_TIMEOUT_SECONDS", "soon")  # the recorder's own
    with pytest.raises(ConfigError, match="delivery_timeout_seconds"):
        recorder_for(sqlite_url, tmp_path)


def test_the_storage_stack_is_imported_when_the_recorder_is_built_not_during_training(
    tmp_path: Path,
) -> None:
    """SQLAlchemy and Alembic (~300 modules) imported by the delivery thread mid-training held
    the GIL for ~0.4 s of a deferred run's training; built before train(), the recorder
    imports them at set-up. With a server destination nothing of the store is imported."""
    script = (
        "import sys\n"
        "from predwatch.recording.recorder import Recorder\n"
        "assert 'sqlalchemy' not in sys.modules, 'imported too early'\n"
        "kind = sys.argv[1]\n"
        "kw = {'db': sys.argv[2]} if kind == 'db' else {'server_url': 'http://127.0.0.1:9'}\n"
        "Recorder({'sample_count': 2}, samples=[{'prompt': 'a'}, {'prompt': 'b'}],"
        " spool_dir=sys.argv[3], **kw)\n"
        "loaded = {m for m in ('sqlalchemy', 'alembic', 'predwatch.storage.sql') "
        "if m in sys.modules}\n"
        "print(sorted(loaded))\n"
    )
    db = f"sqlite:///{tmp_path / 'p.db'}"
    for kind, expected in (("db", "['alembic', 'predwatch.storage.sql', 'sqlalchemy']"),
                           ("server", "[]")):
        done = subprocess.run([sys.executable, "-c", script, kind, db, str(tmp_path / kind)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip().splitlines()[-1] == expected, kind
    assert not (tmp_path / "p.db").exists()  # importing connected nothing
