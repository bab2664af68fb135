"""Run under ``torchrun --nproc_per_node N`` (gloo, CPU) by ``test_distributed.py``.

Usage: dist_worker.py OUT.json MODE [N_PROMPTS]. Every rank builds the same tiny model (seeded)
and answers a shard of the prompts through ``ShardedGenerator``; rank 0 writes every answer
(in prompt order) and what it saw to OUT.json. MODE: ``replicas`` (DDP-style), ``fsdp2``
(``fully_shard`` on every layer: synced forwards), ``fail-rank1`` (rank 1's generator raises).
"""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import torch.distributed as dist

from predwatch.generation.fake import FakeGenerator
from predwatch.records import Generation, Sample


def prompts(n: int) -> list[dict[str, str]]:
    # Uneven lengths, so shards differ in work and answers end at different steps.
    return [{"prompt": "count " + " ".join(str(j) for j in range(i % 7 + 1)), "completion": "x"}
            for i in range(n)]


class Broken(FakeGenerator):
    """A generator that raises for its whole shard (as a lost device would)."""

    def generate(self, samples: Sequence[Sample], params: Mapping[str, Any]) -> list[Generation]:
        raise RuntimeError("rank 1 broke")


def main() -> None:
    out, mode = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 13
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))
    from predwatch.generation.distributed import ShardedGenerator, rank_info
    from predwatch.generation.hf import HFGenerator
    from predwatch.generation.tiny import build_tiny_model
    from predwatch.sampling import select_samples

    samples = select_samples(prompts(n), None).samples
    model, tok = build_tiny_model(seed=0)
    params = {"max_new_tokens": 12, "batch_size": 4}
    if mode == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
    inner: Any = HFGenerator(model, tok, precision="fp32")
    if mode == "fail-rank1" and rank_info().rank == 1:
        inner = Broken()
    gen = ShardedGenerator(inner, model=model)
    answers = gen.generate(samples, params)
    if rank_info().is_main:
        with open(out, "w", encoding="utf-8") as fh:
            json.dump({"answers": [a.model_dump(mode="json") for a in answers],
                       "synced": gen.synced, "describe": gen.describe().get("distributed"),
                       "shard": gen.last_shard_size}, fh)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
