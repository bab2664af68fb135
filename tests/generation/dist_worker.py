"""Run under ``torchrun --nproc_per_node N`` (gloo, CPU) by ``test_distributed.py``.

Usage: dist_worker.py OUT.json MODE [N_PROMPTS]. Every rank builds the same tiny model (seeded)
and answers a shard of the prompts through ``ShardedGenerator``; rank 0 writes every answer
(in prompt order) and what it saw to OUT.json. MODE: ``replicas`` (DDP-style), ``fsdp2``
(``fully_shard`` on every layer: synced forwards), ``fail-rank1`` (rank 1's generator raises),
``fsdp1`` (the ``FullyShardedDataParallel`` wrapper, a unit per layer),
``fsdp2-too-long`` (FSDP2, one prompt too long for the model, one prompt a batch),
``fsdp2-eos-rank1`` (FSDP2, and rank 1's answers all end at EOS at their first token: the
generation config gets as extra EOS ids the first greedy tokens of exactly rank 1's prompts,
computed from the full model before sharding; rank 0 keeps stepping with it). In that mode the
worker also writes ``expected``: the answers of one process with the same config.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import torch
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


def _end_rank1_early(model: Any, tok: Any, samples: list[Sample],
                     params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Make rank 1's greedy answers end at their first token (extra EOS ids: the tokens they
    start with, none of which starts a rank 0 answer); the one-process answers with that."""
    from predwatch.generation.base import resolve_params
    from predwatch.generation.distributed import shard_indices
    from predwatch.generation.hf import HFGenerator

    full = HFGenerator(model, tok, precision="fp32")
    gen_config = full._generation_config(resolve_params(params))
    ids = []
    for sample in samples:  # the greedy answer's tokens, from the full model
        prompt = torch.tensor([full._encode(sample)])
        out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                             generation_config=gen_config)
        ids.append(out[0, prompt.shape[1]:].tolist())
    mine = shard_indices(samples, 1, 2)
    extra = {ids[i][0] for i in mine}
    if any(ids[i][0] in extra for i in shard_indices(samples, 0, 2)):
        raise SystemExit(f"rank 0's answers would end at once too: {ids}")
    config = model.generation_config
    eos = config.eos_token_id
    config.eos_token_id = sorted({*([eos] if isinstance(eos, int) else eos or []), *extra})
    answers = HFGenerator(model, tok, precision="fp32").generate(samples, params)
    return [a.model_dump(mode="json") for a in answers]


def main() -> None:
    out, mode = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 13
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))
    from predwatch.generation.distributed import (
        ShardedGenerator,
        process_group_timeout_s,
        rank_info,
    )
    from predwatch.generation.hf import HFGenerator
    from predwatch.generation.tiny import build_tiny_model
    from predwatch.sampling import select_samples

    raw = prompts(n)
    params: dict[str, Any] = {"max_new_tokens": 12, "batch_size": 4}
    if mode == "fsdp2-too-long":
        # The longest prompt (rank 0's) exceeds the model's 512 positions; one prompt a batch:
        # rank 0 must still run as many batches as rank 1.
        raw = [{"prompt": "word " * 600, "completion": "x"}, *raw]
        params["batch_size"] = 1
    samples = select_samples(raw, None).samples
    model, tok = build_tiny_model(seed=0)
    expected = None
    if mode == "fsdp2-too-long":
        reference = HFGenerator(model, tok, precision="fp32").generate(samples, params)
        expected = [a.model_dump(mode="json") for a in reference]
    if mode == "fsdp2-eos-rank1":
        expected = _end_rank1_early(model, tok, samples, params)
    if mode.startswith("fsdp2"):
        from torch.distributed.fsdp import fully_shard

        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
    if mode == "fsdp1":  # the FullyShardedDataParallel wrapper, one unit per decoder layer
        import functools

        import torch
        from torch.distributed.fsdp import FullyShardedDataParallel
        from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

        layer = type(model.model.layers[0])
        model = FullyShardedDataParallel(model, device_id=torch.device("cpu"),
                                         auto_wrap_policy=functools.partial(
                                             transformer_auto_wrap_policy,
                                             transformer_layer_cls={layer}))
    inner: Any = HFGenerator(model, tok, precision="fp32")
    if mode == "fail-rank1" and rank_info().rank == 1:
        inner = Broken()
    gen = ShardedGenerator(inner, model=model)
    answers = gen.generate(samples, params)
    if rank_info().is_main:
        with open(out, "w", encoding="utf-8") as fh:
            json.dump({"answers": [a.model_dump(mode="json") for a in answers],
                       "synced": gen.synced, "describe": gen.describe().get("distributed"),
                       "shard": gen.last_shard_size, "expected": expected,
                       "timeout_s": process_group_timeout_s()}, fh)
    dist.barrier()
    # Leave without C++ teardown: on CPU, gloo's process-group destructor can abort
    # ("terminate called without an active exception") after FSDP2's synced forwards, failing
    # a run whose answers were already written and checked. Every rank has passed the barrier.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
