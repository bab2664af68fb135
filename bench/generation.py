"""Benchmark: HFGenerator (sorted, batched, left-padded) vs a one-prompt-at-a-time generate loop.

The per-sample loop is how the system predwatch replaces generated its predictions. Both run in
this process on the same locally built model (hidden 256, 4 layers, fp32, CPU by default), the
same 64 prompts of 4-200 tokens, greedy, exactly ``--new-tokens`` new tokens each (EOS is
suppressed with ``min_new_tokens``). Each timing is the median of ``--repeats`` runs after a
warm-up; the answers of every batched run must equal the loop's. The last line is the result:

    generation speedup vs per-sample loop: X.Yx (identical N/N)

Run: ``.venv/bin/python bench/generation.py`` (about a minute and a half on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from predwatch.config import PredictionsConfig
from predwatch.generation.hf import HFGenerator
from predwatch.generation.tiny import DEFAULT_CORPUS, build_tiny_model
from predwatch.records import Sample, prompt_identity


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


def per_sample_loop(model: Any, tokenizer: Any, prompts: list[str], new_tokens: int) -> list[str]:
    """The baseline: ``model.generate`` on one prompt at a time."""
    model.eval()
    answers = []
    with torch.no_grad():
        for prompt in prompts:
            inputs = tokenizer(prompt, return_tensors="pt")
            out = model.generate(
                **inputs,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
            new = out[0, inputs["input_ids"].shape[1] :]
            answers.append(tokenizer.decode(new, skip_special_tokens=True))
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", default="8,16,32")
    args = parser.parse_args()
    default_size = PredictionsConfig().batch_size

    model, tokenizer = build_tiny_model(seed=0, hidden_size=256, num_layers=4, num_heads=4)
    prompts = make_prompts(tokenizer, 64, 4, 200)
    samples = [
        Sample(prompt_id=prompt_identity(p), source_index=i, prompt=p)
        for i, p in enumerate(prompts)
    ]
    lengths = sorted(len(tokenizer(p)["input_ids"]) for p in prompts)
    print(
        f"model: Llama hidden 256, 4 layers, fp32, {torch.get_num_threads()} threads; "
        f"{len(prompts)} prompts of {lengths[0]}-{lengths[-1]} tokens "
        f"(median {lengths[len(lengths) // 2]}); {args.new_tokens} new tokens each, greedy"
    )
    generator = HFGenerator(model, tokenizer, precision="fp32")
    n = args.new_tokens

    def batched(size: int, sort: bool = True) -> Callable[[list[Sample]], list[str]]:
        params = {"max_new_tokens": n, "min_new_tokens": n, "batch_size": size}

        def run(chosen: list[Sample]) -> list[str]:
            if sort:
                rows = generator.generate(chosen, params)
            else:  # plain batching: consecutive prompts, whatever their lengths
                chunks = [chosen[k : k + size] for k in range(0, len(chosen), size)]
                rows = [row for chunk in chunks for row in generator.generate(chunk, params)]
            assert all(row.completion_tokens == n for row in rows), "EOS was not suppressed"
            return [row.text for row in rows]

        return run

    methods: dict[str, Callable[[list[Sample]], list[str]]] = {
        "per-sample loop": lambda chosen: per_sample_loop(
            model, tokenizer, [s.prompt for s in chosen], n
        ),
        f"batch {default_size}, unsorted": batched(default_size, sort=False),
    }
    for size in [int(s) for s in args.batch_sizes.split(",")]:
        methods[f"batch {size}"] = batched(size)

    for run in methods.values():  # warm-up: first calls pay for lazy initialisation
        run(samples[:8])
    # Round-robin repeats: a burst of load from other processes hits every method alike.
    times: dict[str, list[float]] = {name: [] for name in methods}
    answers: dict[str, list[str]] = {}
    for _ in range(args.repeats):
        for name, run in methods.items():
            start = time.perf_counter()
            answers[name] = run(samples)
            times[name].append(time.perf_counter() - start)

    expected = answers["per-sample loop"]
    loop_s = statistics.median(times["per-sample loop"])
    print(f"\n{'batching':<20} {'median s':>8} {'min s':>7} {'speedup':>8}  identical")
    for name in methods:
        median = statistics.median(times[name])
        same = sum(a == b for a, b in zip(answers[name], expected, strict=True))
        print(
            f"{name:<20} {median:8.2f} {min(times[name]):7.2f} {loop_s / median:7.1f}x"
            f"  {same}/{len(expected)}"
        )
    name = f"batch {default_size}"
    same = sum(a == b for a, b in zip(answers[name], expected, strict=True))
    speedup = loop_s / statistics.median(times[name])
    print(f"\n(batch size {default_size}: the PredictionsConfig default)")
    print(
        f"generation speedup vs per-sample loop: {speedup:.1f}x (identical {same}/{len(expected)})"
    )


if __name__ == "__main__":
    main()
