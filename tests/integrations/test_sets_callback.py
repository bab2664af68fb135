"""A set imported into the database, then a real tiny-model ``Trainer`` run with ``source: set``:
every row names its set, version and item, and carries the item's own validator results."""

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
from predwatch.sets.stored import import_set  # noqa: E402
from predwatch.storage import open_store  # noqa: E402

GOLDEN = [
    {"id": "n1", "prompt": "n1 =", "completion": '{"n": 1}',
     "validators": [{"kind": "length", "max_chars": 0, "name": "empty"}], "tags": ["json"]},
    {"prompt": "n2 =", "completion": '{"n": 2}', "validators": {"kind": "json_parse"}},
    {"messages": [{"role": "user", "content": "n3 ="}, {"role": "assistant", "content": "{}"}]},
]


def trainer_with(callback: PredictionsCallback, tmp_path: Path) -> Trainer:
    model, tokenizer = build_tiny_model(seed=0)
    texts = [f"n{i} = {json.dumps({'n': i})}{tokenizer.eos_token}" for i in range(16)]
    data = Dataset.from_dict({"text": texts}).map(
        lambda b: tokenizer(b["text"], truncation=True, max_length=24), batched=True,
        remove_columns=["text"],
    )
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, max_steps=4,
        eval_strategy="steps", eval_steps=2, save_strategy="no", logging_strategy="no",
        report_to=[], disable_tqdm=True, use_cpu=True, seed=0,
    )
    return Trainer(
        model=model, args=args, train_dataset=data, eval_dataset=data.select(range(4)),
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        processing_class=tokenizer, callbacks=[callback],
    )


def test_a_trainer_run_on_a_set_records_set_version_item_and_item_validators(
    sqlite_url: str, tmp_path: Path
) -> None:
    golden = tmp_path / "golden.jsonl"
    golden.write_text("".join(json.dumps(r) + "\n" for r in GOLDEN), encoding="utf-8")
    with open_store(sqlite_url) as store:
        version, _ = import_set(store, golden)
        _, items = store.list_set_items("golden")

    callback = PredictionsCallback(
        {"source": "set", "set": "golden", "sample_frequency": "eval", "max_new_tokens": 4,
         "validators": {"rules": [{"kind": "not_truncated"}]}},
        db=sqlite_url, spool_dir=str(tmp_path / "spool"),
    )
    trainer_with(callback, tmp_path).train()

    with open_store(sqlite_url) as store:
        run_id = callback.recorder.run.id
        rows = store.list_predictions(run_id, limit=100).items
        points = store.eval_points(run_id)
    assert [p.step for p in points] == [2, 4]
    assert len(rows) == 2 * len(GOLDEN)  # a set runs in full when sample_count is not given
    by_item = {(r.step, r.item_id): r for r in rows}
    assert set(by_item) == {(s, i.item_id) for s in (2, 4) for i in items}
    for row in rows:
        assert (row.sample_source, row.sample_source_id) == ("set", "golden")
        assert (row.set_id, row.set_version) == (version.set_id, 1)
        assert row.validation_results[0].validator == "not_truncated"  # the run's own first

    n1 = by_item[(2, "n1")]
    assert n1.prompt_id == "n1"  # an item's own id is its prompt id
    assert [r.name or r.validator for r in n1.validation_results] == ["not_truncated", "empty"]
    empty = n1.validation_results[1]
    assert empty.passed is (n1.prediction == "")
    n2 = next(r for r in rows if r.step == 2 and r.prompt == "n2 =")
    assert [r.validator for r in n2.validation_results] == ["not_truncated", "json_parse"]
    n3 = next(r for r in rows if r.step == 2 and r.messages is not None)
    assert [r.validator for r in n3.validation_results] == ["not_truncated"]
    assert n3.ground_truth == "{}"

    card: dict[str, Any] = points[0].card
    assert card["generation_config"]["max_new_tokens"] == 4
    assert card["generation_config"]["seed"] == 42
    assert card["world_size"] == 1 and card["max_steps"] == 4 and card["elapsed_seconds"] > 0
