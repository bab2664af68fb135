"""``HFGenerator``'s synced path: a sharded model (FSDP, ZeRO-3) runs every forward on every rank.

A forward pass of a sharded model gathers parameters from every rank, so each rank must run
exactly the same sequence of forwards: the same number of batches (``ShardedGenerator`` gives
every rank a shard of the same size and a count-only batch plan), and within a batch the same
number of decoding steps, which transformers' ``generate(..., synced_gpus=True)`` guarantees (a
rank whose answers have all ended keeps stepping until every rank is done). Hence, unlike the
ordinary path:

- always ``model.generate`` with ``synced_gpus=True``: never an early-exit decoding loop of our
  own, which would stop on one rank while the others wait in its collective;
- a failing batch is not retried in halves (the other ranks would not retry with it): its
  prompts become error rows;
- a prompt that cannot be encoded still takes its place in the batch (a one-token stand-in
  whose answer is discarded), so the batches line up across ranks.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from predwatch.generation.base import error_generation
from predwatch.generation.hf_support import input_device, seeded
from predwatch.records import Generation

if TYPE_CHECKING:
    from transformers import GenerationConfig

    from predwatch.generation.hf import HFGenerator

logger = logging.getLogger(__name__)


def is_synced(p: Mapping[str, Any]) -> bool:
    """Whether the (resolved) params ask for synced generation."""
    return bool(p.get("synced_gpus"))


def stand_in(gen: HFGenerator) -> list[int]:
    """The prompt run in place of one that cannot be encoded: one token, answer discarded."""
    return [gen._pad_id]


def _root_params(model: Any) -> AbstractContextManager[Any]:
    """FSDP1: ``generate`` runs the wrapped module, not the root wrapper's forward, so the
    root's own parameters (embeddings, final norm, head) are gathered here for the whole
    batch; the nested FSDP units (the layers) gather theirs in their forwards, in step."""
    if type(model).__name__ != "FullyShardedDataParallel":
        return nullcontext()
    from torch.distributed.fsdp import FullyShardedDataParallel

    return FullyShardedDataParallel.summon_full_params(model, writeback=False, recurse=False)


def run_synced(
    gen: HFGenerator,
    rows: list[list[int]],
    config: GenerationConfig,
    p: Mapping[str, Any],
    seed: int | list[int],
) -> list[Generation]:
    """One batch through ``model.generate(..., synced_gpus=True)``; error rows on failure."""
    start = time.perf_counter()
    try:
        device = input_device(gen.model)
        batch = gen._tok.pad({"input_ids": rows}, padding=True, return_tensors="pt")
        input_ids = batch["input_ids"].to(device)
        extra: dict[str, Any] = {"tokenizer": gen._tok} if p["stop_strings"] else {}
        if isinstance(seed, list):  # one seed per row (hf_rows.py)
            from predwatch.generation.hf_rows import row_seeded

            config, sampling = row_seeded(config, seed, device)
            extra.update(sampling)
            seed = 0
        with _root_params(gen.model), gen._autocast(device), (
            seeded(seed, device) if p["do_sample"] else nullcontext()
        ):
            output = gen.model.generate(
                input_ids=input_ids,
                attention_mask=batch["attention_mask"].to(device),
                generation_config=config,
                synced_gpus=True,
                **extra,
            )
        new_tokens = output[:, input_ids.shape[1]:].tolist()
    except Exception as exc:  # noqa: BLE001 - the batch's rows say why; no retry (see above)
        elapsed_ms = (time.perf_counter() - start) * 1000
        logger.error(
            "predwatch: a synced batch of %d prompts failed; recorded as error rows (not "
            "retried: every rank must run the same forwards). Failure:\n%s",
            len(rows), traceback.format_exc(),
        )
        return [error_generation(exc, prompt_tokens=len(r), latency_ms=elapsed_ms / len(rows))
                for r in rows]
    finished = [gen._finish(ids, p) for ids in new_tokens]
    elapsed_ms = (time.perf_counter() - start) * 1000
    work = [len(r) + n for r, (_, n, _) in zip(rows, finished, strict=True)]
    return [
        Generation(text=text, prompt_tokens=len(r), completion_tokens=n,
                   latency_ms=elapsed_ms * w / sum(work), finish_reason=reason)
        for r, (text, n, reason), w in zip(rows, finished, work, strict=True)
    ]
