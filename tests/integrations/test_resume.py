"""Resuming a Trainer run from a checkpoint continues the same predwatch run; a step recorded
again is kept as a new attempt with its own card (real Trainer, tiny local model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")

from datasets import Dataset  # noqa: E402
from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments  # noqa: E402

from predwatch import PredictionsCallback  # noqa: E402
from predwatch.generation.tiny import build_tiny_model  # noqa: E402
from predwatch.storage import open_store  # noqa: E402

pytestmark = pytest.mark.slow

RAW = [{"prompt": f"n{i} =", "completion": json.dumps({"n": i})} for i in range(16)]


def trainer_for(tmp_path: Path, db: str, max_steps: int) -> tuple[Trainer, PredictionsCallback]:
    model, tokenizer = build_tiny_model(seed=0)

    def tok(batch: dict[str, list[str]]) -> dict[str, Any]:
        texts = [p + " " + c + tokenizer.eos_token
                 for p, c in zip(batch["prompt"], batch["completion"], strict=True)]
        return tokenizer(texts, truncation=True, max_length=32)

    ds = Dataset.from_list(RAW).map(tok, batched=True, remove_columns=["prompt", "completion"])
    callback = PredictionsCallback(
        {"sample_count": 2, "max_new_tokens": 4, "sample_frequency": "steps",
         "step_interval": 2}, dataset=RAW, db=db, spool_dir=str(tmp_path / "spool"),
    )
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, learning_rate=1e-3,
        logging_strategy="no", save_strategy="steps", save_steps=2, report_to=[],
        disable_tqdm=True, use_cpu=True, seed=0, max_steps=max_steps,
    )
    trainer = Trainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer,
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
                      callbacks=[callback])
    return trainer, callback


def test_resume_from_a_checkpoint_continues_the_run_and_keeps_both_attempts(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PREDWATCH_MIN_STEP_INTERVAL", "1")  # record every 2 steps of a tiny run
    first, first_cb = trainer_for(tmp_path, sqlite_url, max_steps=4)
    first.train()  # records steps 2 and 4; checkpoints at 2 and 4
    run_id = first_cb.recorder.run.id
    saved = json.loads((tmp_path / "out" / "checkpoint-2" / "trainer_state.json").read_text())
    assert saved["stateful_callbacks"]["PredictionsCallback"]["attributes"] == {
        "saved_run_id": run_id,
    }

    # As if the job had crashed after step 4: resume from step 2 in a new process's objects.
    second, second_cb = trainer_for(tmp_path, sqlite_url, max_steps=6)
    second.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-2"))
    assert second_cb.recorder.run.id == run_id  # the same run, not a new one

    with open_store(sqlite_url) as store:
        assert [r.id for r in store.list_runs().items] == [run_id]
        assert [p.step for p in store.eval_points(run_id)] == [2, 4, 6]
        attempts = store.point_attempts(run_id, 4)
        assert [(a.attempt, a.sample_count) for a in attempts] == [(0, 2), (1, 2)]
        assert attempts[0].writer != attempts[1].writer
        assert len(store.point_predictions(run_id, 4)) == 4  # nothing dropped
        assert [a.attempt for a in store.point_attempts(run_id, 6)] == [0]
        assert store.eval_point(run_id, 4).attempt == 1  # type: ignore[union-attr]
