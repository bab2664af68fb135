"""The original system's routes keep their exact shapes (keys may be added, never renamed).

Bodies here are what the original training client sent: no ``eval_point``, no ``prompt_id``,
no ``run_id`` — the server derives them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from predwatch.config import Settings
from predwatch.records import prompt_identity
from predwatch.server import create_app

ORIGINAL_PREDICTION_KEYS = {
    "epoch", "step", "sample_index", "prompt", "ground_truth", "prediction", "exact_match",
    "char_error_rate", "length_ratio", "word_overlap", "validation_pass", "validation_kind",
    "validation_errors",
}
ORIGINAL_TREND_KEYS = {
    "epoch", "step", "sample_count", "avg_exact_match", "avg_char_error_rate", "avg_length_ratio",
    "avg_word_overlap", "min_char_error_rate", "max_char_error_rate", "validation_pass_rate",
}


def original_row(step: int, epoch: float, i: int, cer: float, passed: bool) -> dict[str, Any]:
    return {
        "epoch": epoch, "step": step, "sample_index": i, "prompt": f"Translate {i}",
        "ground_truth": f"answer {i}", "prediction": f"answer {i}" if cer == 0 else "wrong",
        "exact_match": 1.0 if cer == 0 else 0.0, "char_error_rate": cer, "length_ratio": 1.0,
        "word_overlap": 1.0 - cer, "validation_pass": passed, "validation_kind": "json_parse",
        "validation_errors": [] if passed else [{"validator": "json_parse", "message": "bad"}],
    }


@pytest.fixture
def seeded(store: Any) -> Iterator[tuple[TestClient, str, str]]:
    """A run with three evaluation points: steps 50 and 100 in epoch 1.5, step 150 in epoch 3."""
    with TestClient(create_app(store, Settings(heartbeat_seconds=0.2))) as client:
        created = client.post("/api/runs", json={"name": "compat"}).json()
        job_id, token = created["job_id"], created["token"]
        auth = {"Authorization": f"Bearer {token}"}
        points = ((50, 1.5, [0.5, 0.5, 0.2]), (100, 1.5, [0.2, 0.0, 0.1]),
                  (150, 3.0, [0.0, 0.0, 0.1]))
        for step, epoch, cers in points:
            rows = [original_row(step, epoch, i, cer, cer == 0) for i, cer in enumerate(cers)]
            answer = client.post("/api/training/local/predictions",
                                 json={"job_id": job_id, "predictions": rows}, headers=auth)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["success"] is True and body["count"] == 3
        yield client, job_id, token


def test_ingest_answers_success_and_count(seeded: tuple[TestClient, str, str]) -> None:
    client, job_id, token = seeded
    answer = client.post("/api/training/local/predictions",
                         headers={"Authorization": f"Bearer {token}"},
                         json={"job_id": job_id,
                               "predictions": [original_row(200, 4.0, 0, 0.0, True)]})
    assert answer.status_code == 200
    body = answer.json()
    assert {"success", "count"} <= body.keys()
    assert (body["success"], body["count"]) == (True, 1)


def test_predictions_list_shape_and_filtered_total(seeded: tuple[TestClient, str, str]) -> None:
    client, job_id, _ = seeded
    body = client.get(f"/api/training/predictions/{job_id}").json()
    assert {"job_id", "predictions", "total_count", "epoch_count"} <= body.keys()
    assert (body["job_id"], body["total_count"], body["epoch_count"]) == (job_id, 9, 2)
    first = body["predictions"][0]
    assert ORIGINAL_PREDICTION_KEYS <= first.keys()
    sent = original_row(50, 1.5, 0, 0.5, False)
    sent["validation_errors"][0]["detail"] = None  # a key added to each issue
    assert first == {**first, **sent}  # every value round-trips
    assert first["prompt_id"] == prompt_identity("Translate 0")  # derived by the server

    page = client.get(f"/api/training/predictions/{job_id}",
                      params={"epoch": 1.5, "limit": 4, "offset": 4}).json()
    assert page["total_count"] == 6  # honours the epoch filter, not the page
    assert len(page["predictions"]) == 2
    assert {p["epoch"] for p in page["predictions"]} == {1.5}  # an epoch is never truncated
    assert client.get(f"/api/training/predictions/{job_id}",
                      params={"epoch": 3.0}).json()["total_count"] == 3


def test_epochs_shape(seeded: tuple[TestClient, str, str]) -> None:
    client, job_id, _ = seeded
    body = client.get(f"/api/training/predictions/{job_id}/epochs").json()
    assert body == {"job_id": job_id, "epochs": [
        {"epoch": 1.5, "prediction_count": 6, "latest_step": 100},
        {"epoch": 3.0, "prediction_count": 3, "latest_step": 150},
    ]}


def test_trends_has_one_entry_per_evaluation_point(seeded: tuple[TestClient, str, str]) -> None:
    client, job_id, _ = seeded
    body = client.get(f"/api/training/predictions/{job_id}/trends").json()
    assert set(body) == {"job_id", "trends", "overall_improvement"}
    assert body["job_id"] == job_id
    trends = body["trends"]
    assert [(t["step"], t["epoch"]) for t in trends] == [(50, 1.5), (100, 1.5), (150, 3.0)]
    for entry in trends:
        assert ORIGINAL_TREND_KEYS <= entry.keys()
    first = trends[0]
    assert first["sample_count"] == 3
    assert first["avg_char_error_rate"] == pytest.approx(0.4)
    assert first["avg_exact_match"] == pytest.approx(0.0)
    assert (first["min_char_error_rate"], first["max_char_error_rate"]) == (0.2, 0.5)
    assert first["avg_length_ratio"] == pytest.approx(1.0)
    assert first["avg_word_overlap"] == pytest.approx(0.6)
    assert first["validation_pass_rate"] == pytest.approx(0.0)
    assert trends[2]["validation_pass_rate"] == pytest.approx(2 / 3)
    mean_first, mean_last = 0.4, 0.1 / 3
    assert body["overall_improvement"] == pytest.approx((mean_first - mean_last) / mean_first * 100)


def test_stream_events(seeded: tuple[TestClient, str, str]) -> None:
    client, job_id, _ = seeded
    answer = client.get(f"/api/training/predictions/{job_id}/stream",
                        params={"after": 0, "max_seconds": 0.5})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    blocks = [b for b in answer.text.split("\n\n") if "event: " in b]
    names = [b.split("event: ")[1].split("\n")[0] for b in blocks]
    assert names[0] == "connected" and names.count("prediction") == 9 and "heartbeat" in names
    import json

    data = json.loads(blocks[1].split("data: ", 1)[1])
    assert ORIGINAL_PREDICTION_KEYS <= data.keys() and data["job_id"] == job_id
    assert blocks[1].startswith(f"id: {data['id']}\n")


def test_unknown_job_answers_404_json(store: Any) -> None:
    with TestClient(create_app(store, Settings())) as client:
        for path in ("", "/epochs", "/trends"):
            answer = client.get(f"/api/training/predictions/nope{path}")
            assert answer.status_code == 404
            assert answer.json()["error"] == "not_found"
