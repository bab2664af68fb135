"""The OpenAPI document tells the truth: schemathesis against a live ``predwatch serve``.

Three ways — an open loopback server (anonymous), and a server that requires auth called with an
API key and with a run write token — each must give 0 server errors and 0 responses that differ
from the document (status codes, content types, headers such as ``Allow`` on 405, bodies).
Examples are bounded (``MAX_EXAMPLES`` per operation, a fixed seed, the exhaustive coverage
phase on one server only) to keep this in the normal suite. Path and query parameters that name
things get real values (a seeded run, its prompt, a set), so the answers are real pages, not
only 404s.

Not checked: ``positive_data_acceptance`` — a schema cannot say which opaque ``cursor`` a store
issued, nor which items or plans make sense; those requests answer 400/422 naming the field,
which is correct. The two live streams are left out: a stream never ends by itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from predwatch.server.auth import create_api_key
from predwatch.storage import open_store
from predwatch.testing import ServerHandle, start_server

MAX_EXAMPLES = 3
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_headers_conformance,response_schema_conformance,unsupported_method,"
          "negative_data_rejection,missing_required_header,ignored_auth")
SECONDS = 240  # a hard limit for one run; it takes a fraction of that


def seed(url: str, headers: dict[str, str]) -> dict[str, str]:
    """A run with two evaluation points and a prediction set; returns what names them."""
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        created = client.post("/api/runs", json={"name": "fuzzed", "config": {"lr": 1}})
        assert created.status_code == 201, created.text
        run_id, token = created.json()["job_id"], created.json()["token"]
        for step, answer in ((10, "four"), (20, "4")):
            rows = [{"step": step, "epoch": step / 20, "sample_index": i, "prompt": f"2+{i}?",
                     "ground_truth": "4", "prediction": answer, "validation_pass": i % 2 == 0}
                    for i in range(3)]
            sent = client.post("/api/training/local/predictions",
                               json={"job_id": run_id, "predictions": rows},
                               headers={"Authorization": f"Bearer {token}"})
            assert sent.status_code == 200, sent.text
        prompt_id = client.get(f"/api/runs/{run_id}/predictions").json()["predictions"][0][
            "prompt_id"]
        made = client.post("/api/sets", json={"name": "golden", "items": [
            {"prompt": "2+2?", "ground_truth": "4"}, {"prompt": "3+3?", "ground_truth": "6"}]})
        assert made.status_code in (200, 201), made.text
    return {"run_id": run_id, "token": token, "prompt_id": prompt_id}


def fuzz(tmp_path: Path, server: ServerHandle, names: dict[str, str],
         headers: dict[str, str], label: str, phases: str) -> None:
    """Run schemathesis against ``server``; fail with its report unless it found nothing."""
    run_id = names["run_id"]
    config = tmp_path / f"schemathesis-{label}.toml"
    parameters = {"run_id": run_id, "job_id": run_id, "run_a": run_id, "run_b": run_id,
                  "baseline": run_id, "prompt_id": names["prompt_id"], "name": "golden"}
    config.write_text("[parameters]\n" + "".join(
        f"{json.dumps(key)} = {json.dumps(value)}\n" for key, value in parameters.items()))
    command = [
        sys.executable, "-m", "schemathesis.cli", "--no-color", "--config-file", str(config),
        "run",
        f"{server.url}/openapi.json", "--max-examples", str(MAX_EXAMPLES), "--seed", "7",
        "--checks", CHECKS, "--exclude-path-regex", "/stream$", "--request-timeout", "30",
        "--phases", phases,
        # One worker: Python 3.11 keeps the ast module's recursion counter per process, not per
        # thread, so two workers converting ASTs at once fail at random ("AST constructor
        # recursion depth mismatch", CPython gh-106905).
        "--workers", "1",
    ]
    for name, value in headers.items():
        command += ["--header", f"{name}: {value}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=SECONDS,
                          cwd=tmp_path)
    report = "\n".join(line[:400] for line in (done.stdout + done.stderr).splitlines())
    assert done.returncode == 0, f"schemathesis ({label}) found problems:\n{report[-12000:]}"
    assert "Tested:" in report, report[-4000:]  # it reached the operations


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    db = tmp_path_factory.mktemp("open") / "open.db"
    with start_server(f"sqlite:///{db}") as server:
        yield server


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerHandle, str]]:
    db = tmp_path_factory.mktemp("auth") / "auth.db"
    store = open_store(f"sqlite:///{db}")
    try:
        _, key = create_api_key(store, "alice")
    finally:
        store.close()
    with start_server(f"sqlite:///{db}", args=["--auth", "on"]) as server:
        yield server, key


def test_an_open_server_answers_as_its_openapi_document_says(
    open_server: ServerHandle, tmp_path: Path,
) -> None:
    names = seed(open_server.url, {})
    # The coverage phase (every boundary and every kind of invalid value) once, here.
    fuzz(tmp_path, open_server, names, {}, "open", "coverage,fuzzing")


def test_a_server_with_auth_answers_an_api_key_as_documented(
    auth_server: tuple[ServerHandle, str], tmp_path: Path,
) -> None:
    server, key = auth_server
    names = seed(server.url, {"X-API-Key": key})
    fuzz(tmp_path, server, names, {"X-API-Key": key}, "key", "fuzzing,stateful")


def test_a_server_with_auth_answers_a_run_token_as_documented(
    auth_server: tuple[ServerHandle, str], tmp_path: Path,
) -> None:
    server, key = auth_server
    names = seed(server.url, {"X-API-Key": key})
    fuzz(tmp_path, server, names, {"Authorization": f"Bearer {names['token']}"}, "token",
         "fuzzing")


def test_the_document_names_every_error_and_the_credentials(open_server: ServerHandle) -> None:
    spec: dict[str, Any] = httpx.get(open_server.url + "/openapi.json").json()
    runs = spec["paths"]["/api/runs/{run_id}"]["get"]
    assert runs["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/RunDetail")
    assert {"400", "401", "404", "503"} <= set(runs["responses"])
    assert "422" not in runs["responses"]  # the app answers 400, never FastAPI's 422 shape
    create = spec["paths"]["/api/runs"]["post"]["responses"]
    assert {"201", "403", "409", "413"} <= set(create)
    assert spec["paths"]["/api/health"]["get"]["responses"]["200"]["content"][
        "application/json"]["schema"]["$ref"].endswith("/Health")
    assert set(spec["components"]["securitySchemes"]) == {"ApiKey", "Bearer"}
    strings = [path for path, ops in spec["paths"].items() for op in ops.values()
               if op["responses"].get("200", {}).get("content", {}).get(
                   "application/json", {}).get("schema") == {"type": "string"}]
    assert strings == []
    answer = httpx.request("PUT", open_server.url + "/api/runs/x")
    assert answer.status_code == 405 and answer.headers["allow"] == "DELETE, GET"
