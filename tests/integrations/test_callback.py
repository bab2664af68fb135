"""PredictionsCallback in a real ``transformers.Trainer`` run with a tiny local model."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")

from datasets import Dataset  # noqa: E402
from transformers import (  # noqa: E402
    DataCollatorForLanguageModeling,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from predwatch import PredictionsCallback  # noqa: E402
from predwatch.generation.tiny import build_tiny_model  # noqa: E402
from predwatch.storage import open_store  # noqa: E402

RAW = [{"prompt": f"n{i} =", "completion": json.dumps({"n": i})} for i in range(32)]


def make_trainer(
    tmp_path: Path, callback: PredictionsCallback, *extra: Any, **args: Any
) -> Trainer:
    model, tokenizer = build_tiny_model(seed=0)
    tokenizer.padding_side = "right"

    def tok(batch: dict[str, list[str]]) -> dict[str, Any]:
        texts = [p + " " + c + tokenizer.eos_token
                 for p, c in zip(batch["prompt"], batch["completion"], strict=True)]
        return tokenizer(texts, truncation=True, max_length=32)

    ds = Dataset.from_list(RAW).map(tok, batched=True, remove_columns=["prompt", "completion"])
    defaults: dict[str, Any] = dict(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, learning_rate=1e-3,
        logging_strategy="no", save_strategy="no", report_to=[], disable_tqdm=True,
        use_cpu=True, seed=0,
    )
    defaults.update(args)
    return Trainer(
        model=model, args=TrainingArguments(**defaults), train_dataset=ds,
        eval_dataset=ds.select(range(8)),
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        processing_class=tokenizer, callbacks=[callback, *extra],
    )


def callback_for(db: str, tmp_path: Path, **config: Any) -> PredictionsCallback:
    return PredictionsCallback(
        {"sample_count": 3, "max_new_tokens": 6, **config}, dataset=RAW, db=db,
        spool_dir=str(tmp_path / "spool"),
    )


def points(db: str, run_id: str) -> list[tuple[int, float | None, str]]:
    store = open_store(db)
    try:
        return [(p.step, p.epoch, p.trigger) for p in store.eval_points(run_id)]
    finally:
        store.close()


def test_eval_frequency_records_after_each_evaluation(sqlite_url: str, tmp_path: Path) -> None:
    cb = callback_for(sqlite_url, tmp_path, sample_frequency="eval")
    trainer = make_trainer(tmp_path, cb, max_steps=10, eval_strategy="steps", eval_steps=5)
    tokenizer = trainer.processing_class
    trainer.train()
    got = points(sqlite_url, cb.recorder.run.id)
    # 32 rows / batch 8 = 4 steps per epoch: epoch is a float, never truncated
    assert got == [(5, 1.25, "eval"), (10, 2.5, "eval")]
    assert tokenizer.padding_side == "right"  # the trainer's tokenizer is untouched
    store = open_store(sqlite_url)
    rows = store.list_predictions(cb.recorder.run.id).items
    assert len(rows) == 6 and all(r.completion_tokens is not None for r in rows)
    run = store.get_run(cb.recorder.run.id)
    assert run.status == "finished" and run.config["training_args"]["eval_steps"] == 5
    store.close()


def test_epoch_frequency_records_at_each_epoch_end(sqlite_url: str, tmp_path: Path) -> None:
    cb = callback_for(sqlite_url, tmp_path, sample_frequency="epoch")
    make_trainer(tmp_path, cb, num_train_epochs=2).train()
    assert points(sqlite_url, cb.recorder.run.id) == [(4, 1.0, "epoch"), (8, 2.0, "epoch")]


def test_steps_frequency_records_every_interval(sqlite_url: str, tmp_path: Path) -> None:
    cb = callback_for(sqlite_url, tmp_path, sample_frequency="steps", step_interval=10)
    modes: list[bool] = []

    class Probe(TrainerCallback):  # runs right after predwatch's callback
        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None,
                        **kwargs: Any) -> None:
            if state.global_step % 10 == 0:
                modes.append(model.training)

    make_trainer(tmp_path, cb, Probe(), max_steps=20).train()
    assert modes == [True, True]  # generation restored the training mode
    assert [p[:1] + p[2:] for p in points(sqlite_url, cb.recorder.run.id)] == [
        (10, "steps"), (20, "steps")
    ]


def test_eval_frequency_without_evaluation_warns_loudly(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cb = callback_for(sqlite_url, tmp_path, sample_frequency="eval")
    with caplog.at_level(logging.WARNING, logger="predwatch"):
        make_trainer(tmp_path, cb, max_steps=2, eval_strategy="no").train()
    assert "evaluation is off" in caplog.text and "NOTHING will be recorded" in caplog.text


def test_only_the_main_process_records(sqlite_url: str, tmp_path: Path) -> None:
    cb = callback_for(sqlite_url, tmp_path, sample_frequency="epoch")
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    state = TrainerState(is_world_process_zero=False)
    cb.on_train_begin(args, state, TrainerControl())
    state.global_step, state.epoch = 4, 1.0
    cb.on_epoch_end(args, state, TrainerControl())
    assert cb.recorder.summaries == []
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()


def test_other_ranks_do_not_record_an_evaluation_before_training(
    sqlite_url: str, tmp_path: Path
) -> None:
    """``trainer.evaluate()`` before ``train()``: on_evaluate comes before on_train_begin."""
    cb = callback_for(sqlite_url, tmp_path, sample_frequency="eval")
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    state = TrainerState(is_world_process_zero=False)
    model, tokenizer = build_tiny_model(seed=0)
    cb.on_evaluate(args, state, TrainerControl(), model=model, processing_class=tokenizer)
    cb.on_train_end(args, state, TrainerControl())
    assert cb.recorder.summaries == []
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()


def test_a_broken_destination_never_stops_training(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    cb = callback_for(f"sqlite:///{blocker}/x.db", tmp_path, sample_frequency="epoch")
    trainer = make_trainer(tmp_path, cb, num_train_epochs=1)
    with caplog.at_level(logging.ERROR, logger="predwatch"):
        trainer.train()  # must not raise
    assert trainer.state.global_step == 4
    # Set-up happens on the delivery thread: it fails there, loudly, and the points wait in
    # the spool (counted at the end of training).
    assert "opening run" in caplog.text and "NOT delivered" in caplog.text
