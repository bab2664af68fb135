"""Conformance: the original system's clients, pointed at a real ``predwatch serve``, work
unchanged. Payloads are exactly what its writer and SDKs send (``compat_wire``); answers are
read back through every original route and checked against the shapes its clients declare.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from compat_wire import (
    INGEST,
    ORIGINAL_COLUMNS,
    ORIGINAL_TREND_KEYS,
    generated,
    new_job,
    serve,
    write,
    writer_records,
)

from predwatch.records import prompt_identity
from predwatch.testing import ServerHandle


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerHandle]:
    yield from serve(request, tmp_path_factory.mktemp("compat"))


def get(server: ServerHandle, path: str, **params: Any) -> Any:
    answer = httpx.get(server.url + path, params=params, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_the_original_writers_records_are_all_stored(server: ServerHandle) -> None:
    job_id, token = new_job(server)
    preds = [generated(0, 10, 0, cer=0.5, passed=False),              # failed validation
             generated(0, 10, 1, cer=0.0, passed=True),               # validation_errors: null
             generated(0, 10, 2, passed=False, schema_error=True),    # no ground truth/scores
             generated(0, 10, 3)]                                     # no validators at all
    records = writer_records(preds, job_id, "user-1")
    assert records[1]["validation_errors"] is None and records[3]["validation_pass"] is None
    answer = write(server, token, job_id, records)
    assert answer.status_code == 200, answer.text
    assert answer.json()["success"] is True and answer.json()["count"] == 4

    body = get(server, f"/api/training/predictions/{job_id}")
    assert (body["job_id"], body["total_count"], body["epoch_count"]) == (job_id, 4, 1)
    rows = body["predictions"]
    assert [r["sample_index"] for r in rows] == [0, 1, 2, 3]
    for sent, row in zip(records, rows, strict=True):
        assert ORIGINAL_COLUMNS <= row.keys()
        assert isinstance(row["id"], str) and row["job_id"] == job_id
        assert isinstance(row["epoch"], int) and row["epoch"] == 0
        for name in ("step", "sample_index", "source_index", "sample_source", "sample_source_id",
                     "prompt", "prediction", "prompt_tokens", "completion_tokens", "total_tokens",
                     "latency_ms", "max_new_tokens", "do_sample", "validation_pass",
                     "validation_kind", "exact_match", "char_error_rate", "length_ratio",
                     "word_overlap"):
            assert row[name] == sent.get(name), name
        assert row["ground_truth"] == sent.get("ground_truth")
        assert row["prompt_id"] == prompt_identity(sent["prompt"])  # derived when null
        assert row["created_at"]
    assert rows[1]["validation_errors"] == []  # null: none
    assert rows[0]["validation_errors"] == records[0]["validation_errors"]
    assert rows[2]["validation_errors"][1]["schema_path"] == "/schemas/answer.json"  # kept
    assert len({r["id"] for r in rows}) == 4


def test_a_samples_file_run_and_the_sdks_typed_records(server: ServerHandle) -> None:
    job_id, token = new_job(server)
    records = writer_records([generated(1, 20, i, cer=0.1, samples_path=True) for i in range(2)],
                             job_id, "user-1")
    assert write(server, token, job_id, records).json()["count"] == 2
    # The TypeScript SDK's typed record (job_id/user_id included, validation_errors unknown) and
    # the Python SDK's documented example (neither), in one request.
    ts = {"job_id": job_id, "user_id": "user_123", "epoch": 1, "step": 20, "sample_index": 5,
          "prompt": "What is 2+2?", "prediction": "4", "ground_truth": "4", "exact_match": 1,
          "char_error_rate": 0, "validation_pass": True, "validation_kind": "json_parse",
          "validation_errors": []}
    py = {"epoch": 1, "step": 20, "sample_index": 6, "prompt": "What is 3+3?",
          "prediction": "6", "ground_truth": "6"}
    answer = write(server, token, job_id, [ts, py])
    assert answer.status_code == 200, answer.text
    assert answer.json()["count"] == 2
    rows = get(server, f"/api/training/predictions/{job_id}", epoch=1)["predictions"]
    assert [r["sample_source"] for r in rows] == ["prediction_set"] * 2 + ["dataset"] * 2
    assert rows[0]["sample_source_id"] == "samples.jsonl"
    assert rows[2]["prompt"] == "What is 2+2?" and rows[3]["ground_truth"] == "6"


def seed_three_epochs(server: ServerHandle) -> str:
    """Epoch 0 at steps 10 and 20, epoch 1 at step 30, epoch 2 at step 40 (the original
    writer's integer epochs; several evaluation points may share one)."""
    job_id, token = new_job(server)
    points = ((0, 10, [0.5, 0.5, None]), (0, 20, [0.2, None, 0.2]), (1, 30, [0.1, 0.1, 0.1]),
              (2, 40, [0.0, 0.2, 0.1]))
    for epoch, step, cers in points:
        preds = [generated(epoch, step, i, cer=cer, passed=None if cer is None else cer < 0.3)
                 for i, cer in enumerate(cers)]
        assert write(server, token, job_id, writer_records(preds, job_id, "u")).status_code == 200
    return job_id


def test_list_pages_filters_by_integer_epoch_and_counts_the_filter(server: ServerHandle) -> None:
    job_id = seed_three_epochs(server)
    body = get(server, f"/api/training/predictions/{job_id}")
    assert (body["total_count"], body["epoch_count"]) == (12, 3)
    assert len(body["predictions"]) == 12  # default limit 50
    assert [(r["epoch"], r["step"]) for r in body["predictions"]][:4] == [
        (0, 10), (0, 10), (0, 10), (0, 20)]
    page = get(server, f"/api/training/predictions/{job_id}", epoch=0, limit=4, offset=4)
    assert page["total_count"] == 6  # the filter's total, not the run's
    assert [(r["step"], r["sample_index"]) for r in page["predictions"]] == [(20, 1), (20, 2)]
    assert get(server, f"/api/training/predictions/{job_id}", epoch=2)["total_count"] == 3
    assert get(server, f"/api/training/predictions/{job_id}", epoch=7)["predictions"] == []
    everything = [r["id"] for r in body["predictions"]]
    paged = [r["id"] for offset in (0, 5, 10) for r in get(
        server, f"/api/training/predictions/{job_id}", limit=5, offset=offset)["predictions"]]
    assert paged == everything  # stable ids, stable order


def test_epochs_and_trends_have_one_entry_per_integer_epoch(server: ServerHandle) -> None:
    job_id = seed_three_epochs(server)
    epochs = get(server, f"/api/training/predictions/{job_id}/epochs")
    assert epochs == {"job_id": job_id, "epochs": [
        {"epoch": 0, "prediction_count": 6, "latest_step": 20},
        {"epoch": 1, "prediction_count": 3, "latest_step": 30},
        {"epoch": 2, "prediction_count": 3, "latest_step": 40}]}

    body = get(server, f"/api/training/predictions/{job_id}/trends")
    assert {"job_id", "trends", "overall_improvement"} <= body.keys()
    trends = body["trends"]
    assert [(t["epoch"], t["step"], t["sample_count"]) for t in trends] == [
        (0, 20, 6), (1, 30, 3), (2, 40, 3)]
    first = trends[0]
    assert ORIGINAL_TREND_KEYS <= first.keys()
    assert first["avg_char_error_rate"] == pytest.approx(1.4 / 4)  # nulls left out
    assert (first["min_char_error_rate"], first["max_char_error_rate"]) == (0.2, 0.5)
    assert first["avg_exact_match"] == pytest.approx(0.0)
    assert first["avg_word_overlap"] == pytest.approx(1 - 1.4 / 4)
    assert first["validation_pass_rate"] == pytest.approx(2 / 4)  # passes / non-null
    assert trends[2]["avg_exact_match"] == pytest.approx(1 / 3)
    cer_first, cer_last = 1.4 / 4, 0.1
    assert body["overall_improvement"] == pytest.approx((cer_first - cer_last) / cer_first * 100)

    points = get(server, f"/api/training/predictions/{job_id}/trends", per="point")
    assert [t["step"] for t in points["trends"]] == [10, 20, 30, 40]
    assert points["per"] == "point" and points["trends"][0]["avg_char_error_rate"] == 0.5


def test_overall_improvement_is_null_without_two_epochs_or_with_a_first_cer_of_0(
        server: ServerHandle) -> None:
    job_id, token = new_job(server)
    write(server, token, job_id, writer_records([generated(0, 5, 0, cer=0.4)], job_id, "u"))
    assert get(server, f"/api/training/predictions/{job_id}/trends")[
        "overall_improvement"] is None  # one epoch
    write(server, token, job_id, writer_records([generated(1, 9, 0, cer=0.2)], job_id, "u"))
    assert get(server, f"/api/training/predictions/{job_id}/trends")[
        "overall_improvement"] == pytest.approx(50.0)
    perfect, token2 = new_job(server)
    for epoch, cer in ((0, 0.0), (1, 0.3)):
        write(server, token2, perfect,
              writer_records([generated(epoch, epoch + 1, 0, cer=cer)], perfect, "u"))
    assert get(server, f"/api/training/predictions/{perfect}/trends")[
        "overall_improvement"] is None  # not a red "0.0%"


def test_errors_carry_a_human_readable_error_and_a_code(server: ServerHandle) -> None:
    job_id, token = new_job(server)
    other, _ = new_job(server)
    bad_token = write(server, "pwr_not-a-token", job_id, writer_records(
        [generated(0, 1, 0)], job_id, "u"))
    assert bad_token.status_code == 401
    body = bad_token.json()
    assert body["error"].startswith("Unauthorized: ") and body["code"] == "unauthorized"
    assert body["message"]
    # A record naming another job: refused, naming the field; nothing stored.
    records = writer_records([generated(0, 1, 0), generated(0, 1, 1)], job_id, "u")
    records[1]["job_id"] = other
    refused = write(server, token, job_id, records)
    assert refused.status_code == 403
    assert refused.json()["detail"]["field"] == "predictions[1].job_id"
    assert refused.json()["error"].startswith("Forbidden: ")
    assert get(server, f"/api/training/predictions/{job_id}")["total_count"] == 0
    missing = httpx.get(f"{server.url}/api/training/predictions/nope/trends", timeout=30)
    assert missing.status_code == 404
    assert missing.json()["error"] == "Not Found: run 'nope' not found"
    bad = httpx.post(server.url + INGEST, content=b"{", timeout=30,
                     headers={"Authorization": f"Bearer {token}"})
    assert bad.status_code == 400 and bad.json()["error"].startswith("Bad Request: ")


def test_the_sdks_keys_are_ignored_on_an_open_server(server: ServerHandle) -> None:
    """The original SDKs always send their key (in one of three headers); an open loopback
    server has none to check it against, so it serves them as anonymous callers."""
    job_id, token = new_job(server)
    write(server, token, job_id, writer_records([generated(0, 1, 0)], job_id, "u"))
    for headers in ({"X-API-Key": "wak_original_key"}, {"X-Workspace-API-Key": "wak_x"},
                    {"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.session"}):
        for path in ("", "/epochs", "/trends"):
            answer = httpx.get(f"{server.url}/api/training/predictions/{job_id}{path}",
                               headers=headers, timeout=30)
            assert answer.status_code == 200, (headers, path, answer.text)
    # A predwatch secret is still checked.
    refused = httpx.get(f"{server.url}/api/training/predictions/{job_id}", timeout=30,
                        headers={"X-API-Key": "pwk_unknown"})
    assert refused.status_code == 401


def test_two_samples_of_one_prompt_are_two_rows(server: ServerHandle) -> None:
    job_id, token = new_job(server)
    preds = [generated(0, 3, 0, cer=0.1), generated(0, 3, 1, cer=0.9)]
    preds[1]["prompt"] = preds[0]["prompt"]  # the sampler drew the same prompt twice
    records = writer_records(preds, job_id, "u")
    assert write(server, token, job_id, records).json()["count"] == 2
    assert write(server, token, job_id, records).json()["count"] == 2  # a re-send
    rows = get(server, f"/api/training/predictions/{job_id}")["predictions"]
    assert [(r["sample_index"], r["char_error_rate"]) for r in rows] == [(0, 0.1), (1, 0.9)]


def test_openapi_documents_the_original_shapes(server: ServerHandle) -> None:
    spec = get(server, "/openapi.json")
    schemas = spec["components"]["schemas"]
    row = schemas["OriginalPrediction"]["properties"]
    assert ORIGINAL_COLUMNS <= row.keys() and row["epoch"]["type"] == "integer"
    assert row["id"]["type"] == "string"
    assert {"job_id", "trends", "overall_improvement"} <= schemas["OriginalTrends"][
        "properties"].keys()
    assert "per" in str(spec["paths"]["/api/training/predictions/{job_id}/trends"])


def test_response_bodies_validate_against_their_models(server: ServerHandle) -> None:
    from predwatch.server.compat import OriginalEpochs, OriginalPredictionsPage, OriginalTrends

    job_id = seed_three_epochs(server)
    OriginalPredictionsPage.model_validate(get(server, f"/api/training/predictions/{job_id}"))
    OriginalEpochs.model_validate(get(server, f"/api/training/predictions/{job_id}/epochs"))
    OriginalTrends.model_validate(get(server, f"/api/training/predictions/{job_id}/trends"))


def test_ingest_keeps_its_own_extras_for_predwatch_clients(server: ServerHandle) -> None:
    job_id, token = new_job(server)
    body = write(server, token, job_id, writer_records([generated(0, 1, 0)], job_id, "u")).json()
    assert {"success", "count", "inserted", "truncated", "job_id"} <= body.keys()
    assert body["inserted"] == 1
