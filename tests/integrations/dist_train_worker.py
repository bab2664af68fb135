"""Training jobs that record with predwatch, run by ``test_distributed_*.py`` under real launchers.

Usage: dist_train_worker.py MODE WORKDIR (the working directory is WORKDIR).

- ``trainer`` (``torchrun``): a ``Trainer`` (DDP, gloo, ``use_cpu``) with ``PredictionsCallback``:
  an ``evaluate()`` before training (step 0) and a point at the epoch end; rank 0 saves the final
  model to WORKDIR/final and writes WORKDIR/result.json.
- ``accelerate`` (``accelerate launch``, 1 or 2 processes): the README's custom-loop snippet,
  verbatim, inside an Accelerate loop (``accelerator.prepare`` wraps the model in DDP under 2).
- ``accelerate-bf16``: the same loop with ``mixed_precision="bf16"``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

RAW = [{"prompt": f"question {i}: what is {i} plus {i}?", "completion": f"{2 * i}"}
       for i in range(16)]


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def write_result(workdir: Path, data: dict[str, Any]) -> None:
    (workdir / f"result-{rank()}.json").write_text(json.dumps(data), encoding="utf-8")


def trainer_job(workdir: Path) -> None:
    from datasets import Dataset
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from predwatch import PredictionsCallback
    from predwatch.generation.tiny import build_tiny_model

    model, tokenizer = build_tiny_model(seed=0)
    tokenizer.padding_side = "right"

    def tok(batch: dict[str, list[str]]) -> dict[str, Any]:
        texts = [p + " " + c + tokenizer.eos_token
                 for p, c in zip(batch["prompt"], batch["completion"], strict=True)]
        return dict(tokenizer(texts, truncation=True, max_length=32))

    ds = Dataset.from_list(RAW).map(tok, batched=True, remove_columns=["prompt", "completion"])
    callback = PredictionsCallback(
        {"sample_count": 5, "max_new_tokens": 8, "sample_frequency": "eval", "batch_size": 2},
        dataset=RAW, db=f"sqlite:///{workdir / 'predwatch.db'}",
        spool_dir=str(workdir / "spool"),
    )
    # A checkpoint at every point, to answer its prompts again in one process. (No evaluate()
    # before train(): under transformers 5.23 it leaves the model out of DDP, each rank then
    # training on its own.)
    args = TrainingArguments(
        output_dir=str(workdir / "out"), per_device_train_batch_size=4, learning_rate=1e-3,
        num_train_epochs=1, eval_strategy="steps", eval_steps=1, save_strategy="steps",
        save_steps=1, logging_strategy="no", report_to=[], disable_tqdm=True, use_cpu=True,
        seed=0, ddp_backend="gloo",
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=ds, eval_dataset=ds.select(range(4)),
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        processing_class=tokenizer, callbacks=[callback],
    )
    trainer.train()
    logged = [{k: v for k, v in entry.items() if "predwatch" in k}
              for entry in trainer.state.log_history]
    write_result(workdir, {
        "run_id": callback.recorder.run.id,
        "world_size": args.world_size,
        "wrapped": type(trainer.model_wrapped).__name__,
        "logged": [entry for entry in logged if entry],
        "summaries": len(callback.recorder.summaries),
        "opened_sink": callback.recorder._sink is not None,
    })


def accelerate_job(workdir: Path, mixed_precision: str = "no") -> None:
    import torch
    from accelerate import Accelerator

    from predwatch.generation.tiny import build_tiny_model

    accelerator = Accelerator(cpu=True, mixed_precision=mixed_precision)
    model, tokenizer = build_tiny_model(seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    model, optimizer = accelerator.prepare(model, optimizer)
    # Every rank trains on the same batch: DDP's averaged gradient is exactly the one-process
    # gradient, so the 1- and 2-process runs have the same weights and the same greedy answers.
    batch = tokenizer([r["prompt"] + " " + r["completion"] for r in RAW[:4]],
                      return_tensors="pt", padding=True)
    steps, steps_per_epoch = 2, 2

    # --- the README's "A custom loop" snippet, verbatim ---
    from predwatch import Recorder

    recorder = Recorder({"sample_count": 8}, samples="train.jsonl")
    # ---
    for step in range(steps + 1):
        epoch = step / steps_per_epoch
        if step > 0:
            out = model(**batch, labels=batch["input_ids"])
            accelerator.backward(out.loss)
            optimizer.step()
            optimizer.zero_grad()
        recorder.record(model, tokenizer, step=step, epoch=epoch)   # never raises into training
    recorder.close()
    write_result(workdir, {
        "run_id": recorder.run.id,
        "world_size": accelerator.num_processes,
        "summaries": len(recorder.summaries),
        "opened_sink": recorder._sink is not None,
    })
    accelerator.wait_for_everyone()
    accelerator.end_training()


def main() -> None:
    mode, workdir = sys.argv[1], Path(sys.argv[2])
    os.chdir(workdir)
    if mode == "trainer":
        trainer_job(workdir)
    elif mode == "accelerate":
        accelerate_job(workdir)
    elif mode == "accelerate-bf16":
        accelerate_job(workdir, mixed_precision="bf16")
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
