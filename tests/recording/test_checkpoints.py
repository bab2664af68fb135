"""Checkpoints on disk -> recorded evaluation points: completeness, steps, restarts, adapters,
deleted and half-written checkpoints (real tiny models, real SQLite)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")

from predwatch.config import PredictionsConfig  # noqa: E402
from predwatch.generation.hf import HFGenerator  # noqa: E402
from predwatch.recording.checkpoints import (  # noqa: E402
    find_checkpoints,
    load_model,
    weights_hash,
)
from predwatch.recording.watcher import Watcher, watch_run_id  # noqa: E402
from predwatch.recording.worker import Worker, job_payload  # noqa: E402
from predwatch.records import Run  # noqa: E402
from predwatch.sampling import select_samples  # noqa: E402
from predwatch.storage import open_store  # noqa: E402

PROMPTS = [{"prompt": f"n{i} =", "completion": json.dumps({"n": i})} for i in range(6)]


def save(model: Any, tokenizer: Any, folder: Path, step: int | None, *, state: bool = True
         ) -> Path:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if state and step is not None:
        (folder / "trainer_state.json").write_text(json.dumps({
            "global_step": step, "epoch": step / 4, "max_steps": 20,
            "log_history": [{"loss": 2.5, "step": step}],
        }))
    return folder


@pytest.fixture
def samples_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps(p) for p in PROMPTS) + "\n")
    return path


def config(samples_file: Path) -> PredictionsConfig:
    return PredictionsConfig.from_dict(
        {"sample_count": 4, "max_new_tokens": 6, "samples_path": str(samples_file)}
    )


def watcher(store: Any, out: Path, samples_file: Path, **kwargs: Any) -> Watcher:
    run = Run(id=watch_run_id(out), name="watched")
    w = Watcher(store, out, run, config(samples_file), worker=Worker(store), settle_s=0,
                **kwargs)
    w.start()
    return w


def test_checkpoint_folders_are_found_in_step_order_with_their_facts(
    tiny_model: Any, tmp_path: Path
) -> None:
    model, tok = tiny_model
    for step in (10, 5):
        save(model, tok, tmp_path / f"checkpoint-{step}", step)
    save(model, tok, tmp_path / "step_15", None)  # another framework: no trainer_state.json
    (tmp_path / "logs").mkdir()
    found = find_checkpoints(tmp_path)
    assert [(c.path.name, c.step, c.complete) for c in found] == [
        ("checkpoint-5", 5, True), ("checkpoint-10", 10, True), ("step_15", 15, True)]
    assert found[0].epoch == 1.25 and found[0].facts["loss"] == 2.5


def test_a_trainer_checkpoint_without_its_state_file_is_not_complete(
    tiny_model: Any, tmp_path: Path
) -> None:
    save(*tiny_model, tmp_path / "checkpoint-5", 5, state=False)
    (ckpt,) = find_checkpoints(tmp_path)
    assert not ckpt.complete and "trainer_state.json" in (ckpt.problem or "")


def test_a_truncated_safetensors_file_is_still_being_written(
    tiny_model: Any, tmp_path: Path
) -> None:
    folder = save(*tiny_model, tmp_path / "checkpoint-5", 5)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    (ckpt,) = find_checkpoints(tmp_path)
    assert ckpt.problem == "model.safetensors is still being written"


def test_a_missing_shard_makes_a_checkpoint_incomplete(tiny_model: Any, tmp_path: Path) -> None:
    folder = tmp_path / "checkpoint-5"
    model, tok = tiny_model
    model.save_pretrained(folder, max_shard_size="100KB")
    tok.save_pretrained(folder)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 5}))
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) > 1
    assert find_checkpoints(tmp_path)[0].complete
    shards[-1].unlink()
    assert "not written yet" in (find_checkpoints(tmp_path)[0].problem or "")


def test_the_weights_hash_follows_the_weights_not_the_optimizer(
    tiny_model: Any, tmp_path: Path
) -> None:
    a = save(*tiny_model, tmp_path / "a", 1)
    b = save(*tiny_model, tmp_path / "b", 1)
    (b / "optimizer.pt").write_bytes(b"optimizer state")
    assert weights_hash(a) == weights_hash(b)
    from predwatch.generation.tiny import build_tiny_model

    other, tok = build_tiny_model(seed=1)
    assert weights_hash(save(other, tok, tmp_path / "c", 1)) != weights_hash(a)


def test_watch_records_each_checkpoint_once_at_its_step_and_continues_after_a_restart(
    tiny_model: Any, tmp_path: Path, sqlite_url: str, samples_file: Path
) -> None:
    model, tok = tiny_model
    out = tmp_path / "out"
    for step in (5, 10):
        save(model, tok, out / f"checkpoint-{step}", step)
    store = open_store(sqlite_url)
    report = watcher(store, out, samples_file).run_once()
    assert report.queued == [5, 10]
    run_id = watch_run_id(out)
    points = store.eval_points(run_id)
    assert [(p.step, p.epoch, p.trigger, p.sample_count) for p in points] == [
        (5, 1.25, "checkpoint", 4), (10, 2.5, "checkpoint", 4)]
    assert points[0].card["trainer_state"]["loss"] == 2.5
    assert points[0].card["backend"] == "hf"
    rows = store.point_predictions(run_id, 5)
    digest = weights_hash(out / "checkpoint-5")
    assert {(r.checkpoint, r.model_revision) for r in rows} == {
        (str(out / "checkpoint-5"), digest)}
    # The same answers as the in-process generator on the same weights (greedy).
    loaded, loaded_tok = load_model(out / "checkpoint-5", device="cpu")
    chosen = select_samples(str(samples_file), 4, 42).samples
    direct = HFGenerator(loaded, loaded_tok).generate(chosen, config(samples_file)
                                                       .generation_params())
    assert [r.prediction for r in rows] == [g.text for g in direct]
    # A restarted watcher knows what was recorded (from the database) and records only new ones.
    save(model, tok, out / "checkpoint-15", 15)
    again = watcher(store, out, samples_file).run_once()
    assert again.queued == [15]
    assert [p.step for p in store.eval_points(run_id)] == [5, 10, 15]
    assert store.job_counts(run_id)["done"] == 3
    store.close()


def test_a_half_written_checkpoint_is_waited_for_then_recorded(
    tiny_model: Any, tmp_path: Path, sqlite_url: str, samples_file: Path
) -> None:
    model, tok = tiny_model
    out = tmp_path / "out"
    folder = save(model, tok, out / "checkpoint-5", 5)
    state = (folder / "trainer_state.json").read_text()
    (folder / "trainer_state.json").unlink()
    weights = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    store = open_store(sqlite_url)
    w = watcher(store, out, samples_file)
    report = w.run_once(timeout=0)
    assert report.queued == [] and "still being written" in report.waiting[str(folder)]
    assert store.eval_points(watch_run_id(out)) == []
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "trainer_state.json").write_text(state)
    assert w.run_once().queued == [5]
    assert [p.step for p in store.eval_points(watch_run_id(out))] == [5]
    store.close()


def test_a_checkpoint_deleted_before_it_was_recorded_fails_its_job_with_the_reason(
    tiny_model: Any, tmp_path: Path, sqlite_url: str, samples_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = tmp_path / "out"
    folder = save(*tiny_model, out / "checkpoint-5", 5)
    store = open_store(sqlite_url)
    run_id = watch_run_id(out)
    w = Watcher(store, out, Run(id=run_id), config(samples_file), settle_s=0)  # no worker
    w.start()
    assert w.scan().queued == [5]
    shutil.rmtree(folder)  # save_total_limit rotated it away
    with caplog.at_level(logging.ERROR, logger="predwatch.recording.worker"):
        job = Worker(store).run_one()
    assert job.status == "failed" and job.attempts == 1
    assert "deleted before it was recorded" in job.error
    assert "deleted before it was recorded" in caplog.text
    assert store.eval_points(run_id) == []
    store.close()


def test_a_final_save_without_state_is_reported_until_its_step_is_given(
    tiny_model: Any, tmp_path: Path, sqlite_url: str, samples_file: Path
) -> None:
    out = save(*tiny_model, tmp_path / "out", None)
    store = open_store(sqlite_url)
    report = watcher(store, out, samples_file).run_once()
    assert report.queued == [] and "--final-step" in report.waiting[str(out)]
    assert watcher(store, out, samples_file, final_step=20).run_once().queued == [20]
    store.close()


def test_an_adapter_checkpoint_is_recorded_on_its_base_model(
    tiny_model: Any, tmp_path: Path, sqlite_url: str, samples_file: Path
) -> None:
    from peft import LoraConfig, get_peft_model

    from predwatch.generation.tiny import build_tiny_model

    base, tok = build_tiny_model(seed=0)
    base_dir = save(base, tok, tmp_path / "base", None)
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights=False))
    out = tmp_path / "out"
    folder = out / "checkpoint-5"
    lora.save_pretrained(folder)  # no tokenizer in it: it comes from the base
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 5, "epoch": 1.0}))
    store = open_store(sqlite_url)
    w = watcher(store, out, samples_file, base_model=str(base_dir))
    assert w.run_once().queued == [5]
    rows = store.point_predictions(watch_run_id(out), 5)
    assert len(rows) == 4 and all(r.error is None for r in rows)
    card = store.eval_points(watch_run_id(out))[0].card
    assert card["adapter_type"] == "LORA" and card["checkpoint_hash"].startswith("sha256:")
    chosen = select_samples(str(samples_file), 4, 42).samples
    direct = HFGenerator(lora.eval(), tok).generate(chosen, config(samples_file)
                                                     .generation_params())
    assert [r.prediction for r in rows] == [g.text for g in direct]
    store.close()


def test_a_job_payload_carries_samples_chosen_in_the_training_process(
    tiny_model: Any, tmp_path: Path, sqlite_url: str
) -> None:
    folder = save(*tiny_model, tmp_path / "checkpoint-3", 3)
    chosen = select_samples(PROMPTS, 2, 7).samples
    store = open_store(sqlite_url)
    cfg = PredictionsConfig.from_dict({"sample_count": 2, "max_new_tokens": 4})
    store.enqueue_job("r", 3, str(folder), epoch=0.75,
                      payload=job_payload(cfg, samples=chosen, run=Run(id="r", name="n")))
    assert Worker(store).run_one().status == "done"
    rows = store.point_predictions("r", 3)
    assert [(r.prompt_id, r.source_index) for r in rows] == [
        (s.prompt_id, s.source_index) for s in chosen]
    assert store.get_run("r").name == "n"
    store.close()


def test_a_job_with_a_bad_config_fails_at_once_with_the_reason(
    tiny_model: Any, tmp_path: Path, sqlite_url: str
) -> None:
    folder = save(*tiny_model, tmp_path / "checkpoint-3", 3)
    store = open_store(sqlite_url)
    store.enqueue_job("r", 3, str(folder), payload={"config": {"sample_count": 2}})  # no prompts
    job = Worker(store).run_one()
    assert (job.status, job.attempts) == ("failed", 1)
    assert job.error.startswith("ConfigError: no prompts to record")
    store.close()


def test_a_job_from_a_run_with_a_short_step_interval_is_recorded_anywhere(
    tiny_model: Any, tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The training machine allowed step_interval 2; the worker's machine has the default limit.
    monkeypatch.setenv("PREDWATCH_MIN_STEP_INTERVAL", "1")
    cfg = PredictionsConfig.from_dict({"sample_count": 2, "max_new_tokens": 4,
                                       "sample_frequency": "steps", "step_interval": 2})
    monkeypatch.delenv("PREDWATCH_MIN_STEP_INTERVAL")
    folder = save(*tiny_model, tmp_path / "checkpoint-2", 2)
    store = open_store(sqlite_url)
    store.enqueue_job("r", 2, str(folder), payload=job_payload(
        cfg, samples=select_samples(PROMPTS, 2, 1).samples, run=Run(id="r")))
    assert Worker(store).run_one().status == "done"
    store.close()


def test_a_job_whose_run_is_deleted_while_it_is_recorded_leaves_the_worker_going(
    tiny_model: Any, tmp_path: Path, sqlite_url: str, samples_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = tmp_path / "out"
    save(*tiny_model, out / "checkpoint-5", 5)
    save(*tiny_model, out / "checkpoint-10", 10)
    store = open_store(sqlite_url)
    w = Watcher(store, out, Run(id="deleted-run"), config(samples_file), settle_s=0)
    w.start()
    assert w.scan().queued == [5, 10]
    store.ensure_run(Run(id="deleted-run"))
    store.enqueue_job("other", 1, str(out / "checkpoint-5"))

    worker = Worker(store)
    original = store.finish_job

    def finish_after_delete(job_id: str, name: str, **kw: Any) -> Any:
        # `predwatch runs delete` while the job was being recorded (its rows are written).
        store.delete_run("deleted-run")
        store.finish_job = original  # type: ignore[method-assign]
        return original(job_id, name, **kw)

    store.finish_job = finish_after_delete  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="predwatch.recording.worker"):
        job = worker.run_one(run_id="deleted-run")  # measured before: NotFound raised
    assert job.run_id == "deleted-run"
    assert "was deleted while worker" in caplog.text
    assert store.list_jobs(run_id="deleted-run") == []  # the step-10 job went with the run
    assert worker.run_one().run_id == "other"  # the worker goes on
    store.close()
