"""Limits and bad input: every bad request is a 4xx JSON error naming the field; never a 500."""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from predwatch.config import Settings
from predwatch.server import create_app

LIMITS = Settings(max_body_bytes=64 * 1024, max_rows_per_request=5, max_text_chars=100)
INGEST = "/api/training/local/predictions"


@pytest.fixture
def api(store: Any) -> Iterator[tuple[TestClient, str, dict[str, str], Any]]:
    """(client, run id, write-token headers, store); server errors raise in the test."""
    with TestClient(create_app(store, LIMITS), raise_server_exceptions=True) as client:
        created = client.post("/api/runs", json={}).json()
        yield client, created["job_id"], {"Authorization": f"Bearer {created['token']}"}, store


def body(job_id: str, *rows: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"job_id": job_id, "predictions": [{"step": 1, "prompt": "q", **r} for r in rows],
            **extra}


def refused(answer: Any, status: int, field: str) -> None:
    assert answer.status_code == status, answer.text
    data = answer.json()
    assert data["detail"]["field"] == field, data
    assert data["message"]


def test_bodies_over_the_limit_are_refused_before_and_after_decompression(api: Any) -> None:
    client, job_id, auth, store = api
    big = json.dumps(body(job_id, {"prediction": "x" * 70_000})).encode()
    refused(client.post(INGEST, content=big, headers=auth), 413, "body")
    bomb = gzip.compress(json.dumps(body(job_id, {"prediction": " " * 5_000_000})).encode())
    assert len(bomb) < 64 * 1024  # small on the wire, huge once inflated
    refused(client.post(INGEST, content=bomb, headers={**auth, "Content-Encoding": "gzip"}),
            413, "body")
    assert store.list_predictions(job_id).total == 0


def test_gzip_bodies_are_accepted(api: Any) -> None:
    client, job_id, auth, _ = api
    payload = gzip.compress(json.dumps(body(job_id, {"prediction": "fine"})).encode())
    answer = client.post(INGEST, content=payload, headers={**auth, "Content-Encoding": "gzip"})
    assert answer.json()["count"] == 1
    gzipped = {**auth, "Content-Encoding": "gzip"}
    refused(client.post(INGEST, content=b"\x1f\x8bnot gzip", headers=gzipped), 400, "body")
    refused(client.post(INGEST, content=payload, headers={**auth, "Content-Encoding": "br"}),
            400, "Content-Encoding")


def test_too_many_rows_in_one_request(api: Any) -> None:
    client, job_id, auth, _ = api
    rows = [{"prompt": f"q{i}"} for i in range(6)]
    refused(client.post(INGEST, json=body(job_id, *rows), headers=auth), 413, "predictions")


def test_over_long_text_is_truncated_with_a_flag_not_rejected(api: Any) -> None:
    client, job_id, auth, store = api
    long_chat = [{"role": "user", "content": "c" * 500}]
    answer = client.post(INGEST, headers=auth, json=body(
        job_id, {"prompt": "p" * 150, "prediction": "a" * 101, "messages": long_chat},
        {"prompt": "short", "prediction": "fine"}))
    assert answer.json()["count"] == 2 and answer.json()["truncated"] == 1
    stored = {p.prompt[:5]: p for p in store.list_predictions(job_id).items}
    cut = stored["ppppp"]
    assert (len(cut.prompt), len(cut.prediction), cut.truncated) == (100, 100, True)
    assert len(cut.messages[0]["content"]) == 100
    assert stored["short"].truncated is False


def test_nul_characters_are_stripped_everywhere(api: Any) -> None:
    client, job_id, auth, store = api
    answer = client.post(INGEST, headers=auth, json=body(job_id, {
        "prompt": "a\u0000b", "prediction": "\u0000x", "ground_truth": "y\u0000",
        "metrics": {"m\u0000": 0.5}, "generation_params": {"stop": ["\u0000"]},
        "validation_errors": [{"validator": "v", "message": "m\u0000", "detail": {"k": "\u0000"}}],
    }))
    assert answer.status_code == 200, answer.text
    p = store.list_predictions(job_id).items[0]
    assert (p.prompt, p.prediction, p.ground_truth) == ("ab", "x", "y")
    assert p.metrics == {"m": 0.5} and p.generation_params == {"stop": [""]}
    assert p.validation_errors[0].message == "m" and p.validation_errors[0].detail == {"k": ""}


MALFORMED_ROWS = [  # (rows, extra top-level keys, the field the error must name)
    ([{"bogus": 1}], {}, "predictions[0].bogus"),
    ([{"step": "ten"}], {}, "predictions[0].step"),
    ([{"step": None}], {}, "predictions[0].step"),
    ([{"step": 2**40}], {}, "predictions[0].step"),
    ([{"sample_index": -2**40}], {}, "predictions[0].sample_index"),
    ([{"prompt_id": "x" * 2000}], {}, "predictions[0].prompt_id"),
    ([{"trigger": "sometimes"}], {}, "predictions[0].trigger"),
    ([{"created_at": "0001-01-01T00:00:00+05:00"}], {}, "predictions[0].created_at"),
    ([{"validation_errors": [{"nope": 1}]}], {}, "predictions[0].validation_errors[0].validator"),
    ([{}], {"eval_point": {"step": 2}}, "predictions[0].step"),
    ([{}], {"eval_point": {"step": 1, "surprise": True}}, "eval_point.surprise"),
    ([{}], {"extra_top": 1}, "extra_top"),
]


def test_malformed_rows_are_400_naming_the_field(api: Any) -> None:
    client, job_id, auth, store = api
    for rows, extra, field in MALFORMED_ROWS:
        refused(client.post(INGEST, json=body(job_id, *rows, **extra), headers=auth), 400, field)
    assert store.list_predictions(job_id).total == 0


def test_malformed_bodies_and_parameters_are_400(api: Any) -> None:
    client, job_id, auth, _ = api
    for raw in (b"", b"not json", b"[]", b'{"job_id": 1}', b'{"predictions": []}', b"\xff\xfe",
                b'{"job_id": "x", "predictions": [{"step": 1, "prompt": "\\ud800"}]}',
                b"[" * 5000):
        answer = client.post(INGEST, content=raw, headers=auth)
        assert answer.status_code == 400, (raw[:30], answer.text)
        assert answer.json()["error"] == "bad_request"
    for params, field in (({"limit": 0}, "limit"), ({"limit": "many"}, "limit"),
                          ({"cursor": "garbage"}, "cursor"), ({"sort": "x;drop"}, "sort"),
                          ({"step": -1}, "step")):
        refused(client.get(f"/api/training/predictions/{job_id}", params=params), 400, field)
    refused(client.post("/api/runs", json={"id": "bad id/with slash"}), 400, "id")
    refused(client.post("/api/runs", json={"owner": "me"}), 400, "owner")


def test_non_finite_scores_are_stored_as_unknown(api: Any) -> None:
    client, job_id, auth, store = api
    raw = b'{"job_id": "%s", "predictions": [{"step": 1, "prompt": "q", "exact_match": NaN, ' \
          b'"char_error_rate": Infinity, "metrics": {"f1": -Infinity}}]}' % job_id.encode()
    assert client.post(INGEST, content=raw, headers=auth).status_code == 200
    p = store.list_predictions(job_id).items[0]
    assert (p.exact_match, p.char_error_rate, p.metrics) == (None, None, {"f1": None})
    trends = client.get(f"/api/training/predictions/{job_id}/trends").json()
    assert trends["trends"][0]["avg_exact_match"] is None


def test_random_garbage_never_produces_a_500(api: Any) -> None:
    client, job_id, auth, _ = api
    rng = random.Random(7)
    values: list[Any] = [None, True, -1, 0, 2**63, 1e308, "", "\u0000", "x" * 300, [], {}, [1],
                         {"a": None}, "2024-01-01", "eos", 1.5]
    fields = ["step", "epoch", "prompt", "prediction", "messages", "metrics", "validation_pass",
              "validation_errors", "validation_results", "finish_reason", "created_at",
              "sample_number", "latency_ms", "library_versions", "truncated", "set_version"]
    for _ in range(150):
        row = {"step": 1, "prompt": "q"}
        for name in rng.sample(fields, 3):
            row[name] = rng.choice(values)
        answer = client.post(INGEST, json={"job_id": job_id, "predictions": [row]}, headers=auth)
        assert answer.status_code in (200, 400, 413), (row, answer.text)
