"""``regenerate``: an answer recorded during a real ``Trainer`` run is reproduced exactly from the
checkpoint saved at that step, sampling included (it is seeded per batch)."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("transformers")

from click.testing import CliRunner  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments  # noqa: E402

from predwatch import PredictionsCallback  # noqa: E402
from predwatch.cli import main  # noqa: E402
from predwatch.errors import NotFound  # noqa: E402
from predwatch.generation.tiny import build_tiny_model  # noqa: E402
from predwatch.repro.regenerate import regenerate  # noqa: E402
from predwatch.storage import open_store  # noqa: E402

RAW = [{"prompt": f"n{i} =", "completion": json.dumps({"n": i})} for i in range(16)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 4-step run that records sampled answers at steps 2 and 4 and saves a checkpoint at each."""
    tmp = tmp_path_factory.mktemp("regen")
    db = f"sqlite:///{tmp / 'p.db'}"
    model, tokenizer = build_tiny_model(seed=0)
    data = Dataset.from_list(RAW).map(
        lambda b: tokenizer([p + " " + c + tokenizer.eos_token
                             for p, c in zip(b["prompt"], b["completion"], strict=True)]),
        batched=True, remove_columns=["prompt", "completion"],
    )
    callback = PredictionsCallback(
        {"sample_count": 4, "sample_frequency": "eval", "max_new_tokens": 8, "batch_size": 2,
         "do_sample": True, "temperature": 1.0, "seed": 3},
        dataset=RAW, db=db, spool_dir=str(tmp / "spool"),
    )
    args = TrainingArguments(
        output_dir=str(tmp / "out"), per_device_train_batch_size=8, max_steps=4,
        learning_rate=1e-3, eval_strategy="steps", eval_steps=2, save_strategy="steps",
        save_steps=2, logging_strategy="no", report_to=[], disable_tqdm=True, use_cpu=True,
        seed=0,
    )
    Trainer(
        model=model, args=args, train_dataset=data, eval_dataset=data.select(range(4)),
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        processing_class=tokenizer, callbacks=[callback],
    ).train()
    return {"db": db, "run": callback.recorder.run.id, "out": tmp / "out"}


def test_a_sampled_answer_is_reproduced_from_the_checkpoint_of_its_step(
    trained: dict[str, Any],
) -> None:
    with open_store(trained["db"]) as store:
        rows = store.point_predictions(trained["run"], 2)
        target = rows[-1]
        assert target.checkpoint == str(trained["out"] / "checkpoint-2")
        assert target.prediction != ""
        result = regenerate(store, trained["run"], 2, target.prompt_id, target.checkpoint)
        assert result.matches, result.diff
        assert result.regenerated == target.prediction and result.warnings == []
        assert result.prompt_count == 4 and result.params["seed"] == 3  # two batches of two

        alone = regenerate(store, trained["run"], 2, target.prompt_id,
                           trained["out"] / "checkpoint-4", whole_point=False)
        assert alone.prompt_count == 1
        assert alone.warnings == [f"the answer was recorded with checkpoint {target.checkpoint}"]

        with pytest.raises(NotFound):
            regenerate(store, trained["run"], 2, "no-such-prompt", target.checkpoint)


def test_the_regenerate_command_says_whether_the_answer_matches(trained: dict[str, Any]) -> None:
    with open_store(trained["db"]) as store:
        target = store.point_predictions(trained["run"], 4)[0]
    db = trained["db"].removeprefix("sqlite:///")
    result = CliRunner().invoke(main, [
        "regenerate", "--run", trained["run"], "--step", "4", "--prompt-id", target.prompt_id,
        "--model", str(trained["out"] / "checkpoint-4"), "--db", db,
    ])
    assert result.exit_code == 0, result.output
    assert "MATCH" in result.output
