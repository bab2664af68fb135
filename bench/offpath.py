"""Benchmark: training time with predwatch recording inline vs deferred to a checkpoint worker.

The same tiny Trainer run (a locally built Llama, hidden 128, 2 layers; CPU) is trained in a
fresh subprocess per measurement, three ways, each saving a checkpoint every ``--save-steps``:

- none: no predwatch at all;
- inline: ``PredictionsCallback`` generating ``--prompts`` answers of ``--new-tokens`` tokens
  at every save step, in the training process;
- deferred: ``PredictionsCallback(mode="checkpoint")``: each save only queues a job.

The time is ``trainer.train()``'s wall time, the median of ``--repeats`` runs per mode (modes
interleaved, so machine load hits them alike); the time the training thread spent inside
predwatch's callback is reported too (robust to a loaded machine). Afterwards a
``predwatch worker`` records the deferred run's jobs, to show they hold what inline recording
would have produced. Last line:

    training time with predwatch: inline X.XXx, deferred Y.YYx of no predwatch

Run: ``.venv/bin/python bench/offpath.py`` (a few minutes on 2 idle CPU cores).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

TRAIN = textwrap.dedent("""
    import json, sys, time
    from datasets import Dataset
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments
    from predwatch import PredictionsCallback
    from predwatch.generation.tiny import build_tiny_model

    mode, out, db, steps, save_steps, prompts, new_tokens, hidden, layers = sys.argv[1:10]
    steps, save_steps = int(steps), int(save_steps)
    raw = [{"prompt": f"Question {i}: what is {i} + {i}?", "completion": f" {2 * i}"}
           for i in range(256)]
    model, tok = build_tiny_model(seed=0, hidden_size=int(hidden), num_layers=int(layers))
    ds = Dataset.from_list(raw).map(
        lambda b: tok([p + c + tok.eos_token for p, c in zip(b["prompt"], b["completion"])]),
        batched=True, remove_columns=["prompt", "completion"])
    callbacks = []
    in_hooks = [0.0]  # seconds the training thread spent inside predwatch's callback

    def timed(method):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                in_hooks[0] += time.perf_counter() - started
        return wrapper

    if mode != "none":
        config = {"sample_count": int(prompts), "max_new_tokens": int(new_tokens),
                  "sample_frequency": "steps", "step_interval": save_steps}
        callback = PredictionsCallback(config, dataset=raw, db=db, spool_dir=out + "-spool",
                                       mode="checkpoint" if mode == "deferred" else "inline")
        for name in ("on_train_begin", "on_step_end", "on_save", "on_evaluate", "on_epoch_end",
                     "on_train_end"):
            setattr(callback, name, timed(getattr(callback, name)))
        callbacks.append(callback)
    args = TrainingArguments(output_dir=out, max_steps=steps, save_steps=save_steps,
                             save_strategy="steps", per_device_train_batch_size=8,
                             learning_rate=1e-3, report_to=[], disable_tqdm=True, use_cpu=True,
                             logging_strategy="no", seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                      data_collator=DataCollatorForLanguageModeling(tok, mlm=False),
                      callbacks=callbacks)
    started = time.perf_counter()
    trainer.train()
    print(json.dumps({"seconds": time.perf_counter() - started, "in_hooks": in_hooks[0]}))
""")


def run_mode(mode: str, work: Path, index: int, args: argparse.Namespace
             ) -> tuple[float, float]:
    out = work / f"{mode}-{index}"
    db = f"sqlite:///{work / f'{mode}-{index}.db'}"
    env = {**os.environ, "PREDWATCH_MIN_STEP_INTERVAL": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [sys.executable, "-c", TRAIN, mode, str(out), db, str(args.steps), str(args.save_steps),
         str(args.prompts), str(args.new_tokens), str(args.hidden), str(args.layers)],
        capture_output=True, text=True, timeout=1800, env=env,
    )
    if done.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return float(result["seconds"]), float(result["in_hooks"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--save-steps", type=int, default=10)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"none": [], "inline": [], "deferred": []}
    hooks: dict[str, list[float]] = {mode: [] for mode in times}
    with tempfile.TemporaryDirectory(prefix="predwatch-offpath-") as tmp:
        work = Path(tmp)
        for index in range(args.repeats):
            for mode in times:
                seconds, in_hooks = run_mode(mode, work, index, args)
                times[mode].append(seconds)
                hooks[mode].append(in_hooks)
                print(f"{mode:9s} run {index + 1}: {seconds:.2f}s, {in_hooks * 1000:.1f} ms of "
                      "it in predwatch's callback", flush=True)
        db = f"sqlite:///{work / 'deferred-0.db'}"
        worker = subprocess.run(
            [sys.executable, "-c", "from predwatch.cli import main; main(prog_name='predwatch')",
             "worker", "--db", db, "--once"], capture_output=True, text=True, timeout=1800)
        print(f"worker on the deferred run: {worker.stdout.strip() or worker.stderr[-500:]}")
        from predwatch.storage import open_store

        with open_store(db) as store:
            points = [(p.step, p.sample_count) for r in store.list_runs().items
                      for p in store.eval_points(r.id)]
            failed = [j.error for j in store.list_jobs(status="failed")]
        print(f"deferred run recorded by the worker (step, answers): {points}"
              + (f"; failed jobs: {failed}" if failed else ""))
    median = {mode: statistics.median(values) for mode, values in times.items()}
    print(f"median seconds: none {median['none']:.2f}, inline {median['inline']:.2f}, "
          f"deferred {median['deferred']:.2f} ({args.steps} steps, a save every "
          f"{args.save_steps}, {args.prompts} prompts x {args.new_tokens} tokens per point)")
    # Less sensitive to a loaded machine than the wall-time ratio: the time the training
    # thread itself spent in predwatch, as a share of the plain run.
    share = {mode: statistics.median(hooks[mode]) / median["none"] for mode in ("inline",
                                                                               "deferred")}
    print(f"training thread inside predwatch: inline {share['inline']:.2%}, deferred "
          f"{share['deferred']:.3%} of the plain run's time")
    print(f"training time with predwatch: inline {median['inline'] / median['none']:.2f}x, "
          f"deferred {median['deferred'] / median['none']:.2f}x of no predwatch")


if __name__ == "__main__":
    main()
