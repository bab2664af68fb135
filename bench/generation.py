"""Benchmark: HFGenerator vs a one-prompt-at-a-time generate loop, and vs TRL's batched generate.

Everything runs in this process on one locally built Llama (hidden 256, 4 layers, fp32, CPU by
default; nothing is downloaded), 64 prompts of 4-200 tokens, greedy. Two modes:

- fixed: exactly ``--new-tokens`` new tokens per answer (EOS suppressed with ``min_new_tokens``),
  HFGenerator at several batch sizes against the per-sample loop.
- realistic: answers end at EOS at very different lengths, as real answers do. A random model
  never says its EOS, so the model's generation config gets several EOS ids, chosen from a pilot
  run so that the answers' lengths spread from 1 token to the cap (printed). At
  ``max_new_tokens`` 64 and 128: the per-sample loop, TRL's ``_generate_completions`` (what
  ``LogCompletionsCallback`` runs; batch 8, its default ``per_device_eval_batch_size``) and
  predwatch at its default batch size.

The per-sample loop is how the system predwatch replaces generated its predictions. Methods run
round-robin (a burst of load from other processes hits every method alike); each line gives the
median, min and max over ``--rounds`` rounds after a warm-up, and the machine load
(``os.getloadavg()``) around the rounds. Every answer must equal the loop's (fp32, greedy). The
last lines are the results:

    fixed-length round: X.Yx the per-sample loop (identical N/N)
    realistic round: X.Yx the per-sample loop, Z.Zx TRL (identical N/N)

(realistic: total median time over both caps). Run: ``.venv/bin/python bench/generation.py``
(about 5 minutes on 2 quiet CPU cores; ``--mode fixed`` or ``--mode realistic`` for one half).

GPU measurement plan (no GPU was lent when this was written; run it where one is). The same
bench with a locally built, randomly initialised ~0.5B Qwen2-shaped model in bf16:

    python bench/generation.py --device cuda --dtype bf16 --hidden 1024 --layers 24 \\
        --heads 16 --intermediate 2816 --vocab 32000 --new-tokens 256 --caps 256 \\
        --rounds 3 --mode realistic

64 prompts x up to 256 new tokens. It prints the ratios to the loop and to TRL, tokens/s of each
method and the peak GPU memory (``torch.cuda.max_memory_allocated``). The goal there is at least
20x the loop. The device has torch, transformers, accelerate and peft but not pydantic: carry
the wheels of predwatch's core dependencies, or the run fails at import. Budget: the loop at 256
tokens x 64 prompts is the slow part (~15k forward calls); ``--rounds 1`` keeps it under 8 min.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

from predwatch.config import PredictionsConfig
from predwatch.generation.decode import DecodeSettings, GreedyDecoder
from predwatch.generation.hf import HFGenerator
from predwatch.generation.tiny import DEFAULT_CORPUS, build_tiny_model, build_tokenizer
from predwatch.records import Sample, prompt_identity

Method = Callable[[], list[str]]


def make_prompts(tokenizer: Any, count: int, low: int, high: int, seed: int = 0) -> list[str]:
    """``count`` prompts of ``low``..``high`` tokens cut from the built-in corpus."""
    rng = random.Random(seed)
    ids = tokenizer(" ".join(DEFAULT_CORPUS) * 4, add_special_tokens=False)["input_ids"]
    prompts = []
    for _ in range(count):
        n = rng.randint(low, high) - 1  # the tokenizer adds BOS
        start = rng.randrange(len(ids) - n)
        prompts.append(tokenizer.decode(ids[start : start + n]))
    return prompts


def per_sample_loop(
    model: Any, tokenizer: Any, prompts: list[str], new_tokens: int, fixed: bool
) -> list[str]:
    """The baseline: ``model.generate`` on one prompt at a time."""
    model.eval()
    answers = []
    device = next(model.parameters()).device
    with torch.no_grad():
        for prompt in prompts:
            inputs = tokenizer(prompt, return_tensors="pt").to(device)
            out = model.generate(
                **inputs,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens if fixed else None,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
            new = out[0, inputs["input_ids"].shape[1] :]
            answers.append(tokenizer.decode(new, skip_special_tokens=True))
    return answers


def trl_completions(model: Any, tokenizer: Any, prompts: list[str], new_tokens: int) -> list[str]:
    """TRL's ``_generate_completions`` as ``LogCompletionsCallback`` calls it (batch 8)."""
    from accelerate import Accelerator
    from transformers import GenerationConfig
    from trl.trainer.callbacks import _generate_completions

    # TRL's unwrap helper asks for a deprecated transformers property; not ours to fix.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")

    tokenizer.padding_side = "left"  # what the callback sets on the trainer's tokenizer
    config = GenerationConfig(
        max_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=model.generation_config.eos_token_id,
    )
    model.eval()
    return list(
        _generate_completions(
            prompts, model, tokenizer, Accelerator(cpu=not torch.cuda.is_available()), config,
            batch_size=8,
        )
    )  # fmt: skip


def pick_eos_ids(model: Any, tokenizer: Any, prompts: list[str], cap: int) -> list[int]:
    """Token ids that, as extra EOS ids, end the greedy answers at lengths spread over 1..cap.

    A pilot run generates ``cap`` tokens per prompt; ids are then added one at a time, each the
    one bringing the sorted answer lengths closest to an even spread (stopping when none helps).
    """
    device = next(model.parameters()).device
    settings = DecodeSettings(
        slots=16, max_batch_tokens=None, max_new_tokens=cap, min_new_tokens=cap,
        eos_ids=frozenset({tokenizer.eos_token_id}), pad_id=tokenizer.pad_token_id,
    )  # fmt: skip
    model.eval()
    with torch.no_grad():
        pilot = GreedyDecoder(model, device, settings).run(
            [tokenizer(p)["input_ids"] for p in prompts]
        )
    n = len(pilot)
    target = [1 + (cap - 1) * k / (n - 1) for k in range(n)]

    def distance(chosen: set[int]) -> float:
        lengths = sorted(
            next((i + 1 for i, t in enumerate(ids) if t in chosen), cap) for ids in pilot
        )
        return sum(abs(a - b) for a, b in zip(lengths, target, strict=True))

    special = set(tokenizer.all_special_ids)
    candidates = sorted({t for ids in pilot for t in ids} - special)
    chosen: set[int] = set()
    best = distance(chosen)
    while True:
        scored = min(((distance(chosen | {t}), t) for t in candidates if t not in chosen),
                     default=None)  # fmt: skip
        if scored is None or scored[0] >= best:
            return sorted(chosen)
        best = scored[0]
        chosen.add(scored[1])


Timings = tuple[dict[str, list[float]], dict[str, list[str]], str]


def time_rounds(methods: dict[str, Method], rounds: int) -> Timings:
    """Round-robin timings, the last answers of each method, and the load around the rounds."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    answers: dict[str, list[str]] = {}
    before = os.getloadavg()
    for _ in range(rounds):
        for name, run in methods.items():
            start = time.perf_counter()
            answers[name] = run()
            times[name].append(time.perf_counter() - start)
    after = os.getloadavg()
    load = f"load {before[0]:.2f} before, {after[0]:.2f} after (1-min avg)"
    return times, answers, load


def report(
    times: dict[str, list[float]], answers: dict[str, list[str]], tokens: dict[str, int] | None
) -> None:
    """One line per method: median/min/max seconds, speedup over the loop, identical answers."""
    expected = answers["per-sample loop"]
    loop_s = statistics.median(times["per-sample loop"])
    print(f"  {'method':<26} {'median s':>8} {'min s':>7} {'max s':>7} {'speedup':>8}  identical")
    for name, runs in times.items():
        median = statistics.median(runs)
        same = sum(a == b for a, b in zip(answers[name], expected, strict=True))
        rate = f"  {tokens[name] / median:7.0f} new tok/s" if tokens else ""
        print(
            f"  {name:<26} {median:8.2f} {min(runs):7.2f} {max(runs):7.2f} "
            f"{loop_s / median:7.1f}x  {same}/{len(expected)}{rate}"
        )


def identical(answers: dict[str, list[str]], name: str) -> int:
    return sum(
        a == b for a, b in zip(answers[name], answers["per-sample loop"], strict=True)
    )


def fixed_mode(args: argparse.Namespace, model: Any, tokenizer: Any, samples: list[Sample]) -> str:
    n = args.new_tokens
    generator = HFGenerator(model, tokenizer, precision=args.dtype)
    default_size = generator.batch_size(PredictionsConfig().generation_params())
    prompts = [s.prompt for s in samples]

    def batched(size: int) -> Method:
        params = {"max_new_tokens": n, "min_new_tokens": n, "batch_size": size}

        def run() -> list[str]:
            rows = generator.generate(samples, params)
            assert all(row.completion_tokens == n for row in rows), "EOS was not suppressed"
            return [row.text for row in rows]

        return run

    methods: dict[str, Method] = {
        "per-sample loop": lambda: per_sample_loop(model, tokenizer, prompts, n, fixed=True)
    }
    for size in sorted({default_size, *(int(s) for s in args.batch_sizes.split(","))}):
        methods[f"predwatch batch {size}"] = batched(size)
    warm_up(model, tokenizer, generator, samples)
    print(f"\nfixed length: {n} new tokens per answer")
    times, answers, load = time_rounds(methods, args.rounds)
    print(f"  ({args.rounds} rounds; {load})")
    report(times, answers, None)
    name = f"predwatch batch {default_size}"
    speedup = statistics.median(times["per-sample loop"]) / statistics.median(times[name])
    print(f"  (batch {default_size}: the default on {args.device})")
    return (
        f"fixed-length round: {speedup:.1f}x the per-sample loop "
        f"(identical {identical(answers, name)}/{len(samples)})"
    )


def warm_up(model: Any, tokenizer: Any, generator: HFGenerator, samples: list[Sample]) -> None:
    """First calls pay for lazy initialisation; pay it before timing anything."""
    few = samples[:8]
    per_sample_loop(model, tokenizer, [s.prompt for s in few], 4, fixed=False)
    generator.generate(few, {"max_new_tokens": 4})


def realistic_mode(
    args: argparse.Namespace, model: Any, tokenizer: Any, samples: list[Sample]
) -> str:
    prompts = [s.prompt for s in samples]
    eos = tokenizer.eos_token_id
    totals = {"per-sample loop": 0.0, "TRL batch 8": 0.0, "predwatch": 0.0}
    same_total = 0
    for cap in [int(c) for c in args.caps.split(",")]:
        model.generation_config.eos_token_id = eos
        extra = pick_eos_ids(model, tokenizer, prompts, cap)
        model.generation_config.eos_token_id = [eos, *extra]
        generator = HFGenerator(model, tokenizer, precision=args.dtype)  # reads the EOS ids
        params = {"max_new_tokens": cap}  # batch_size unset: the device's default
        default_size = generator.batch_size(params)
        rows_seen: list[Any] = []

        def ours(params: dict[str, Any] = params, generator: HFGenerator = generator,
                 rows_seen: list[Any] = rows_seen) -> list[str]:  # fmt: skip
            rows = generator.generate(samples, params)
            rows_seen[:] = rows
            return [row.text for row in rows]

        methods: dict[str, Method] = {
            "per-sample loop": lambda cap=cap: per_sample_loop(
                model, tokenizer, prompts, cap, fixed=False
            ),
            "TRL batch 8": lambda cap=cap: trl_completions(model, tokenizer, prompts, cap),
            "predwatch": ours,
        }
        warm_up(model, tokenizer, generator, samples)
        trl_completions(model, tokenizer, prompts[:8], 4)
        times, answers, load = time_rounds(methods, args.rounds)
        lengths = sorted(r.completion_tokens or 0 for r in rows_seen)
        ended = sum(r.finish_reason == "eos" for r in rows_seen)
        print(
            f"\nrealistic, max_new_tokens {cap}: {len(extra) + 1} EOS ids; answer lengths "
            f"{lengths[0]}-{lengths[-1]} (median {lengths[len(lengths) // 2]}, mean "
            f"{sum(lengths) / len(lengths):.1f}); {ended}/{len(lengths)} end at EOS"
        )
        print(f"  ({args.rounds} rounds; {load}; predwatch batch {default_size})")
        tokens = {name: sum(lengths) for name in methods}
        report(times, answers, tokens)
        for name in totals:
            totals[name] += statistics.median(times[name])
        same_total += identical(answers, "predwatch")
        trl_same = identical(answers, "TRL batch 8")
        if trl_same != len(samples):
            print(f"  (TRL's answers differ from the loop's for {len(samples) - trl_same})")
    model.generation_config.eos_token_id = eos
    count = len(samples) * len(args.caps.split(","))
    loop_x = totals["per-sample loop"] / totals["predwatch"]
    trl_x = totals["TRL batch 8"] / totals["predwatch"]
    return (
        f"realistic round: {loop_x:.1f}x the per-sample loop, {trl_x:.1f}x TRL "
        f"(identical {same_total}/{count})"
    )


def build_model(args: argparse.Namespace) -> tuple[Any, Any]:
    tokenizer = build_tokenizer(vocab_size=args.vocab) if args.vocab != 512 else None
    model, tokenizer = build_tiny_model(
        seed=0, tokenizer=tokenizer, hidden_size=args.hidden, num_layers=args.layers,
        num_heads=args.heads, max_positions=1024, intermediate_size=args.intermediate,
    )  # fmt: skip
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.dtype, torch.float32)
    return model.to(device=args.device, dtype=dtype), tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--mode", choices=["fixed", "realistic", "both"], default="both")
    parser.add_argument("--new-tokens", type=int, default=32, help="fixed mode: tokens per answer")
    parser.add_argument("--caps", default="64,128", help="realistic mode: max_new_tokens values")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-sizes", default="8,16", help="fixed mode: more batch sizes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--intermediate", type=int, default=None)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args()
    if args.threads:  # on a shared machine, fewer threads suffer less from other processes
        torch.set_num_threads(args.threads)

    model, tokenizer = build_model(args)
    prompts = make_prompts(tokenizer, 64, 4, 200)
    samples = [
        Sample(prompt_id=prompt_identity(p), source_index=i, prompt=p)
        for i, p in enumerate(prompts)
    ]
    lengths = sorted(len(tokenizer(p)["input_ids"]) for p in prompts)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"model: Llama hidden {args.hidden}, {args.layers} layers, {params / 1e6:.1f}M parameters,"
        f" {args.dtype} on {args.device}, {torch.get_num_threads()} threads; {len(prompts)} "
        f"prompts of {lengths[0]}-{lengths[-1]} tokens (median {lengths[len(lengths) // 2]}), "
        f"greedy; load {os.getloadavg()[0]:.2f}"
    )
    results = []
    if args.mode in ("fixed", "both"):
        results.append(fixed_mode(args, model, tokenizer, samples))
    if args.mode in ("realistic", "both"):
        results.append(realistic_mode(args, model, tokenizer, samples))
    if args.device.startswith("cuda"):
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    print()
    for line in results:
        print(line)


if __name__ == "__main__":
    main()
