"""One evaluation point of 64 prompts answered by 1 rank and by 2 ranks (torchrun, gloo, CPU).

    python bench/distributed.py [--prompts 64] [--max-new-tokens 32] [--rounds 3]

Both runs use the same machine: each rank gets ``cores / ranks`` intra-op threads (1 rank: all
cores; 2 ranks: half each), the same tiny model (seeded) and the same prompts; the time is the
point's generation as ``ShardedGenerator`` measures it on rank 0 (gather included), the median of
``--rounds`` after a warm-up. The answers of the two runs are compared one by one (greedy, fp32).
Last line: ``2-rank point time: X.XXx of 1 rank (identical N/N)``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent


def _prompts(n: int) -> list[dict[str, str]]:
    words = "the model answers every prompt with a short list of numbers and words".split()
    return [{"prompt": " ".join(words[: 2 + (i * 5) % len(words)]) + f" #{i}", "completion": "x"}
            for i in range(n)]


def worker(out: str, n: int, max_new_tokens: int, rounds: int) -> None:
    """Runs on every rank under torchrun: times ``rounds`` points after a warm-up."""
    import datetime

    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // world))
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=600))
    from predwatch.generation.distributed import ShardedGenerator, rank_info
    from predwatch.generation.hf import HFGenerator
    from predwatch.generation.tiny import build_tiny_model
    from predwatch.sampling import select_samples

    samples = select_samples(_prompts(n), None).samples
    model, tok = build_tiny_model(seed=0, hidden_size=128, num_layers=4)
    gen = ShardedGenerator(HFGenerator(model, tok, precision="fp32"))
    params = {"max_new_tokens": max_new_tokens, "batch_size": 16}
    gen.generate(samples[: max(2, world)], params)  # warm-up
    times, answers = [], []
    for _ in range(rounds):
        dist.barrier()
        started = time.perf_counter()
        answers = gen.generate(samples, params)
        times.append(time.perf_counter() - started)
    if rank_info().is_main:
        Path(out).write_text(json.dumps({
            "times": times, "answers": [a.text for a in answers],
            "threads": torch.get_num_threads(),
        }))
    dist.barrier()
    dist.destroy_process_group()


def _launch(ranks: int, n: int, max_new_tokens: int, rounds: int) -> dict:
    from predwatch.testing import free_port

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.json")
        torchrun = Path(sys.executable).with_name("torchrun")
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
        subprocess.run(
            [str(torchrun), "--nproc_per_node", str(ranks), "--master_addr", "127.0.0.1",
             "--master_port", str(free_port()), str(HERE), "--worker", out, "--prompts", str(n),
             "--max-new-tokens", str(max_new_tokens), "--rounds", str(rounds)],
            check=True, timeout=1800, env=env,
        )
        return json.loads(Path(out).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", metavar="OUT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.prompts, args.max_new_tokens, args.rounds)
        return
    load = os.getloadavg()[0]
    one = _launch(1, args.prompts, args.max_new_tokens, args.rounds)
    two = _launch(2, args.prompts, args.max_new_tokens, args.rounds)
    same = sum(a == b for a, b in zip(one["answers"], two["answers"], strict=True))
    t1, t2 = statistics.median(one["times"]), statistics.median(two["times"])
    print(f"machine: {os.cpu_count()} cores, load average {load:.2f} at start, "
          f"{os.getloadavg()[0]:.2f} at end")
    for name, result in (("1 rank ", one), ("2 ranks", two)):
        times = result["times"]
        print(f"{name}: {result['threads']} thread(s) per rank; point time min {min(times):.2f} s,"
              f" median {statistics.median(times):.2f} s, max {max(times):.2f} s")
    print(f"2-rank point time: {t2 / t1:.2f}x of 1 rank (identical {same}/{len(one['answers'])})")


if __name__ == "__main__":
    main()
