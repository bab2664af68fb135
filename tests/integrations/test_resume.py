"""Resuming a Trainer run from a checkpoint continues the same predwatch run; a step recorded
again is kept as a new attempt with its own card (real Trainer, tiny local model)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
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


def trainer_for(tmp_path: Path, db: str, max_steps: int, *, restore: bool = False,
                extra: list[Any] | None = None) -> tuple[Trainer, PredictionsCallback]:
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
        restore_callback_states_from_checkpoint=restore,
    )
    trainer = Trainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer,
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
                      callbacks=[callback, *(extra or [])])
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


KILLED_AT_STEP_4 = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, sys.argv[1])
    from transformers import TrainerCallback
    from test_resume import trainer_for
    from pathlib import Path

    class KillAfterSave(TrainerCallback):  # as a crash right after checkpoint-4 is written
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 4:
                os._exit(0)  # no train end, no close, no atexit

    trainer, _ = trainer_for(Path(sys.argv[2]), sys.argv[3], max_steps=6,
                             extra=[KillAfterSave()])
    trainer.train()
    sys.exit("not killed")
""")


def test_resume_with_restore_callback_states_continues_the_run_of_a_killed_job(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``TrainingArguments(restore_callback_states_from_checkpoint=True)`` makes the Trainer
    rebuild each stateful callback from the checkpoint (``type(cb)(**args)``): the callback the
    user configured must stay the one in use (its prompts, database and run), not a default one."""
    monkeypatch.setenv("PREDWATCH_MIN_STEP_INTERVAL", "1")
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_AT_STEP_4, str(Path(__file__).parent), str(tmp_path),
         sqlite_url], capture_output=True, text=True, timeout=300, check=False)
    assert killed.returncode == 0, killed.stdout + killed.stderr
    saved = json.loads((tmp_path / "out" / "checkpoint-2" / "trainer_state.json").read_text())
    run_id = saved["stateful_callbacks"]["PredictionsCallback"]["attributes"]["saved_run_id"]

    second, second_cb = trainer_for(tmp_path, sqlite_url, max_steps=6, restore=True)
    second.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-2"))
    assert second_cb in second.callback_handler.callbacks  # still the configured one
    assert [type(cb) for cb in second.callback_handler.callbacks].count(
        PredictionsCallback) == 1
    assert second_cb.recorder.run.id == run_id  # the same run, not a new one
    assert second_cb.recorder.config.sample_count == 2  # its own config, not the defaults

    with open_store(sqlite_url) as store:
        assert [r.id for r in store.list_runs().items] == [run_id]
        assert store.get_run(run_id).status == "finished"
        assert [p.step for p in store.eval_points(run_id)] == [2, 4, 6]
        attempts = store.point_attempts(run_id, 4)
        # The killed job's step 4 (delivered from its spool by the resumed job, or before it
        # died) and the resumed job's: both kept, nothing lost.
        assert [(a.attempt, a.sample_count) for a in attempts] == [(0, 2), (1, 2)]
        assert attempts[0].writer != attempts[1].writer
        assert len(store.point_predictions(run_id, 4)) == 4
        assert len(store.point_predictions(run_id, 2)) == 2
        assert [a.attempt for a in store.point_attempts(run_id, 6)] == [0]
    assert not list((tmp_path / "spool").glob("*.json"))
