"""``predwatch watch`` / ``worker`` / ``jobs list`` as users run them: beside a real Trainer run
with no callback, started mid-training, several workers on one PostgreSQL queue, a worker
killed with SIGKILL mid-job. Every subprocess has a hard timeout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")

from predwatch.config import PredictionsConfig  # noqa: E402
from predwatch.recording.watcher import watch_run_id  # noqa: E402
from predwatch.recording.worker import job_payload  # noqa: E402
from predwatch.records import Run  # noqa: E402
from predwatch.storage import open_store  # noqa: E402
from predwatch.testing import predwatch_command  # noqa: E402

pytestmark = pytest.mark.slow

RAW = [{"prompt": f"n{i} =", "completion": json.dumps({"n": i})} for i in range(32)]
SRC = str(Path(__file__).resolve().parents[2] / "src")

# A plain Trainer run: no predwatch anywhere. SLOW_SAVE makes each save take a while, so a
# watcher can be started while training is still going.
TRAIN = textwrap.dedent("""
    import json, sys, time
    from datasets import Dataset
    from transformers import (DataCollatorForLanguageModeling, Trainer, TrainerCallback,
                              TrainingArguments)
    from predwatch.generation.tiny import build_tiny_model

    out, steps, save_steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    pause = float(sys.argv[4])
    raw = [{"text": f"n{i} = " + json.dumps({"n": i})} for i in range(32)]
    model, tok = build_tiny_model(seed=0)
    ds = Dataset.from_list(raw).map(lambda b: tok([t + tok.eos_token for t in b["text"]]),
                                    batched=True, remove_columns=["text"])

    class Slow(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            time.sleep(pause)

    args = TrainingArguments(output_dir=out, max_steps=steps, save_steps=save_steps,
                             save_strategy="steps", per_device_train_batch_size=8,
                             learning_rate=1e-3, report_to=[], disable_tqdm=True, use_cpu=True,
                             logging_steps=1, seed=0)
    Trainer(model=model, args=args, train_dataset=ds, processing_class=tok,
            data_collator=DataCollatorForLanguageModeling(tok, mlm=False),
            callbacks=[Slow()]).train()
""")


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def train(out: Path, steps: int, save_steps: int, pause: float = 0.0) -> subprocess.Popen[bytes]:
    """The training script in a subprocess; its output goes to ``out``'s sibling log file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with (out.parent / "train.log").open("wb") as log:
        return subprocess.Popen([sys.executable, "-c", TRAIN, str(out), str(steps),
                                 str(save_steps), str(pause)], env=env(), stdout=log,
                                stderr=subprocess.STDOUT)


def predwatch(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(predwatch_command(*args), env=env(), capture_output=True, text=True,
                          timeout=timeout)


def config_file(tmp_path: Path, **extra: Any) -> Path:
    samples = tmp_path / "prompts.jsonl"
    samples.write_text("\n".join(json.dumps(r) for r in RAW) + "\n")
    path = tmp_path / "predictions.json"
    path.write_text(json.dumps({"sample_count": 3, "max_new_tokens": 6,
                                "samples_path": str(samples), **extra}))
    return path


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.5)


def test_watch_once_records_every_checkpoint_of_a_trainer_run_without_a_callback(
    tmp_path: Path, sqlite_url: str
) -> None:
    out = tmp_path / "out"
    trainer = train(out, steps=8, save_steps=4)
    assert trainer.wait(300) == 0, (tmp_path / "train.log").read_text()
    done = predwatch("watch", str(out), "--once", "--db", sqlite_url, "--settle", "0",
                     "--config", str(config_file(tmp_path)), "--run-name", "plain")
    assert done.returncode == 0, done.stderr
    assert "2 done, 0 failed" in done.stdout
    run_id = watch_run_id(out)
    with open_store(sqlite_url) as store:
        points = store.eval_points(run_id)
        assert [(p.step, p.epoch, p.trigger, p.sample_count) for p in points] == [
            (4, 1.0, "checkpoint", 3), (8, 2.0, "checkpoint", 3)]
        assert isinstance(points[0].card["trainer_state"]["loss"], float)
        assert store.get_run(run_id).name == "plain"
    listed = predwatch("jobs", "list", "--db", sqlite_url, "--run", run_id, "--json")
    jobs = json.loads(listed.stdout)
    assert jobs["counts"] == {"pending": 0, "running": 0, "done": 2, "failed": 0}
    # Run again: everything is known from the database; nothing is recorded twice.
    again = predwatch("watch", str(out), "--once", "--db", sqlite_url, "--settle", "0",
                      "--config", str(config_file(tmp_path)))
    assert again.returncode == 0 and "2 done" in again.stdout


def test_watch_records_the_same_answers_the_callback_records_inline(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.integrations.test_callback import callback_for, make_trainer

    monkeypatch.setenv("PREDWATCH_MIN_STEP_INTERVAL", "1")

    cb = callback_for(sqlite_url, tmp_path, sample_frequency="steps", step_interval=4)
    make_trainer(tmp_path, cb, max_steps=8, save_strategy="steps", save_steps=4).train()
    out = tmp_path / "out"
    done = predwatch("watch", str(out), "--once", "--db", sqlite_url, "--settle", "0",
                     "--config", str(config_file(tmp_path)))
    assert done.returncode == 0, done.stderr
    with open_store(sqlite_url) as store:
        for step in (4, 8):
            inline = store.point_predictions(cb.recorder.run.id, step)
            watched = store.point_predictions(watch_run_id(out), step)
            assert [(r.prompt_id, r.prediction) for r in watched] == [
                (r.prompt_id, r.prediction) for r in inline]
            assert {r.trigger for r in watched} == {"checkpoint"}


def test_a_watcher_started_mid_training_records_every_checkpoint(
    tmp_path: Path, sqlite_url: str
) -> None:
    out = tmp_path / "out"
    trainer = train(out, steps=12, save_steps=2, pause=1.0)
    watcher = None
    try:
        wait_until(lambda: (out / "checkpoint-2" / "trainer_state.json").exists(), 300,
                   "the first checkpoint")
        watcher = subprocess.Popen(
            predwatch_command("watch", str(out), "--db", sqlite_url, "--settle", "0.5",
                              "--poll", "0.5", "--config", str(config_file(tmp_path))),
            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert trainer.wait(300) == 0
        steps = [2, 4, 6, 8, 10, 12]

        def recorded() -> bool:
            with open_store(sqlite_url) as store:
                return [p.step for p in store.eval_points(watch_run_id(out))] == steps
        wait_until(recorded, 300, "every checkpoint to be recorded")
    finally:
        trainer.kill()
        trainer.wait(30)
        if watcher is not None:
            watcher.send_signal(signal.SIGINT)
            try:
                watcher.wait(30)
            except subprocess.TimeoutExpired:
                watcher.kill()
                watcher.wait(10)
    with open_store(sqlite_url) as store:
        assert store.job_counts(watch_run_id(out))["done"] == 6


def saved_checkpoints(tmp_path: Path, steps: list[int]) -> list[Path]:
    from predwatch.generation.tiny import build_tiny_model

    model, tok = build_tiny_model(seed=0)
    folders = []
    for step in steps:
        folder = tmp_path / "out" / f"checkpoint-{step}"
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        folders.append(folder)
    return folders


def enqueue(db: str, folders: list[Path], **config: Any) -> None:
    from predwatch.sampling import select_samples

    cfg = PredictionsConfig.from_dict({"sample_count": 3, "max_new_tokens": 6, **config})
    samples = select_samples(RAW, cfg.sample_count, cfg.seed).samples
    with open_store(db) as store:
        for folder in folders:
            store.enqueue_job("queued", int(folder.name.split("-")[1]), str(folder),
                              payload=job_payload(cfg, samples=samples, run=Run(id="queued")))


@pytest.mark.postgres
def test_two_workers_on_one_postgresql_queue_never_record_a_job_twice(
    tmp_path: Path, postgres_url: str
) -> None:
    enqueue(postgres_url, saved_checkpoints(tmp_path, [1, 2, 3, 4, 5, 6]))
    workers = [subprocess.Popen(predwatch_command("worker", "--db", postgres_url, "--once"),
                                env=env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers)
    processed = [int(o.split()[1]) for o in outputs]  # "processed N job(s)"
    with open_store(postgres_url) as store:
        jobs = store.list_jobs(run_id="queued")
        assert sum(processed) == 6
        assert [(j.status, j.attempts) for j in jobs] == [("done", 1)] * 6
        assert [p.sample_count for p in store.eval_points("queued")] == [3] * 6
        assert len(store.list_predictions("queued", limit=100).items) == 18


def test_a_worker_killed_mid_job_leaves_it_to_be_retried_without_duplicate_rows(
    tmp_path: Path, sqlite_url: str
) -> None:
    # Long answers from a random model, one at a time: the job runs for seconds.
    enqueue(sqlite_url, saved_checkpoints(tmp_path, [5]), max_new_tokens=400, batch_size=1,
            sample_count=3)
    victim = subprocess.Popen(predwatch_command("worker", "--db", sqlite_url, "--lease", "5",
                                                "--poll", "0.2"),
                              env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def running() -> bool:
            with open_store(sqlite_url) as store:
                return store.job_counts("queued")["running"] == 1
        wait_until(running, 120, "the worker to claim the job")
        victim.send_signal(signal.SIGKILL)
        victim.wait(30)
    finally:
        victim.kill()
        victim.wait(30)
    with open_store(sqlite_url) as store:
        (job,) = store.list_jobs(run_id="queued")
        assert job.status == "running" and store.eval_points("queued") == []

    def recovered() -> bool:
        predwatch("worker", "--db", sqlite_url, "--once", "--lease", "5")
        with open_store(sqlite_url) as store:
            return store.job_counts("queued")["done"] == 1
    wait_until(recovered, 300, "the job to be retried after its lease lapsed")
    with open_store(sqlite_url) as store:
        (job,) = store.list_jobs(run_id="queued")
        assert job.attempts == 2
        assert len(store.point_predictions("queued", 5)) == 3


def test_watch_can_send_rows_to_a_predwatch_server(tmp_path: Path, sqlite_url: str) -> None:
    from predwatch.testing import start_server

    saved_checkpoints(tmp_path, [3, 6])
    out = tmp_path / "out"
    queue = f"sqlite:///{tmp_path / 'queue.db'}"
    with start_server(sqlite_url) as server:
        done = predwatch("watch", str(out), "--once", "--server", server.url, "--queue", queue,
                         "--settle", "0", "--config", str(config_file(tmp_path)))
    assert done.returncode == 0, done.stderr
    with open_store(sqlite_url) as store:
        assert [(p.step, p.sample_count) for p in store.eval_points(watch_run_id(out))] == [
            (3, 3), (6, 3)]
    with open_store(queue) as jobs:
        assert jobs.job_counts() == {"pending": 0, "running": 0, "done": 2, "failed": 0}
