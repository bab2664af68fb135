"""Benchmark: training time with predwatch recording inline vs deferred to a checkpoint worker.

The same tiny Trainer run (a locally built Llama, hidden 128, 2 layers; CPU) is trained again
and again in **one process**, three ways, each saving a checkpoint every ``--save-steps``:

- none: no predwatch at all;
- inline: ``PredictionsCallback`` generating ``--prompts`` answers of ``--new-tokens`` tokens
  at every save step, in the training process;
- deferred: ``PredictionsCallback(mode="checkpoint")``: each save only queues a job.

Every run starts from the same initial weights, with its own output folder; the runs of a mode
share one database, as a project's runs do (the first open of a new SQLite file creates the
schema: ~0.15 s of CPU on the delivery thread, once per database, paid in the warm-up). The
modes take turns (``--repeats`` rounds, the order rotated each round) after one unmeasured
warm-up round, and the time is ``trainer.train()``'s wall time. One process, because on this
2-core machine the same run in two fresh processes differs by up to 60% (per-step medians of
10-16 ms), which buries a 2% effect; inside one process consecutive runs agree within a few
percent. Reported: the median per mode, min/median/max of each round's ratio to that round's
plain run, and the time the training thread spent inside predwatch's callback (robust to a
loaded machine). Afterwards a ``predwatch worker`` records one deferred run's jobs, to show they
hold what inline recording would have produced. Last line:

    training time with predwatch: inline X.XXx, deferred Y.YYx of no predwatch

Run: ``.venv/bin/python bench/offpath.py`` (a few minutes on 2 idle CPU cores).
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("PREDWATCH_MIN_STEP_INTERVAL", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MODES = ("none", "inline", "deferred")
HOOKS = ("on_train_begin", "on_step_end", "on_save", "on_evaluate", "on_epoch_end",
         "on_train_end")


class Bench:
    """The model, data and arguments shared by every run."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        from datasets import Dataset

        from predwatch.generation.tiny import build_tiny_model

        self.args, self.work = args, work
        self.raw = [{"prompt": f"Question {i}: what is {i} + {i}?", "completion": f" {2 * i}"}
                    for i in range(256)]
        model, self.tok = build_tiny_model(seed=0, hidden_size=args.hidden,
                                           num_layers=args.layers)
        self.initial = copy.deepcopy(model.state_dict())
        self.model = model
        tok = self.tok
        self.ds = Dataset.from_list(self.raw).map(
            lambda b: tok([p + c + tok.eos_token
                           for p, c in zip(b["prompt"], b["completion"], strict=True)]),
            batched=True, remove_columns=["prompt", "completion"])
        self.count = 0

    def train(self, mode: str) -> tuple[float, float]:
        """One training run; (seconds of ``train()``, seconds inside predwatch's callback)."""
        from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

        from predwatch import PredictionsCallback

        self.count += 1
        out = self.work / f"{mode}-{self.count}"
        self.model.load_state_dict(self.initial)
        in_hooks = [0.0]
        callbacks: list[Any] = []
        if mode != "none":
            a = self.args
            config = {"sample_count": a.prompts, "max_new_tokens": a.new_tokens,
                      "sample_frequency": "steps", "step_interval": a.save_steps}
            callback = PredictionsCallback(
                config, dataset=self.raw, db=f"sqlite:///{self.work / mode}.db",
                spool_dir=str(self.work / f"{mode}-spool"),
                mode="checkpoint" if mode == "deferred" else "inline")
            for name in HOOKS:
                setattr(callback, name, _timed(getattr(callback, name), in_hooks))
            callbacks.append(callback)
        args = TrainingArguments(
            output_dir=str(out), max_steps=self.args.steps, save_steps=self.args.save_steps,
            save_strategy="steps", per_device_train_batch_size=8, learning_rate=1e-3,
            report_to=[], disable_tqdm=True, use_cpu=True, logging_strategy="no", seed=0,
            log_level="error")
        trainer = Trainer(model=self.model, args=args, train_dataset=self.ds,
                          processing_class=self.tok,
                          data_collator=DataCollatorForLanguageModeling(self.tok, mlm=False),
                          callbacks=callbacks)
        started = time.perf_counter()
        trainer.train()
        return time.perf_counter() - started, in_hooks[0]


def _timed(method: Any, total: list[float]) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            total[0] += time.perf_counter() - started
    return wrapper


def spread(values: list[float]) -> str:
    return (f"min {min(values):.3f}x, median {statistics.median(values):.3f}x, "
            f"max {max(values):.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--save-steps", type=int, default=100)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads for training (default: torch's own)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    hooks: dict[str, list[float]] = {mode: [] for mode in MODES}
    ratios: dict[str, list[float]] = {"inline": [], "deferred": []}
    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory(prefix="predwatch-offpath-") as tmp:
        bench = Bench(args, Path(tmp))
        for mode in MODES:  # warm-up round (first-run costs: lazy imports, allocator), unmeasured
            bench.train(mode)
        for index in range(args.repeats):
            order = MODES[index % 3:] + MODES[:index % 3]
            this: dict[str, float] = {}
            for mode in order:
                seconds, in_hooks = bench.train(mode)
                this[mode] = seconds
                times[mode].append(seconds)
                hooks[mode].append(in_hooks)
            for mode in ratios:
                ratios[mode].append(this[mode] / this["none"])
            print(f"round {index + 1}: " + ", ".join(
                f"{m} {this[m]:.2f}s" + (f" ({hooks[m][-1] * 1000:.0f} ms in predwatch)"
                                         if m != "none" else "") for m in order),
                f"(load {os.getloadavg()[0]:.2f})", flush=True)
        db = f"sqlite:///{Path(tmp) / 'deferred.db'}"
        worker = subprocess.run(
            [sys.executable, "-c", "from predwatch.cli import main; main(prog_name='predwatch')",
             "worker", "--db", db, "--once"], capture_output=True, text=True, timeout=1800)
        print(f"worker on the deferred runs: {worker.stdout.strip() or worker.stderr[-500:]}")
        from predwatch.storage import open_store

        with open_store(db) as store:
            runs = store.list_runs(limit=1000).items
            points = {(p.step, p.sample_count) for r in runs for p in store.eval_points(r.id)}
            counts = [len(store.eval_points(r.id)) for r in runs]
            failed = [j.error for j in store.list_jobs(status="failed")]
        print(f"deferred runs recorded by the worker: {len(runs)} runs, points per run {counts}, "
              f"(step, answers) {sorted(points)}" + (f"; failed jobs: {failed}" if failed else ""))
    median = {mode: statistics.median(values) for mode, values in times.items()}
    print(f"median seconds: none {median['none']:.2f}, inline {median['inline']:.2f}, "
          f"deferred {median['deferred']:.2f} ({args.steps} steps, a save every "
          f"{args.save_steps}, {args.prompts} prompts x {args.new_tokens} tokens per point, "
          f"{args.repeats} rounds)")
    for mode in ratios:
        print(f"{mode} / none per round: {spread(ratios[mode])}")
    share = {mode: statistics.median(hooks[mode]) / median["none"] for mode in ratios}
    print(f"training thread inside predwatch: inline {share['inline']:.2%}, deferred "
          f"{share['deferred']:.3%} of the plain run's time")
    print(f"training time with predwatch: inline {statistics.median(ratios['inline']):.2f}x, "
          f"deferred {statistics.median(ratios['deferred']):.2f}x of no predwatch")


if __name__ == "__main__":
    main()
