"""predwatch's summary inside the Trainer's own logs: log_history, best model, early stopping,
TensorBoard event files, and evaluate() before and after train(). Real Trainer runs (slow)."""

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
    EarlyStoppingCallback,
    Trainer,
    TrainingArguments,
)

from predwatch import PredictionsCallback  # noqa: E402
from predwatch.generation.tiny import build_tiny_model  # noqa: E402
from predwatch.storage import open_store  # noqa: E402

pytestmark = pytest.mark.slow

RAW = [{"prompt": f"n{i} =", "completion": json.dumps({"n": i})} for i in range(32)]
JSON_VALID = "eval_predwatch_json_valid_rate"


def make_trainer(tmp_path: Path, callbacks: list[Any], **args: Any) -> Trainer:
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
        eval_dataset=ds.select(range(4)),
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        processing_class=tokenizer, callbacks=callbacks,
    )


def callback(db: str, tmp_path: Path, **config: Any) -> PredictionsCallback:
    return PredictionsCallback(
        {"sample_count": 3, "max_new_tokens": 6, "validators": {"json_parse": True}, **config},
        dataset=RAW, db=db, spool_dir=str(tmp_path / "spool"),
    )


def eval_entries(trainer: Trainer) -> list[dict[str, Any]]:
    return [e for e in trainer.state.log_history if "eval_runtime" in e]


def test_every_evaluation_carries_predwatch_metrics_matching_the_stored_rows(
    sqlite_url: str, tmp_path: Path
) -> None:
    cb = callback(sqlite_url, tmp_path, sample_frequency="eval")
    trainer = make_trainer(tmp_path, [cb], max_steps=8, eval_strategy="steps", eval_steps=4)
    trainer.train()
    entries = eval_entries(trainer)
    assert [e["step"] for e in entries] == [4, 8]
    with open_store(sqlite_url) as store:
        for entry in entries:
            rows = store.list_predictions(cb.recorder.run.id, step=entry["step"]).items
            assert len(rows) == 3
            ems = [r.exact_match for r in rows]
            assert entry["eval_predwatch_exact_match"] == pytest.approx(sum(ems) / len(ems))
            cers = [r.char_error_rate for r in rows]
            assert entry["eval_predwatch_char_error_rate"] == pytest.approx(sum(cers) / 3)
            f1s = [r.metrics["token_f1"] for r in rows]
            assert entry["eval_predwatch_token_f1"] == pytest.approx(sum(f1s) / 3)
            passed = sum(bool(r.validation_pass) for r in rows)
            assert entry["eval_predwatch_validation_pass_rate"] == pytest.approx(passed / 3)
            assert entry["eval_predwatch_json_parse_pass_rate"] == pytest.approx(passed / 3)
            assert entry[JSON_VALID] == pytest.approx(passed / 3)
            assert entry["eval_predwatch_validation_failures"] == 3 - passed
            assert entry["eval_predwatch_failed_samples"] == 0
            assert entry["eval_predwatch_sample_count"] == 3
            assert "eval_predwatch_url" not in entry  # no server: no link


def test_the_best_checkpoint_and_early_stopping_follow_a_predwatch_metric(
    sqlite_url: str, tmp_path: Path
) -> None:
    cb = callback(sqlite_url, tmp_path, sample_frequency="eval")
    trainer = make_trainer(
        tmp_path, [cb, EarlyStoppingCallback(early_stopping_patience=2)], max_steps=16,
        eval_strategy="steps", eval_steps=4, save_strategy="steps", save_steps=4,
        metric_for_best_model=JSON_VALID, greater_is_better=True, load_best_model_at_end=True,
    )
    trainer.train()
    values = [(e["step"], e[JSON_VALID]) for e in eval_entries(trainer)]
    # What the Trainer must have done with these values: the first strictly best point wins,
    # and training stops after 2 evaluations without improvement.
    best_step, best, stale, stopped_at = None, float("-inf"), 0, None
    for step, value in values:
        if value > best:
            best_step, best, stale = step, value, 0
        else:
            stale += 1
            if stale >= 2:
                stopped_at = step
                break
    assert trainer.state.best_metric == best
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{best_step}")
    assert trainer.state.global_step == (stopped_at or 16)
    assert values[-1][0] == trainer.state.global_step


def test_a_point_that_records_nothing_never_breaks_best_model_selection(
    tmp_path: Path, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The prompts cannot be read: recording is switched off, and the metric the Trainer picks
    # the best checkpoint by is -inf rather than a KeyError inside the Trainer.
    cb = callback(sqlite_url, tmp_path, sample_frequency="eval",
                  samples_path=str(tmp_path / "missing.jsonl"))
    trainer = make_trainer(
        tmp_path, [cb], max_steps=4, eval_strategy="steps", eval_steps=4,
        save_strategy="steps", save_steps=4, metric_for_best_model=JSON_VALID,
    )
    with caplog.at_level(logging.ERROR, logger="predwatch"):
        trainer.train()
    assert trainer.state.global_step == 4
    assert eval_entries(trainer)[0][JSON_VALID] == float("-inf")
    assert "cannot be chosen as the best" in caplog.text


def test_a_broken_destination_still_gives_the_trainer_its_metrics(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The database cannot be created: the point is still generated, scored and spooled (the
    # delivery thread reports the destination), so the Trainer gets real numbers.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    cb = callback(f"sqlite:///{blocker}/x.db", tmp_path, sample_frequency="eval")
    trainer = make_trainer(
        tmp_path, [cb], max_steps=4, eval_strategy="steps", eval_steps=4,
        save_strategy="steps", save_steps=4, metric_for_best_model=JSON_VALID,
    )
    with caplog.at_level(logging.ERROR, logger="predwatch"):
        trainer.train()
    assert trainer.state.global_step == 4
    assert eval_entries(trainer)[0][JSON_VALID] == 0.0  # the tiny model writes no JSON
    assert "every evaluation point is kept in" in caplog.text


def test_epoch_points_are_logged_beside_the_loss(sqlite_url: str, tmp_path: Path) -> None:
    cb = callback(sqlite_url, tmp_path, sample_frequency="epoch")
    trainer = make_trainer(tmp_path, [cb], num_train_epochs=2, logging_strategy="epoch")
    trainer.train()
    logged = [e for e in trainer.state.log_history if "predwatch_exact_match" in e]
    assert [(e["step"], e["epoch"]) for e in logged] == [(4, 1.0), (8, 2.0)]
    assert all("predwatch_json_valid_rate" in e for e in logged)
    assert any("loss" in e for e in trainer.state.log_history)


def test_tensorboard_event_files_hold_the_predwatch_metrics(
    sqlite_url: str, tmp_path: Path
) -> None:
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    cb = callback(sqlite_url, tmp_path, sample_frequency="eval")
    trainer = make_trainer(tmp_path, [cb], max_steps=8, eval_strategy="steps", eval_steps=4,
                           report_to=["tensorboard"], logging_strategy="steps", logging_steps=4)
    trainer.train()
    files = list((tmp_path / "out").rglob("events.out.tfevents.*"))
    assert files, "TensorBoard wrote no event file"
    accumulator = event_accumulator.EventAccumulator(str(files[0].parent))
    accumulator.Reload()
    tags = accumulator.Tags()["scalars"]
    assert {"eval/predwatch_exact_match", "eval/predwatch_json_valid_rate",
            "eval/predwatch_char_error_rate", "eval/loss", "train/loss"} <= set(tags)
    logged = {e["step"]: e[JSON_VALID] for e in eval_entries(trainer)}
    charted = {s.step: s.value for s in accumulator.Scalars("eval/predwatch_json_valid_rate")}
    assert charted == pytest.approx(logged)


def test_evaluate_after_train_records_and_returns_the_metrics(
    sqlite_url: str, tmp_path: Path
) -> None:
    cb = callback(sqlite_url, tmp_path, sample_frequency="eval")
    trainer = make_trainer(tmp_path, [cb], max_steps=4, eval_strategy="no")
    trainer.train()
    metrics = trainer.evaluate()
    assert 0 <= metrics[JSON_VALID] <= 1 and "eval_predwatch_exact_match" in metrics
    run_id = cb.recorder.run.id
    with open_store(sqlite_url) as store:
        assert [(p.step, p.trigger) for p in store.eval_points(run_id)] == [(4, "eval")]
        assert store.get_run(run_id).status == "finished"
    again = trainer.evaluate()  # same step: not recorded twice, the metrics still come
    assert again[JSON_VALID] == metrics[JSON_VALID]
    with open_store(sqlite_url) as store:
        assert len(store.eval_points(run_id)) == 1


def test_evaluate_before_train_keeps_the_runs_training_args_and_model_name(
    sqlite_url: str, tmp_path: Path
) -> None:
    cb = callback(sqlite_url, tmp_path, sample_frequency="epoch")
    trainer = make_trainer(tmp_path, [cb], num_train_epochs=1)
    baseline = trainer.evaluate()
    assert "eval_predwatch_exact_match" in baseline
    trainer.train()
    with open_store(sqlite_url) as store:
        run = store.get_run(cb.recorder.run.id)
        points = [(p.step, p.trigger) for p in store.eval_points(run.id)]
    assert points == [(0, "eval"), (4, "epoch")]
    assert run.model_name == "LlamaForCausalLM" or run.model_name
    assert run.config["training_args"]["num_train_epochs"] == 1
    assert run.config["training_args"]["learning_rate"] == 1e-3


def test_with_a_server_each_point_links_to_its_page_in_the_ui(tmp_path: Path) -> None:
    httpx = pytest.importorskip("httpx")
    from predwatch.testing import start_server

    with start_server(f"sqlite:///{tmp_path / 'server.db'}") as server:
        cb = PredictionsCallback(
            {"sample_count": 2, "max_new_tokens": 4, "sample_frequency": "epoch"},
            dataset=RAW, server_url=server.url, spool_dir=str(tmp_path / "spool"),
        )
        trainer = make_trainer(tmp_path, [cb], num_train_epochs=1)
        trainer.train()
        (logged,) = [e for e in trainer.state.log_history if "predwatch_url" in e]
        run_id = cb.recorder.run.id
        assert logged["predwatch_url"] == f"{server.url}/runs/{run_id}?step=4"
        page = httpx.get(logged["predwatch_url"], timeout=30)
        assert page.status_code == 200 and "step 4" in page.text.lower()
        # An evaluate() after train() goes to the same run on the server, with its link.
        metrics = trainer.evaluate()
        assert metrics["eval_predwatch_url"] == f"{server.url}/runs/{run_id}?step=4"


def test_early_stopping_listed_first_is_warned_about(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cb = callback(sqlite_url, tmp_path, sample_frequency="eval")
    trainer = make_trainer(
        tmp_path, [EarlyStoppingCallback(early_stopping_patience=1), cb], max_steps=1,
        eval_strategy="steps", eval_steps=1, save_strategy="steps", save_steps=1,
        metric_for_best_model=JSON_VALID, load_best_model_at_end=True,
    )
    with caplog.at_level(logging.WARNING, logger="predwatch"):
        trainer.train()
    assert "EarlyStoppingCallback comes before PredictionsCallback" in caplog.text
