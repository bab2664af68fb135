"""What the original system's clients send and how they read it (for the compat conformance
tests): its trainer-side writer's records, its SDKs' payloads, and its UI hook's SSE parsing.

These are re-statements of the original clients' behaviour, written for the tests:
- the writer (local mode) posts ``{job_id, predictions}`` with ``Authorization: Bearer
  <JOB_TOKEN>``; each record has ``job_id, user_id, epoch (int(state.epoch)), step,
  sample_index, source_index, prompt_id, sample_source, sample_source_id, prompt, prediction,
  prompt_tokens, completion_tokens, total_tokens, latency_ms, max_new_tokens, do_sample,
  validation_pass, validation_kind, validation_errors`` (``.get()``: null when the generator did
  not set it), ``ground_truth`` only when truthy, and the four scores only when scored;
- its validators report ``errors or None`` (so ``validation_errors: null`` when they pass) and
  the JSON Schema file validator adds ``schema_path`` to its error objects;
- ``sample_source`` is ``"prediction_set"`` when ``samples_path`` is set;
- the UI's SSE hook reads the body in chunks, splits each chunk's text at newlines, and keeps
  ``event:``/``data:`` state only within one chunk (an event must arrive in one piece).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from predwatch.config import env_flag, env_value
from predwatch.testing import (
    ServerHandle,
    create_postgres_database,
    drop_postgres_database,
    start_server,
)

INGEST = "/api/training/local/predictions"
PG_ADMIN = (env_value("PREDWATCH_TEST_POSTGRES_URL")
            or "postgresql+psycopg://postgres@127.0.0.1:5432/test")

# Every column of the original ``training_predictions`` table, as its UI and SDKs type a row.
ORIGINAL_COLUMNS = {
    "id", "job_id", "user_id", "epoch", "step", "sample_index", "source_index", "prompt_id",
    "sample_source", "sample_source_id", "prompt", "ground_truth", "prediction", "created_at",
    "prompt_tokens", "completion_tokens", "total_tokens", "latency_ms", "max_new_tokens",
    "do_sample", "validation_pass", "validation_kind", "validation_errors", "exact_match",
    "char_error_rate", "length_ratio", "word_overlap",
}
ORIGINAL_TREND_KEYS = {
    "epoch", "step", "sample_count", "avg_exact_match", "avg_char_error_rate", "avg_length_ratio",
    "avg_word_overlap", "min_char_error_rate", "max_char_error_rate", "validation_pass_rate",
}


def generated(epoch: int, step: int, i: int, *, cer: float | None = None,
              passed: bool | None = None, schema_error: bool = False,
              samples_path: bool = False) -> dict[str, Any]:
    """One prediction dict as the original generator hands it to the writer."""
    pred: dict[str, Any] = {
        "epoch": epoch, "step": step, "sample_index": i, "source_index": 10 + i,
        "prompt_id": None, "sample_source": "prediction_set" if samples_path else "dataset",
        "sample_source_id": "samples.jsonl" if samples_path else None,
        "prompt": f"Translate sentence {i}", "prediction": f"answer {i}" if cer == 0 else "wrong",
        "prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10, "latency_ms": 12.5,
        "max_new_tokens": 64, "do_sample": False,
    }
    if cer is not None:
        pred["ground_truth"] = f"answer {i}"
        pred["scores"] = {"exact_match": 1.0 if cer == 0 else 0.0, "char_error_rate": cer,
                          "length_ratio": 1.0, "word_overlap": 1.0 - cer}
    if passed is not None:
        pred["validation_pass"] = passed
        pred["validation_kind"] = "json_parse+json_schema"
        errors = [] if passed else [{"validator": "json_parse",
                                     "message": "Prediction is not valid JSON",
                                     "detail": "Expecting value: line 1 column 1 (char 0)"}]
        if schema_error:
            errors.append({"validator": "json_schema", "message": "JSONSchema validation failed",
                           "detail": "'x' is a required property",
                           "schema_path": "/schemas/answer.json"})
        pred["validation_errors"] = errors or None  # the validators' ``errors or None``
    return pred


def writer_records(predictions: list[dict[str, Any]], job_id: str, user_id: str
                   ) -> list[dict[str, Any]]:
    """The records the original writer builds from generated predictions (local mode)."""
    records = []
    for pred in predictions:
        record = {
            "job_id": job_id, "user_id": user_id, "epoch": pred["epoch"], "step": pred["step"],
            "sample_index": pred["sample_index"], "source_index": pred.get("source_index"),
            "prompt_id": pred.get("prompt_id"), "sample_source": pred.get("sample_source"),
            "sample_source_id": pred.get("sample_source_id"), "prompt": pred["prompt"],
            "prediction": pred["prediction"], "prompt_tokens": pred.get("prompt_tokens"),
            "completion_tokens": pred.get("completion_tokens"),
            "total_tokens": pred.get("total_tokens"), "latency_ms": pred.get("latency_ms"),
            "max_new_tokens": pred.get("max_new_tokens"), "do_sample": pred.get("do_sample"),
            "validation_pass": pred.get("validation_pass"),
            "validation_kind": pred.get("validation_kind"),
            "validation_errors": pred.get("validation_errors"),
        }
        if pred.get("ground_truth"):
            record["ground_truth"] = pred["ground_truth"]
        if pred.get("scores"):
            record.update({name: pred["scores"].get(name) for name in (
                "exact_match", "char_error_rate", "length_ratio", "word_overlap")})
        records.append(record)
    return records


def write(server: ServerHandle, token: str, job_id: str, records: list[dict[str, Any]]
          ) -> httpx.Response:
    """What the writer does: one POST, ``Authorization: Bearer <JOB_TOKEN>``, no other header."""
    return httpx.post(server.url + INGEST, json={"job_id": job_id, "predictions": records},
                      headers={"Authorization": f"Bearer {token}"}, timeout=30)


def new_job(server: ServerHandle) -> tuple[str, str]:
    """A run and its write token (what a user sets as JOB_ID and JOB_TOKEN)."""
    created = httpx.post(server.url + "/api/runs", json={"name": "original"}, timeout=30)
    created.raise_for_status()
    return created.json()["job_id"], created.json()["token"]


def hook_events(chunks: Iterator[bytes]) -> Iterator[tuple[str, str]]:
    """``(event, data)`` as the original UI hook parses them (state kept within a chunk)."""
    buffer = ""
    for chunk in chunks:
        buffer += chunk.decode("utf-8")
        lines = buffer.split("\n")
        buffer = lines.pop()
        event = data = ""
        for line in lines:
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
            elif line == "" and event and data:
                yield event, data
                event = data = ""


def serve(request: pytest.FixtureRequest, tmp: Path, env: dict[str, str] | None = None
          ) -> Iterator[ServerHandle]:
    """A real ``predwatch serve`` (open, loopback) on SQLite or PostgreSQL (``request.param``)."""
    if request.param == "sqlite":
        with start_server(f"sqlite:///{tmp / 'compat.db'}", env=env) as server:
            yield server
        return
    name = f"predwatch_c_{uuid.uuid4().hex[:12]}"
    try:
        url = create_postgres_database(PG_ADMIN, name)
    except Exception as exc:  # no server: skip (or fail when it is required), as conftest does
        if env_flag("PREDWATCH_REQUIRE_POSTGRES"):
            pytest.fail(f"PostgreSQL not reachable at {PG_ADMIN}: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN}")
    try:
        with start_server(url, env=env) as server:
            yield server
    finally:
        drop_postgres_database(PG_ADMIN, name)
