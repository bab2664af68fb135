"""Every rank generates its share of an evaluation point: DDP, FSDP (1 and 2), ZeRO-3, Accelerate.

``ShardedGenerator`` wraps a generator. Under ``torch.distributed`` each rank answers a
deterministic shard of the prompts and the answers are gathered to every rank in the original
order, so the main process writes one run with each prompt once, the same rows a single process
would have written. With one process it is the wrapped generator, unchanged.

Shards: prompts are ordered by length (longest first, as the batch plan orders them) and dealt
round-robin, so every rank gets a similar amount of work; uneven counts differ by at most one.

Sharded models (FSDP, DeepSpeed ZeRO-3) need every rank in every forward pass, since each
forward gathers parameters from all ranks. There the generator runs *synced*: every rank gets a
shard of the same size (the short ones padded with a copy of their own shortest prompt, whose
answer is discarded), batches are planned by count only, and ``generate`` runs with
``synced_gpus=True``, so a rank whose answers have all ended keeps stepping until every rank is
done. Plain DDP needs none of this: each rank generates on its own replica, unwrapped from DDP
(whose forward would synchronise buffers).

No rank is left waiting on another's exception: a shard that fails becomes error rows on that
rank, and the gather that follows runs on every rank either way. (Under a sharded model, an
exception *inside* a forward pass leaves the other ranks in that forward's collective; that ends
at the process group's timeout, like any failed collective, and is reported then.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from predwatch.generation.base import Generator, error_generation
from predwatch.records import Generation, Sample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RankInfo:
    """Where this process stands in the job: ``rank`` of ``world_size`` (``0`` of ``1`` alone)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def rank_info() -> RankInfo:
    """This process's rank and the world size, from an initialised ``torch.distributed`` group
    (one process without one). Imports torch only when it is already loaded."""
    import sys

    if "torch" not in sys.modules:
        return RankInfo()
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return RankInfo()
    return RankInfo(rank=dist.get_rank(), world_size=dist.get_world_size())


def _prompt_size(sample: Sample) -> int:
    if sample.messages:
        return sum(len(str(m.get("content") or "")) for m in sample.messages)
    return len(sample.prompt or "")


def shard_indices(samples: Sequence[Sample], rank: int, world_size: int) -> list[int]:
    """The indices of ``samples`` that ``rank`` answers: longest first, dealt round-robin.

    Deterministic (ties keep the original order), disjoint across ranks, and together they hold
    every index once.
    """
    order = sorted(range(len(samples)), key=lambda i: (-_prompt_size(samples[i]), i))
    return order[rank::world_size]


def is_sharded_model(model: Any) -> bool:
    """True when a forward pass needs every rank: FSDP1 wrappers, FSDP2 ``fully_shard`` modules,
    DeepSpeed ZeRO-3 parameters."""
    seen = [model]
    inner = getattr(model, "module", None)
    if inner is not None:
        seen.append(inner)
    for m in seen:
        name = type(m).__name__
        if name == "FullyShardedDataParallel" or name.startswith("FSDP"):
            return True  # FSDP1 wrapper; FSDP2 swaps the class for ``FSDP<Name>``
    try:
        params = model.parameters()
        first = next(iter(params), None)
    except (AttributeError, TypeError):
        return False
    if first is None:
        return False
    if hasattr(first, "ds_id") or hasattr(first, "ds_status"):
        return True  # a DeepSpeed ZeRO-3 partitioned parameter
    return type(first).__name__ == "DTensor"  # FSDP2 shards parameters as DTensors


def generation_model(model: Any) -> Any:
    """The module to generate with, from what a training loop holds.

    ``DistributedDataParallel``/``DataParallel`` (and Accelerate's wrappers of them) are
    unwrapped to their replica: generating through DDP's forward would synchronise buffers
    across ranks at every step. Sharded models stay as they are: FSDP1's wrapper gathers the
    parameters in its forward, FSDP2 and ZeRO-3 hook the modules themselves (a DeepSpeed engine
    gives its ``module``).
    """
    seen = 0
    while seen < 8:  # wrappers nest (e.g. DDP around a compiled module); never loop forever
        seen += 1
        name = type(model).__name__
        if name in ("DistributedDataParallel", "DataParallel", "DeepSpeedEngine"):
            model = model.module
            continue
        inner = getattr(model, "_orig_mod", None)  # torch.compile
        if inner is not None:
            model = inner
            continue
        return model
    return model


def training_precision(model: Any) -> str | None:
    """The precision a training loop runs ``model`` in, when it is not the parameters' dtype.

    Accelerate's ``mixed_precision`` patches the model's forward with an autocast context (and
    keeps the original as ``_original_forward``); a loop may also call ``record`` inside an
    active autocast region. Returns ``"bf16"``/``"fp16"``, or None to go by the parameters.
    """
    import sys

    base = generation_model(model)
    if "_original_forward" in vars(base) and "accelerate" in sys.modules:
        from accelerate.state import AcceleratorState

        if AcceleratorState._shared_state:  # initialised: an Accelerator exists in this process
            mixed = str(AcceleratorState().mixed_precision)
            if mixed in ("bf16", "fp16"):
                return mixed
    if "torch" in sys.modules:
        import torch

        for device in ("cuda", "cpu"):
            if torch.is_autocast_enabled(device):
                dtype = torch.get_autocast_dtype(device)
                return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype)
    return None


class ShardedGenerator:
    """Answers an evaluation point with every rank generating its shard.

    Args:
        inner: The generator that answers this rank's shard (an ``HFGenerator``).
        synced: Keep every rank in every forward pass (sharded models). None: decided from
            ``model`` with ``is_sharded_model``.
        model: The (possibly wrapped) model, only to decide ``synced``.
        ranks: This process's place in the job (default: from ``torch.distributed``).
    """

    def __init__(
        self,
        inner: Generator,
        *,
        synced: bool | None = None,
        model: Any = None,
        ranks: RankInfo | None = None,
    ) -> None:
        self.inner = inner
        self.ranks = ranks or rank_info()
        self.synced = bool(synced) if synced is not None else (
            model is not None and is_sharded_model(model))
        self.last_shard_size = 0
        self.last_shard_sizes: list[int] = []
        self.last_gather_ms = 0.0

    def generate(self, samples: Sequence[Sample], params: Mapping[str, Any]) -> list[Generation]:
        """Answer this rank's shard, gather every rank's answers; all answers, in order."""
        if not self.ranks.distributed:
            return self.inner.generate(samples, params)
        mine = shard_indices(samples, self.ranks.rank, self.ranks.world_size)
        local = [samples[i] for i in mine]
        call = dict(params)
        if self.synced:
            # Same number of prompts and batches on every rank: the forwards line up.
            size = -(-len(samples) // self.ranks.world_size)
            filler = local[-1] if local else (samples[-1] if samples else None)
            if filler is not None:
                local = local + [filler] * (size - len(local))
            call["synced_gpus"] = True
            call["max_batch_tokens"] = None  # a count-only plan: equal on every rank
        self.last_shard_size = len(mine)
        self.last_shard_sizes = [len(shard_indices(samples, r, self.ranks.world_size))
                                 for r in range(self.ranks.world_size)]
        try:
            answers = self.inner.generate(local, call) if local else []
        except Exception as exc:  # noqa: BLE001 - never skip the gather the other ranks wait in
            log.exception("predwatch: rank %d could not answer its %d prompts; they are recorded "
                          "as error rows", self.ranks.rank, len(mine))
            answers = [error_generation(exc) for _ in local]
        answers = answers[:len(mine)]  # drop the padding's answers
        started = time.perf_counter()
        gathered = _all_gather([(i, a.model_dump(mode="json")) for i, a in zip(mine, answers,
                                                                              strict=True)])
        self.last_gather_ms = (time.perf_counter() - started) * 1000
        result: list[Generation | None] = [None] * len(samples)
        for shard in gathered:
            for index, data in shard:
                result[index] = Generation.model_validate(data)
        missing = [i for i, r in enumerate(result) if r is None]
        for i in missing:  # cannot happen unless a rank dealt differently; say so in the row
            result[i] = error_generation("no rank answered this prompt (shard mismatch)")
        return [r for r in result if r is not None]

    def last_facts(self) -> dict[str, Any]:
        """How the last point was shared out: prompts per rank and the gather's time."""
        return {"shard_sizes": list(self.last_shard_sizes),
                "gather_ms": round(self.last_gather_ms, 3)}

    def describe(self) -> dict[str, Any]:
        """The wrapped generator's facts plus how the point was shared out."""
        facts = dict(self.inner.describe())
        facts["distributed"] = {
            "world_size": self.ranks.world_size,
            "sharding": "round-robin by prompt length",
            "synced": self.synced,
            "mode": "synced forwards (sharded model)" if self.synced else "independent replicas",
        }
        return facts


def _all_gather(payload: list[tuple[int, dict[str, Any]]]) -> list[Any]:
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, payload)
    return out


def agree(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on every rank (one small collective).

    Every rank must take the same path through an evaluation point (record it or skip it);
    otherwise the ones that record would wait forever in the gather.
    """
    ranks = rank_info()
    if not ranks.distributed:
        return flag
    import torch
    import torch.distributed as dist

    device = _collective_device()
    value = torch.tensor([1 if flag else 0], dtype=torch.int64, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def broadcast_from_main(value: Any) -> Any:
    """``value`` as the main process has it, on every rank (e.g. the prompts of the run)."""
    if not rank_info().distributed:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _collective_device() -> Any:
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl" and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def process_group_timeout_s() -> float | None:
    """The default process group's collective timeout in seconds, when it can be read."""
    if not rank_info().distributed:
        return None
    import torch
    import torch.distributed.distributed_c10d as c10d

    try:  # private API (stable since torch 2.2): the backend's options carry the timeout
        group = c10d._get_default_group()
        device = _collective_device() if torch.cuda.is_available() else torch.device("cpu")
        return float(group._get_backend(device).options._timeout.total_seconds())
    except (AttributeError, RuntimeError, ValueError):
        return None
