"""``PredictionsCallback(mode="checkpoint")``: nothing is generated in the training process;
each save queues a job, and a worker later records the same prompts at those steps."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("transformers")

from tests.integrations.test_callback import RAW, make_trainer  # noqa: E402

from predwatch import PredictionsCallback  # noqa: E402
from predwatch.recording.worker import Worker  # noqa: E402
from predwatch.storage import open_store  # noqa: E402


def test_deferred_mode_queues_a_job_per_save_and_a_worker_records_them(
    sqlite_url: str, tmp_path: Path
) -> None:
    cb = PredictionsCallback({"sample_count": 3, "max_new_tokens": 6}, dataset=RAW,
                             db=sqlite_url, spool_dir=str(tmp_path / "spool"), mode="checkpoint")
    make_trainer(tmp_path, cb, max_steps=8, save_strategy="steps", save_steps=4).train()
    run_id = cb.recorder.run.id
    with open_store(sqlite_url) as store:
        assert store.eval_points(run_id) == []  # nothing generated during training
        jobs = store.list_jobs(run_id=run_id)
        assert [(j.step, j.epoch, j.status) for j in jobs] == [
            (4, 1.0, "pending"), (8, 2.0, "pending")]
        assert jobs[0].path == str(tmp_path / "out" / "checkpoint-4")
        assert Worker(store).drain(run_id=run_id) == 2
        points = store.eval_points(run_id)
        assert [(p.step, p.epoch, p.trigger) for p in points] == [
            (4, 1.0, "checkpoint"), (8, 2.0, "checkpoint")]
        rows = store.point_predictions(run_id, 8)
        assert [(r.prompt_id, r.source_index) for r in rows] == [
            (s.prompt_id, s.source_index) for s in cb.recorder.samples]
        assert store.get_run(run_id).config["training_args"]["max_steps"] == 8


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="mode"):
        PredictionsCallback({"sample_count": 1}, dataset=RAW, mode="later")


def test_deferred_mode_with_an_unusable_database_never_stops_training(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cb = PredictionsCallback({"sample_count": 2}, dataset=RAW, mode="checkpoint",
                             db=f"sqlite:///{blocker}/x.db", spool_dir=str(tmp_path / "spool"))
    trainer = make_trainer(tmp_path, cb, max_steps=4, save_strategy="steps", save_steps=2)
    trainer.train()
    assert trainer.state.global_step == 4
    assert cb._jobs is not None and cb._jobs.queued == []
    assert "could not set up deferred recording" in caplog.text
