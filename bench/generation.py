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

from predwatch.generation.hf import HFGenerator
from predwatch.records import Sample, prompt_identity
from predwatch.tiny import DEFAULT_CORPUS, build_tiny_model


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


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall time of ``repeats`` calls after one warm-up call, and the last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", default="4,8,16,32,64")
    parser.add_argument("--default-batch-size", type=int, default=16)
    args = parser.parse_args()

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

    loop_s, expected = median_time(
        lambda: per_sample_loop(model, tokenizer, prompts, args.new_tokens), args.repeats
    )
    generator = HFGenerator(model, tokenizer, precision="fp32")
    print(f"\n{'batch size':>10}  {'seconds':>8}  {'speedup':>7}  identical")
    print(f"{'loop':>10}  {loop_s:8.2f}  {1.0:6.1f}x  {len(prompts)}/{len(prompts)}")
    results: dict[int, tuple[float, int]] = {}
    for size in [int(s) for s in args.batch_sizes.split(",")]:
        params = {
            "max_new_tokens": args.new_tokens,
            "min_new_tokens": args.new_tokens,
            "batch_size": size,
        }
        seconds, rows = median_time(lambda p=params: generator.generate(samples, p), args.repeats)
        same = sum(row.text == want for row, want in zip(rows, expected))
        results[size] = (seconds, same)
        print(f"{size:>10}  {seconds:8.2f}  {loop_s / seconds:6.1f}x  {same}/{len(prompts)}")
        assert all(row.completion_tokens == args.new_tokens for row in rows), "EOS not suppressed"

    seconds, same = results[args.default_batch_size]
    print(f"\n(batch size {args.default_batch_size}, the PredictionsConfig default)")
    print(
        f"generation speedup vs per-sample loop: {loop_s / seconds:.1f}x "
        f"(identical {same}/{len(prompts)})"
    )


if __name__ == "__main__":
    main()
