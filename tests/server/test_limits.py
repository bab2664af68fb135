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
        assert answer.json()["code"] == "bad_request"
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


def test_prompt_id_comes_from_the_full_prompt_before_the_cut(store: Any) -> None:
    from predwatch.records import prompt_identity

    settings = Settings(max_body_bytes=64 * 1024, max_rows_per_request=5, max_text_chars=16)
    with TestClient(create_app(store, settings)) as client:
        created = client.post("/api/runs", json={}).json()
        job_id, auth = created["job_id"], {"Authorization": f"Bearer {created['token']}"}
        prompts = ["p" * 20 + "AAA", "p" * 20 + "BBB"]
        answer = client.post(INGEST, headers=auth,
                             json=body(job_id, *({"prompt": p} for p in prompts)))
        assert answer.json()["inserted"] == 2 and answer.json()["truncated"] == 2
        stored = store.list_predictions(job_id).items
        assert {p.prompt_id for p in stored} == {prompt_identity(p) for p in prompts}
        assert all(len(p.prompt) == 16 and p.truncated for p in stored)


def test_text_in_any_shape_of_json_field_is_cut(api: Any) -> None:
    client, job_id, auth, store = api
    long = "z" * 150
    answer = client.post(INGEST, headers=auth, json=body(job_id, {
        "messages": [{"role": "user", "content": [{"type": "text", "text": long}]}],
        "validation_errors": [{"validator": "v", "message": long, "detail": {"k": [long]}}],
        "validation_results": [{"validator": "v", "passed": False, "message": long,
                                "detail": long}],
        "generation_params": {"stop": [long], "note": long},
    }))
    assert answer.json()["truncated"] == 1, answer.text
    p = store.list_predictions(job_id).items[0]
    assert p.truncated is True
    assert p.messages is not None and len(p.messages[0]["content"][0]["text"]) == 100
    issue, result = p.validation_errors[0], p.validation_results[0]
    assert len(issue.message) == 100 and len(issue.detail["k"][0]) == 100
    assert result.message is not None and len(result.message) == 100
    assert len(result.detail) == 100
    assert len(p.generation_params["stop"][0]) == 100 and len(p.generation_params["note"]) == 100


def test_counters_are_non_negative_integers_not_booleans(api: Any) -> None:
    client, job_id, auth, store = api
    cases = [([{"step": -1}], {}, "predictions[0].step"),
             ([{"sample_index": -1}], {}, "predictions[0].sample_index"),
             ([{"step": True}], {}, "predictions[0].step"),
             ([{"sample_number": False}], {}, "predictions[0].sample_number"),
             ([{"completion_tokens": -5}], {}, "predictions[0].completion_tokens"),
             ([{}], {"eval_point": {"step": 1, "sample_count": -1}}, "eval_point.sample_count"),
             ([{}], {"eval_point": {"step": True}}, "eval_point.step")]
    for rows, extra, field in cases:
        refused(client.post(INGEST, json=body(job_id, *rows, **extra), headers=auth), 400, field)
    assert store.list_predictions(job_id).total == 0


def _with_point(api: Any) -> tuple[TestClient, str]:
    client, job_id, auth, _ = api
    assert client.post(INGEST, headers=auth, json=body(job_id, {})).status_code == 200
    assert client.post("/api/sets", json={"name": "g", "items": [{"prompt": "q"}]}).status_code \
        == 201
    return client, job_id


def test_nul_in_a_path_or_query_parameter_is_400_naming_it(api: Any) -> None:
    client, job_id = _with_point(api)
    for url, field in (
        ("/api/runs/%00", "path"),
        (f"/api/runs/{job_id}/prompts/%00/timeline", "path"),
        (f"/api/compare?run_a={job_id}&run_b=%00", "run_b"),
        ("/api/sets/%00", "path"),
        ("/api/sets/g/versions/latest?x%00=1", "x"),
        ("/api/runs?search=a%00", "search"),
        (f"/api/training/predictions/{job_id}?search=%00", "search"),
        (f"/api/training/predictions/{job_id}?validator=%00", "validator"),
    ):
        refused(client.get(url), 400, field)
    for url in ("/runs/%00", "/?q=%00", f"/runs/{job_id}?validator=%00", "/sets/%00"):
        answer = client.get(url)
        assert answer.status_code == 400 and "NUL" in answer.text, (url, answer.text)


def test_nul_in_run_and_set_bodies_is_stripped(api: Any) -> None:
    client, _, _, store = api
    created = client.post("/api/runs", json={
        "name": "a\u0000b", "model_name": "m\u0000",
        "config": {"k\u0000": ["v\u0000", {"x": "\u0000y"}]}})
    assert created.status_code == 201, created.text
    run = store.get_run(created.json()["job_id"])
    assert (run.name, run.model_name, run.config) == ("ab", "m", {"k": ["v", {"x": "y"}]})
    answer = client.post("/api/sets", json={
        "name": "nul", "description": "d\u0000", "source": "s\u0000",
        "items": [{"id": "i\u0000d", "prompt": "p\u0000", "tags": ["t\u0000"]}]})
    assert answer.status_code == 201, answer.text
    items = client.get("/api/sets/nul/versions/latest").json()["items"]
    assert "\u0000" not in json.dumps(items) and items[0]["prompt"] == "p"
    assert client.get("/api/sets/nul").json()["set"]["versions"][0]["description"] == "d"


def _cursor(data: Any) -> str:
    import base64

    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def test_forged_cursors_are_400_naming_cursor(api: Any) -> None:
    client, job_id = _with_point(api)
    forged = [{"s": "", "k": [1e30, 1, 1]}, {"s": "", "k": [{"a": 1}, 1, 1]},
              {"s": "", "k": [2**70, 1, 1]}, {"s": "", "k": [1, True, 1]},
              {"s": "-exact_match", "k": ["x", 1]}, {"s": "-exact_match", "k": [1.0, 2**64]}]
    for data in forged:
        sort = data["s"] or None
        refused(client.get(f"/api/training/predictions/{job_id}",
                           params={"cursor": _cursor(data), "sort": sort}), 400, "cursor")
    runs = [{"s": "runs", "k": ["2020-01-01", {"a": 1}]}, {"s": "runs", "k": [1, "x"]},
            {"s": "runs", "k": ["2020-01-01", "a\u0000"]},
            {"s": "runs", "k": ["0001-01-01T00:00:00+05:00", "x"]}]
    for data in runs:
        refused(client.get("/api/runs", params={"cursor": _cursor(data)}), 400, "cursor")
        assert client.get("/", params={"cursor": _cursor(data)}).status_code == 400


def test_digits_that_are_not_ascii_decimals_are_refused(api: Any) -> None:
    client, job_id = _with_point(api)
    refused(client.get(f"/api/compare?run_a={job_id}&run_b={job_id}&cursor=\u00b2"), 400,
            "cursor")
    refused(client.get(f"/api/compare?run_a={job_id}&run_b={job_id}&cursor={10**30}"), 400,
            "cursor")
    refused(client.get("/api/sets/g/versions/\u00b2"), 400, "version")
    refused(client.get(f"/api/sets/g/versions/{10**30}"), 400, "version")


def test_huge_integers_are_refused_not_overflowed(api: Any) -> None:
    client, job_id = _with_point(api)
    huge = 10**30
    for url, field in ((f"/api/sets/g/versions/1?offset={huge}", "offset"),
                       (f"/api/sets/g/diff?a={huge}", "a"), (f"/api/sets/g/diff?a=1&b={huge}", "b"),
                       (f"/api/runs/{job_id}/stream?after={huge}", "after"),
                       (f"/api/training/predictions/{job_id}/stream?after={huge}", "after")):
        refused(client.get(url), 400, field)
    refused(client.get(f"/api/runs/{job_id}/stream", headers={"Last-Event-ID": "9" * 32}),
            400, "Last-Event-ID")
    for url in (f"/runs/{job_id}?page={huge}", f"/runs/{job_id}?step={huge}",
                f"/compare?run_a={job_id}&step_a={huge}", f"/sets/g?page={huge}",
                f"/sets/g/versions/{huge}", f"/sets/g/diff?a={huge}"):
        answer = client.get(url)
        assert answer.status_code == 400, (url, answer.text)


def test_estimate_figures_are_bounded(api: Any) -> None:
    client = api[0]
    for figures, field in (({"num_train_epochs": 1e308, "steps_per_epoch": 1e308},
                            "num_train_epochs"),
                           ({"num_train_epochs": 1, "steps_per_epoch": 1e308}, "steps_per_epoch"),
                           ({"max_steps": -5}, "max_steps"), ({"eval_steps": 1e300}, "eval_steps"),
                           ({"prompts": 10**30}, "prompts")):
        refused(client.post("/api/estimate", json=figures), 400, field)
    assert client.post("/api/estimate", json={"num_train_epochs": 3, "steps_per_epoch": 100}
                       ).status_code == 200


def test_every_body_is_bounded_not_only_ingest(api: Any) -> None:
    client = api[0]
    big = {"config": {"blob": "x" * 70_000}}
    refused(client.post("/api/runs", json=big), 413, "body")
    refused(client.post("/api/sets", json={"name": "big", "items": [{"prompt": "x" * 70_000}]}),
            413, "body")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"config": {"blob": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}}'

    refused(client.post("/api/runs", content=chunks(),
                        headers={"Content-Type": "application/json"}), 413, "body")
    assert client.post("/login", content=b"key=" + b"x" * 70_000,
                       headers={"Content-Type": "application/x-www-form-urlencoded"}
                       ).status_code == 413
    assert client.post("/api/runs", json={"config": {"small": "x" * 1000}}).status_code == 201


def test_set_item_text_over_the_text_limit_is_refused_naming_it(api: Any) -> None:
    client = api[0]
    items = [{"prompt": "ok"}, {"prompt": "q", "answer": "a" * 101}]
    refused(client.post("/api/sets", json={"name": "long", "items": items}), 413,
            "items[1].answer")
    nested = [{"messages": [{"role": "user", "content": "c" * 101}]}]
    refused(client.post("/api/sets", json={"name": "long", "items": nested}), 413,
            "items[0].messages[0].content")
