"""Sharded generation: each rank answers its share, the answers equal a single process's.

Multi-process tests run the real launcher (``torchrun``, gloo on CPU) with a hard timeout, so a
hang fails instead of stalling the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from predwatch.generation.distributed import RankInfo, ShardedGenerator, shard_indices
from predwatch.generation.fake import FakeGenerator
from predwatch.sampling import select_samples
from predwatch.testing import free_port

HERE = Path(__file__).resolve().parent
TORCHRUN = Path(sys.executable).with_name("torchrun")


def _samples(n: int) -> list[Any]:
    sys.path.insert(0, str(HERE))
    try:
        from dist_worker import prompts
    finally:
        sys.path.pop(0)
    return select_samples(prompts(n), None).samples if n else []


@pytest.mark.parametrize("n,world", [(13, 2), (2, 3), (64, 2), (1, 2), (0, 2)])
def test_shards_are_disjoint_cover_every_prompt_and_differ_by_at_most_one(
    n: int, world: int
) -> None:
    samples = _samples(n)
    shards = [shard_indices(samples, r, world) for r in range(world)]
    flat = [i for s in shards for i in s]
    assert sorted(flat) == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert shards == [shard_indices(samples, r, world) for r in range(world)]  # deterministic


def test_one_process_is_the_wrapped_generator_unchanged() -> None:
    samples = _samples(5)
    fake = FakeGenerator()
    wrapped = ShardedGenerator(fake, ranks=RankInfo())
    assert wrapped.generate(samples, {}) == FakeGenerator().generate(samples, {})
    assert fake.calls == [[s.prompt_id for s in samples]]  # every prompt, one call


def _torchrun(tmp_path: Path, mode: str, n: int = 13, procs: int = 2) -> dict[str, Any]:
    out = tmp_path / f"{mode}.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[2] / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [str(TORCHRUN), "--nproc_per_node", str(procs), "--master_addr", "127.0.0.1",
         "--master_port", str(free_port()), str(HERE / "dist_worker.py"), str(out), mode, str(n)],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return json.loads(out.read_text())


def _single_process(n: int) -> list[dict[str, Any]]:
    from predwatch.generation.hf import HFGenerator
    from predwatch.generation.tiny import build_tiny_model

    model, tok = build_tiny_model(seed=0)
    answers = HFGenerator(model, tok, precision="fp32").generate(
        _samples(n), {"max_new_tokens": 12, "batch_size": 4})
    return [a.model_dump(mode="json") for a in answers]


def _texts(rows: list[dict[str, Any]]) -> list[tuple[str, int | None, str | None]]:
    return [(r["text"], r["completion_tokens"], r["finish_reason"]) for r in rows]


@pytest.mark.slow
def test_two_ranks_answer_exactly_what_one_process_answers(tmp_path: Path) -> None:
    result = _torchrun(tmp_path, "replicas", n=13)  # uneven: 7 and 6 prompts
    assert result["synced"] is False and result["shard"] == 7
    assert _texts(result["answers"]) == _texts(_single_process(13))
    assert result["describe"]["world_size"] == 2
    assert result["timeout_s"] == 120  # what the worker's init_process_group set


@pytest.mark.slow
def test_fsdp2_sharded_model_generates_in_step_on_every_rank(tmp_path: Path) -> None:
    result = _torchrun(tmp_path, "fsdp2", n=5)  # 3 and 2 prompts: rank 1 pads to 3 and waits
    assert result["synced"] is True
    assert _texts(result["answers"]) == _texts(_single_process(5))


@pytest.mark.slow
def test_fsdp1_wrapper_generates_in_step_on_every_rank(tmp_path: Path) -> None:
    result = _torchrun(tmp_path, "fsdp1", n=5)
    assert result["synced"] is True and result["describe"]["synced"] is True
    assert _texts(result["answers"]) == _texts(_single_process(5))


@pytest.mark.slow
def test_an_exception_on_one_rank_becomes_error_rows_and_nobody_hangs(tmp_path: Path) -> None:
    result = _torchrun(tmp_path, "fail-rank1", n=6)
    samples = _samples(6)
    broken = set(shard_indices(samples, 1, 2))
    for i, row in enumerate(result["answers"]):
        if i in broken:
            assert row["error"] == "RuntimeError: rank 1 broke" and row["finish_reason"] == "error"
        else:
            assert row["error"] is None and row["text"] is not None


@pytest.mark.slow
def test_fsdp2_rank_whose_answers_all_end_at_once_keeps_stepping(tmp_path: Path) -> None:
    result = _torchrun(tmp_path, "fsdp2-eos-rank1", n=6)
    assert result["synced"] is True
    samples = _samples(6)
    early = set(shard_indices(samples, 1, 2))
    for i, row in enumerate(result["answers"]):
        if i in early:  # rank 1 finished after one token and waited for rank 0
            assert (row["completion_tokens"], row["finish_reason"]) == (1, "eos")
    assert any(row["completion_tokens"] > 1 for row in result["answers"])
    assert _texts(result["answers"]) == _texts(result["expected"])


@pytest.mark.slow
def test_fsdp2_prompt_that_cannot_run_keeps_the_batches_in_step(tmp_path: Path) -> None:
    result = _torchrun(tmp_path, "fsdp2-too-long", n=3)  # 4 prompts, one a batch: 2 and 2
    first = result["answers"][0]
    assert first["finish_reason"] == "error" and "positions" in first["error"]
    assert _texts(result["answers"]) == _texts(result["expected"])
