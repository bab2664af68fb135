"""Benchmark: resident memory over 50 evaluation points of one run stays flat.

A ``Recorder`` with the tiny model (``predwatch.generation.tiny``) and a SQLite store in a
temporary directory records ``--points`` evaluation points of ``--prompts`` prompts each, the way
a training callback does (``record(model, tokenizer, step=...)``: a new ``HFGenerator`` per
point), with a few optimizer steps between points so the model really changes. After each point
the delivery is flushed and the resident set size is read (``/proc/self/statm``; peak from
``getrusage``). The first points pay for lazy imports and caches, so growth is measured from
point ``--settle`` (default 5) to the last, and reported per point. Last line:

    memory: +X.X MiB RSS from point 5 to 50 (Y.Y KiB per point; peak Z MiB)

What remains of the growth is SQLite's page cache, bounded: ``storage/engine.py`` sets
``PRAGMA cache_size = -65536`` (64 MiB per connection, for ingest speed), and the cache fills as
the database grows (measured: 1,000 points of 16 rows written straight to the store grow RSS by
21 MiB; with ``cache_size = -256`` by 0.3 MiB). Python objects no longer grow with the points
(the recorder used to keep every point's rows on its summaries).

Run: ``.venv/bin/python bench/memory.py`` (about a minute on 2 quiet CPU cores).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import torch

from predwatch.generation.tiny import build_tiny_model
from predwatch.recording.recorder import Recorder


def rss_mib() -> float:
    """The resident set size of this process now, in MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--points", type=int, default=50)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--settle", type=int, default=5)
    args = parser.parse_args()

    model, tok = build_tiny_model(seed=0)
    records = [
        {"prompt": f"Give {i} as JSON with a name and {i % 7} tags",
         "completion": json.dumps({"value": i, "name": f"item {i}", "tags": list(range(i % 7))})}
        for i in range(args.prompts)
    ]  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    batch = tok([r["prompt"] + " " + r["completion"] for r in records[:8]], return_tensors="pt",
                padding=True)  # fmt: skip
    rss: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        recorder = Recorder(
            {"sample_count": args.prompts, "max_new_tokens": args.new_tokens,
             "validators": {"json_parse": True}, "overhead_budget": 1.0},
            samples=records, db=f"sqlite:///{Path(tmp) / 'predwatch.db'}", run_name="memory",
            spool_dir=str(Path(tmp) / "spool"),
        )  # fmt: skip
        start = time.perf_counter()
        for point in range(1, args.points + 1):
            model.train()
            for _ in range(2):  # training between points: the answers change
                loss = model(**batch, labels=batch["input_ids"]).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
            summary = recorder.record(model, tok, step=point * 10, epoch=point / 10)
            assert summary is not None and summary.failed_count == 0, "a point failed"
            recorder.sink.flush(30)
            gc.collect()
            rss.append(rss_mib())
            if point in (1, args.settle) or point % 10 == 0:
                print(f"point {point:3d}: RSS {rss[-1]:7.1f} MiB  peak {peak_mib():7.1f} MiB")
        elapsed = time.perf_counter() - start
        undelivered = recorder.close()
        assert undelivered == 0, f"{undelivered} batches left undelivered"
    settle = min(args.settle, args.points)
    growth = rss[-1] - rss[settle - 1]
    per_point = growth * 1024 / max(args.points - settle, 1)
    print(
        f"\n{args.points} points x {args.prompts} prompts in {elapsed:.1f}s; "
        f"RSS at point 1 {rss[0]:.1f} MiB (growth 1->{args.points}: {rss[-1] - rss[0]:+.1f} MiB); "
        f"load {os.getloadavg()[0]:.2f}"
    )
    print(
        f"memory: {growth:+.1f} MiB RSS from point {settle} to {args.points} "
        f"({per_point:.1f} KiB per point; peak {peak_mib():.0f} MiB)"
    )


if __name__ == "__main__":
    main()
