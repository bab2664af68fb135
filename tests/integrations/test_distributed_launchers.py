"""Recording under real launchers: ``torchrun`` (Trainer + DDP) and ``accelerate launch``.

Every rank generates its share; the main process alone writes one run with each prompt once,
and the rows equal what one process answers with the same weights (greedy, fp32). Each launch
has a hard timeout, so a hang fails instead of stalling the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")

from predwatch.config import PredictionsConfig  # noqa: E402
from predwatch.generation.hf import HFGenerator  # noqa: E402
from predwatch.recording.sources import load_samples  # noqa: E402
from predwatch.storage import open_store  # noqa: E402
from predwatch.testing import free_port  # noqa: E402

HERE = Path(__file__).resolve().parent
WORKER = HERE / "dist_train_worker.py"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(HERE))
from dist_train_worker import RAW  # noqa: E402

sys.path.pop(0)


def _env(workdir: Path) -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    # The README's defaults (./predwatch.db, ./.predwatch/spool), not the suite's environment.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("PREDWATCH_")}
    return {**inherited, "OMP_NUM_THREADS": "1", "HF_HOME": str(workdir / "hf"),
            "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


def _launch(cmd: list[str], workdir: Path) -> list[dict[str, Any]]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=workdir,
                          env=_env(workdir), check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    results = sorted(workdir.glob("result-*.json"))
    return [json.loads(p.read_text()) for p in results]


def _torchrun(mode: str, workdir: Path, procs: int) -> list[dict[str, Any]]:
    return _launch([str(BIN / "torchrun"), "--nproc_per_node", str(procs), "--master_addr",
                    "127.0.0.1", "--master_port", str(free_port()), str(WORKER), mode,
                    str(workdir)], workdir)


def _accelerate(mode: str, workdir: Path, procs: int) -> list[dict[str, Any]]:
    config = workdir / "accelerate.yaml"  # never the user's ~/.cache config
    config.write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: "
        + ("MULTI_CPU" if procs > 1 else "'NO'")
        + f"\nnum_machines: 1\nnum_processes: {procs}\nmachine_rank: 0\n"
        "mixed_precision: 'no'\nuse_cpu: true\nmain_training_function: main\n",
        encoding="utf-8")
    # With --cpu, accelerate launch starts several processes only through mpirun; torchrun's
    # launcher (--multi_gpu) starts them here, and the script's Accelerator(cpu=True) uses gloo.
    how = ["--multi_gpu"] if procs > 1 else ["--cpu"]
    return _launch([str(BIN / "accelerate"), "launch", "--config_file", str(config), *how,
                    "--num_processes", str(procs), "--main_process_port", str(free_port()),
                    str(WORKER), mode, str(workdir)], workdir)


def _rows(db: Path, cards: list[dict[str, Any]] | None = None) -> dict[int, list[Any]]:
    store = open_store(f"sqlite:///{db}")
    try:
        (run,) = store.list_runs().items
        rows = store.list_predictions(run.id, limit=1000).items
        if cards is not None:
            cards.extend(point.card for point in store.eval_points(run.id))
    finally:
        store.close()
    by_step: dict[int, list[Any]] = {}
    for row in sorted(rows, key=lambda r: (r.step, r.sample_index)):
        by_step.setdefault(row.step, []).append(row)
    return by_step


def _answers(model: Any, tokenizer: Any, config: dict[str, Any]) -> list[tuple[str, int | None]]:
    cfg = PredictionsConfig.from_dict(config)
    samples = load_samples(cfg, RAW)
    gens = HFGenerator(model, tokenizer, precision="fp32").generate(
        samples, cfg.generation_params())
    return [(g.text or "", g.completion_tokens) for g in gens]


@pytest.mark.slow
def test_trainer_ddp_two_ranks_record_one_run_equal_to_one_process(tmp_path: Path) -> None:
    from transformers import AutoTokenizer, LlamaForCausalLM

    results = _torchrun("trainer", tmp_path, procs=2)
    assert [r["world_size"] for r in results] == [2, 2]
    assert [r["wrapped"] for r in results] == ["DistributedDataParallel"] * 2
    assert [r["opened_sink"] for r in results] == [True, False]  # rank 1 wrote nothing
    assert results[0]["summaries"] == results[1]["summaries"] == 2
    # Every rank logged the same predwatch metrics (best-checkpoint choice agrees).
    assert results[0]["logged"] == results[1]["logged"]
    assert len(results[0]["logged"]) == 2
    cards: list[dict[str, Any]] = []
    by_step = _rows(tmp_path / "predwatch.db", cards)
    for card in cards:  # how each point was shared out
        assert card["distributed"]["world_size"] == card["world_size"] == 2
        assert card["distributed"]["synced"] is False
        assert card["distributed"]["shard_sizes"] == [3, 2]
    assert sorted(by_step) == [1, 2]  # 16 rows, 2 ranks x 4: two steps, an eval at each
    config = {"sample_count": 5, "max_new_tokens": 8, "batch_size": 2}
    for step, rows in by_step.items():
        assert [r.sample_index for r in rows] == list(range(5))  # each prompt once
        assert len({r.prompt_id for r in rows}) == 5
        saved = tmp_path / "out" / f"checkpoint-{step}"
        model = LlamaForCausalLM.from_pretrained(saved)
        tokenizer = AutoTokenizer.from_pretrained(saved)
        got = [(r.prediction or "", r.completion_tokens) for r in rows]
        assert got == _answers(model, tokenizer, config), step


def _accelerate_rows(tmp_path: Path, procs: int) -> tuple[list[dict[str, Any]], dict[int, Any]]:
    work = tmp_path / f"p{procs}"
    work.mkdir()
    (work / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RAW))
    results = _accelerate("accelerate", work, procs)
    return results, _rows(work / "predwatch.db")


@pytest.mark.slow
def test_readme_snippet_under_accelerate_records_the_same_in_one_and_two_processes(
    tmp_path: Path,
) -> None:
    one, rows1 = _accelerate_rows(tmp_path, 1)
    two, rows2 = _accelerate_rows(tmp_path, 2)
    assert [r["world_size"] for r in two] == [2, 2]
    assert [r["opened_sink"] for r in two] == [True, False]
    assert two[0]["run_id"] == two[1]["run_id"]  # every rank knows the one run
    assert sorted(rows1) == sorted(rows2) == [0, 1, 2]
    for step in rows1:
        assert [r.error for r in rows2[step]] == [None] * 8
        assert ([(r.prompt_id, r.prediction, r.completion_tokens) for r in rows2[step]]
                == [(r.prompt_id, r.prediction, r.completion_tokens) for r in rows1[step]])
        assert rows2[step][0].precision == "fp32"


@pytest.mark.slow
def test_accelerate_bf16_answers_are_labelled_bf16(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RAW))
    done = subprocess.run(
        [sys.executable, str(WORKER), "accelerate-bf16", str(tmp_path)], capture_output=True,
        text=True, timeout=300, cwd=tmp_path, env=_env(tmp_path), check=False)
    assert done.returncode == 0, done.stderr[-6000:]
    rows = _rows(tmp_path / "predwatch.db")
    assert {r.precision for step in rows.values() for r in step} == {"bf16"}
