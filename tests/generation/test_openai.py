"""The OpenAI-compatible backend against a real ``transformers serve`` on CPU (tiny local model,
loaded by path; nothing from a hub), and against a server that is down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("transformers")
pytest.importorskip("openai")  # what `transformers serve` needs (transformers[serving])

from predwatch.config import PredictionsConfig  # noqa: E402
from predwatch.errors import ConfigError  # noqa: E402
from predwatch.generation.hf import HFGenerator  # noqa: E402
from predwatch.generation.openai import OpenAIGenerator, ServerUnavailable  # noqa: E402
from predwatch.recording.checkpoints import load_model  # noqa: E402
from predwatch.recording.worker import Backend, Worker, job_payload  # noqa: E402
from predwatch.records import Run  # noqa: E402
from predwatch.sampling import select_samples  # noqa: E402
from predwatch.storage import open_store  # noqa: E402
from predwatch.testing import free_port  # noqa: E402

pytestmark = pytest.mark.slow

RECORDS = [
    *({"prompt": f"n{i} =", "completion": json.dumps({"n": i})} for i in range(4)),
    *({"messages": [{"role": "user", "content": f"Say {w}"}, {"role": "assistant",
                                                              "content": w}]}
      for w in ("hello", "bonjour", "merci")),
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from predwatch.generation.tiny import build_tiny_model

    folder = tmp_path_factory.mktemp("serve") / "checkpoint-7"
    model, tok = build_tiny_model(seed=3)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 7, "epoch": 0.5}))
    return folder


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``transformers serve`` on a free port, loading models on demand by local path."""
    port = free_port()
    home = tmp_path_factory.mktemp("hf-home")
    log_path = home / "serve.log"
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"),
           "HF_HUB_OFFLINE": "1"}
    (home / "hub").mkdir()
    cli = Path(sys.executable).with_name("transformers")
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(cli), "serve", "--device", "cpu", "--host", "127.0.0.1", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, log_path.read_text(errors="replace")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        else:
            pytest.fail("transformers serve did not start:\n" + log_path.read_text())
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def samples() -> list[Any]:
    return select_samples(RECORDS, None).samples


def test_greedy_answers_through_transformers_serve_equal_the_hf_backend(
    serve: str, checkpoint: Path
) -> None:
    params = PredictionsConfig.from_dict({"max_new_tokens": 12, "batch_size": 3}
                                         ).generation_params()
    chosen = samples()
    served = OpenAIGenerator(serve, str(checkpoint), timeout=120)
    try:
        over_http = served.generate(chosen, params)
    finally:
        served.close()
    model, tok = load_model(checkpoint, device="cpu")
    local = HFGenerator(model, tok).generate(chosen, params)
    assert all(g.error is None for g in over_http), [g.error for g in over_http]
    assert [g.text for g in over_http] == [g.text for g in local]
    assert [g.prompt_tokens for g in over_http] == [g.prompt_tokens for g in local]
    assert [g.completion_tokens for g in over_http] == [g.completion_tokens for g in local]
    assert served.describe()["server_model"] == f"{checkpoint}@main"


def test_a_setting_the_server_refuses_becomes_each_samples_error_row(
    serve: str, checkpoint: Path
) -> None:
    # transformers serve accepts the OpenAI fields only: top_k is refused with 422.
    params = PredictionsConfig.from_dict({"max_new_tokens": 4, "do_sample": True, "top_k": 5}
                                         ).generation_params()
    gen = OpenAIGenerator(serve, str(checkpoint), retries=0)
    rows = gen.generate(samples()[:2], params)
    gen.close()
    assert all(r.error and "HTTP 422" in r.error and "top_k" in r.error for r in rows)
    assert {r.finish_reason for r in rows} == {"error"}


def test_a_worker_records_a_checkpoint_through_the_server(
    serve: str, checkpoint: Path, sqlite_url: str
) -> None:
    store = open_store(sqlite_url)
    cfg = PredictionsConfig.from_dict({"max_new_tokens": 6, "sample_count": 3})
    store.enqueue_job("r", 7, str(checkpoint), epoch=0.5,
                      payload=job_payload(cfg, samples=samples()[:3], run=Run(id="r")))
    job = Worker(store, Backend(name="openai", base_url=serve)).run_one()
    assert job.status == "done", job.error
    (point,) = store.eval_points("r")
    assert (point.card["backend"], point.card["server_model"]) == ("openai", f"{checkpoint}@main")
    rows = store.point_predictions("r", 7)
    assert len(rows) == 3 and {r.checkpoint for r in rows} == {str(checkpoint)}
    assert rows[0].model_revision == point.card["checkpoint_hash"]
    # regenerate asks the same server for the same model (the card's backend).
    from predwatch.repro.regenerate import regenerate

    again = regenerate(store, "r", 7, rows[1].prompt_id, checkpoint)
    assert again.matches and again.regenerated == rows[1].prediction
    store.close()


def test_a_server_that_is_down_is_retried_then_reported() -> None:
    gen = OpenAIGenerator(f"http://127.0.0.1:{free_port()}", "m", retries=2, backoff=0,
                          timeout=5)
    with pytest.raises(ServerUnavailable, match="3 attempts each"):
        gen.generate(samples()[:2], {"max_new_tokens": 4})
    gen.close()


def test_a_job_whose_server_is_down_returns_to_the_queue_with_the_error(
    checkpoint: Path, sqlite_url: str
) -> None:
    store = open_store(sqlite_url)
    cfg = PredictionsConfig.from_dict({"max_new_tokens": 4, "sample_count": 2})
    store.enqueue_job("r", 7, str(checkpoint),
                      payload=job_payload(cfg, samples=samples()[:2], run=Run(id="r")))
    backend = Backend(name="openai", base_url=f"http://127.0.0.1:{free_port()}", timeout=5)
    job = Worker(store, backend).run_one()
    assert job.status == "pending" and "ServerUnavailable" in (job.error or "")
    assert store.eval_points("r") == []  # no rows of errors that a retry could not replace
    store.close()


def test_beam_search_is_refused_not_dropped() -> None:
    gen = OpenAIGenerator("http://127.0.0.1:1", "m")
    with pytest.raises(ConfigError, match="num_beams"):
        gen.generate(samples()[:1], {"num_beams": 2})
    gen.close()
