"""The JSON API over a real store (SQLite and PostgreSQL), through FastAPI's TestClient."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from predwatch.config import Settings
from predwatch.delivery import Batch
from predwatch.records import EvalPoint, Prediction
from predwatch.server import create_app


@pytest.fixture
def client(store: Any) -> Iterator[TestClient]:
    with TestClient(create_app(store, Settings(heartbeat_seconds=0.2))) as c:
        yield c


def new_run(client: TestClient, **body: Any) -> tuple[str, str]:
    answer = client.post("/api/runs", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()["job_id"], answer.json()["token"]


def row(step: int, i: int, *, epoch: float | None = None, answer: str = "ok",
        cer: float | None = 0.0, passed: bool | None = None, **extra: Any) -> dict:
    return {"step": step, "epoch": epoch, "sample_index": i, "prompt": f"prompt {i}",
            "ground_truth": "ok", "prediction": answer, "char_error_rate": cer,
            "exact_match": 1.0 if cer == 0 else 0.0, "validation_pass": passed, **extra}


def post(client: TestClient, token: str, job_id: str, rows: list[dict], **extra: Any) -> Any:
    answer = client.post("/api/training/local/predictions",
                         json={"job_id": job_id, "predictions": rows, **extra},
                         headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_creating_a_run_returns_its_token_once_and_lists_are_keyset_paged(
    client: TestClient,
) -> None:
    ids = [new_run(client, name=f"run {i}")[0] for i in range(5)]
    detail = client.get(f"/api/runs/{ids[0]}").json()
    assert detail["name"] == "run 0" and "token" not in detail
    assert detail["summary"] == {"point_count": 0, "prediction_count": 0, "failed_count": 0,
                                 "first_step": None, "last_step": None}
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/runs", params=params).json()
        assert page["total_count"] == 5
        seen += [r["job_id"] for r in page["runs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]  # newest first, each exactly once
    assert client.post("/api/runs", json={"id": ids[0]}).status_code == 409


def test_a_recorder_batch_becomes_an_evaluation_point_with_failures_and_overhead(
    client: TestClient,
) -> None:
    run_id, token = new_run(client)
    point = EvalPoint(run_id=run_id, step=100, epoch=0.5, trigger="eval", generation_ms=1234.5)
    preds = [Prediction(run_id=run_id, step=100, epoch=0.5, trigger="eval", prompt_id=f"p{i}",
                        sample_index=i, prompt=f"q{i}", prediction="a",
                        error="CUDA OOM" if i == 0 else None) for i in range(4)]
    body = Batch(run_id=run_id, point=point, predictions=preds).to_wire()
    first = post(client, token, run_id, body["predictions"], eval_point=body["eval_point"])
    again = post(client, token, run_id, body["predictions"], eval_point=body["eval_point"])
    assert (first["count"], first["inserted"]) == (4, 4)
    assert (again["success"], again["count"], again["inserted"]) == (True, 4, 0)  # idempotent
    points = client.get(f"/api/runs/{run_id}/points").json()
    [p] = points["points"]
    assert (p["step"], p["epoch"], p["trigger"], p["sample_count"], p["failed_count"]) == (
        100, 0.5, "eval", 4, 1)
    assert p["generation_ms"] == p["overhead_ms"] == 1234.5
    assert p["trend"]["failed_count"] == 1
    summary = client.get(f"/api/runs/{run_id}").json()["summary"]
    assert summary["prediction_count"] == 4 and summary["failed_count"] == 1


def test_points_are_keyset_paged_by_step(client: TestClient) -> None:
    run_id, token = new_run(client)
    for step in (10, 20, 30):
        post(client, token, run_id, [row(step, 0)])
    first = client.get(f"/api/runs/{run_id}/points", params={"limit": 2}).json()
    assert [p["step"] for p in first["points"]] == [10, 20]
    rest = client.get(f"/api/runs/{run_id}/points",
                      params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [p["step"] for p in rest["points"]] == [30] and rest["next_cursor"] is None


def test_predictions_pages_cover_every_row_once_and_filters_count_right(client: TestClient) -> None:
    run_id, token = new_run(client)
    post(client, token, run_id, [row(10, i, epoch=1.0, passed=i % 3 != 0) for i in range(7)])
    post(client, token, run_id, [row(20, i, epoch=2.0) for i in range(5)])
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = client.get(f"/api/runs/{run_id}/predictions", params=params).json()
        assert page["total_count"] == 12 and page["epoch_count"] == 2
        seen += [(p["step"], p["sample_index"]) for p in page["predictions"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 12
    failed = client.get(f"/api/runs/{run_id}/predictions", params={"failed_only": True}).json()
    assert failed["total_count"] == 3
    assert {p["sample_index"] for p in failed["predictions"]} == {0, 3, 6}
    by_epoch = client.get(f"/api/runs/{run_id}/predictions", params={"epoch": 2.0}).json()
    assert by_epoch["total_count"] == 5


def test_a_prompts_timeline_follows_it_across_evaluation_points(client: TestClient) -> None:
    run_id, token = new_run(client)
    for step, answer, cer in ((10, "bad", 0.8), (20, "ok", 0.0), (30, "ok", 0.0)):
        post(client, token, run_id, [row(step, 0, answer=answer, cer=cer), row(step, 1)])
    prompt_id = client.get(f"/api/runs/{run_id}/predictions").json()["predictions"][0]["prompt_id"]
    found = client.get(f"/api/runs/{run_id}/prompts/{prompt_id}/timeline").json()
    assert [e["step"] for e in found["entries"]] == [10, 20, 30]
    assert [e["changed"] for e in found["entries"]] == [False, True, False]
    assert found["best_step"] == 20 and found["next_cursor"] is None
    paged = client.get(f"/api/runs/{run_id}/prompts/{prompt_id}/timeline",
                       params={"limit": 2}).json()
    assert len(paged["entries"]) == 2 and paged["next_cursor"] == "2"
    assert client.get(f"/api/runs/{run_id}/prompts/nope/timeline").status_code == 404


def test_comparing_two_points_reports_flips_deltas_and_regressions(client: TestClient) -> None:
    run_id, token = new_run(client)
    post(client, token, run_id, [row(10, 0, passed=True), row(10, 1, passed=False, cer=0.5),
                                 row(10, 2, passed=True)])
    post(client, token, run_id, [row(20, 0, passed=False, answer="bad", cer=0.9),
                                 row(20, 1, passed=True), row(20, 3)])
    found = client.get(f"/api/runs/{run_id}/compare", params={"step_a": 10, "step_b": 20}).json()
    counts = found["counts"]
    assert (counts["paired"], counts["added"], counts["removed"]) == (2, 1, 1)
    assert (counts["pass_to_fail"], counts["fail_to_pass"], counts["regressed"]) == (1, 1, 1)
    first = found["items"][0]
    assert first["regressed"] and first["flip"] == "pass_to_fail"
    assert first["deltas"]["char_error_rate"] == pytest.approx(0.9)
    default = client.get(f"/api/runs/{run_id}/compare").json()  # last point vs the one before
    assert (default["a"]["step"], default["b"]["step"]) == (10, 20)
    only = client.get(f"/api/runs/{run_id}/compare", params={"regressed_only": True}).json()
    assert [i["regressed"] for i in only["items"]] == [True]


def test_comparing_two_runs_pairs_prompts_by_identity(client: TestClient) -> None:
    run_a, token_a = new_run(client, name="baseline")
    run_b, token_b = new_run(client, name="candidate")
    post(client, token_a, run_a, [row(50, i, passed=True) for i in range(3)])
    post(client, token_b, run_b, [row(80, 0, passed=False, cer=0.7), row(80, 1, passed=True),
                                  row(80, 5)])
    found = client.get("/api/compare", params={"run_a": run_a, "run_b": run_b}).json()
    assert found["a"]["run_name"] == "baseline" and found["b"]["step"] == 80
    counts = found["counts"]
    assert (counts["paired"], counts["added"], counts["removed"]) == (2, 1, 1)
    assert found["counts"]["regressed"] == 1
    gate = client.get(f"/api/runs/{run_b}/check", params={"baseline": run_a}).json()
    assert (gate["regressed"], gate["passed"]) == (1, False)
    lenient = client.get(f"/api/runs/{run_b}/check",
                         params={"baseline": run_a, "max_regressions": 1}).json()
    assert lenient["passed"] is True


def test_worst_samples_through_each_lens(client: TestClient) -> None:
    run_id, token = new_run(client)
    post(client, token, run_id, [row(10, 0, cer=0.1, passed=True), row(10, 1, cer=0.2)])
    post(client, token, run_id, [
        row(20, 0, cer=0.6, passed=False, answer="x",
            validation_errors=[{"validator": "json_parse", "message": "not JSON"}]),
        row(20, 1, cer=0.3, finish_reason="length", max_new_tokens=8),
    ])

    def lens(name: str) -> list[dict]:
        answer = client.get(f"/api/runs/{run_id}/worst", params={"lens": name})
        assert answer.status_code == 200, answer.text
        return answer.json()["items"]

    assert [w["prediction"]["sample_index"] for w in lens("lowest_score")] == [0, 1]
    drop = lens("largest_drop")[0]
    assert drop["prediction"]["sample_index"] == 0 and drop["delta"] == pytest.approx(0.5)
    assert lens("new_validation_failures")[0]["validators"] == ["json_parse"]
    assert [w["prediction"]["sample_index"] for w in lens("truncated")] == [1]
    bad = client.get(f"/api/runs/{run_id}/worst", params={"lens": "nope"})
    assert bad.status_code == 400 and bad.json()["detail"]["field"] == "lens"


def test_finishing_and_deleting_a_run(client: TestClient, store: Any) -> None:
    run_id, token = new_run(client)
    post(client, token, run_id, [row(1, 0)])
    store.enqueue_job(run_id, 2, "/out/checkpoint-2")
    done = client.post(f"/api/runs/{run_id}/finish", json={"status": "failed"}).json()
    assert done["status"] == "failed" and done["finished_at"]
    assert client.delete(f"/api/runs/{run_id}").json() == {"deleted": True, "job_id": run_id}
    assert client.get(f"/api/runs/{run_id}").status_code == 404
    assert client.get(f"/api/training/predictions/{run_id}").status_code == 404
    assert store.list_jobs(run_id=run_id) == []  # its checkpoint jobs went with it


def _events(text: str) -> list[tuple[str, str, str | None]]:
    """(event, data, id) of each SSE message."""
    found = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            found.append((fields["event"], fields["data"], fields.get("id")))
    return found


def test_stream_sends_rows_of_a_run_that_had_none_when_the_client_connected(
    client: TestClient, store: Any
) -> None:
    run_id, _ = new_run(client)

    def write_later() -> None:
        time.sleep(0.4)
        point = EvalPoint(run_id=run_id, step=5)
        store.write_eval_point(point, [Prediction(run_id=run_id, step=5, prompt_id=f"p{i}",
                                                  prompt="q") for i in range(3)])

    writer = threading.Thread(target=write_later)
    writer.start()
    answer = client.get(f"/api/training/predictions/{run_id}/stream",
                        params={"max_seconds": 1.2})
    writer.join()
    assert answer.headers["content-type"].startswith("text/event-stream")
    events = _events(answer.text)
    names = [e[0] for e in events]
    assert names[0] == "connected" and names.count("prediction") == 3
    assert "heartbeat" in names
    ids = [int(e[2]) for e in events if e[0] == "prediction"]
    assert ids == sorted(ids)
    # A reconnect with Last-Event-ID gets only what came after it.
    resumed = client.get(f"/api/training/predictions/{run_id}/stream",
                         params={"max_seconds": 0.3}, headers={"Last-Event-ID": str(ids[0])})
    assert [int(e[2]) for e in _events(resumed.text) if e[0] == "prediction"] == ids[1:]
    replay = client.get(f"/api/runs/{run_id}/stream", params={"after": 0, "max_seconds": 0.3})
    assert [e[0] for e in _events(replay.text)].count("prediction") == 3
    # On an open server a stream may even wait for a run that does not exist yet.
    early = client.get("/api/training/predictions/not-yet/stream", params={"max_seconds": 0.2})
    assert early.status_code == 200 and _events(early.text)[0][0] == "connected"


def test_whoami_health_and_docs(client: TestClient) -> None:
    assert client.get("/api/health").json()["status"] == "ok"
    assert client.get("/api/whoami").json() == {"user": None, "run": None, "auth_required": False}
    run_id, token = new_run(client)
    me = client.get("/api/whoami", headers={"Authorization": f"Bearer {token}"}).json()
    assert me["run"]["job_id"] == run_id
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    for path in ("/api/training/local/predictions", "/api/training/predictions/{job_id}/trends",
                 "/api/runs/{run_id}/compare", "/api/compare", "/api/runs/{run_id}/worst"):
        assert path in spec["paths"]
    assert "IngestBody" in spec["components"]["schemas"]
    missing = client.get("/api/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"


def test_an_unreachable_database_answers_503_with_retry_after(postgres_url: str) -> None:
    """A database outage is transient for clients (the HTTP sink retries it), not a 500."""
    from sqlalchemy.engine import make_url

    from predwatch.storage import open_store
    from predwatch.testing import drop_postgres_database

    store = open_store(postgres_url)
    try:
        with TestClient(create_app(store, Settings())) as client:
            assert client.get("/api/runs").status_code == 200
            url = make_url(postgres_url)
            drop_postgres_database(url.set(database="postgres").render_as_string(False),
                                   str(url.database))
            answer = client.get("/api/runs")
            assert answer.status_code == 503, answer.text
            assert answer.headers["retry-after"]
            assert answer.json()["error"] == "database_unavailable"
    finally:
        store.close()


def test_timeline_reaches_prompt_ids_with_a_slash(client: TestClient) -> None:
    job_id, token = new_run(client)
    post(client, token, job_id, [row(1, 0, prompt_id="math/add-1")])
    post(client, token, job_id, [row(2, 0, prompt_id="math/add-1", answer="no", cer=1.0)])
    answer = client.get(f"/api/runs/{job_id}/prompts/math/add-1/timeline")
    assert answer.status_code == 200, answer.text
    assert answer.json()["prompt_id"] == "math/add-1"
    assert [e["step"] for e in answer.json()["entries"]] == [1, 2]


def test_worst_samples_answer_the_step_they_used(client: TestClient) -> None:
    job_id, token = new_run(client)
    post(client, token, job_id, [row(1, 0)])
    post(client, token, job_id, [row(5, 0, answer="bad", cer=1.0)])
    assert client.get(f"/api/runs/{job_id}/worst").json()["step"] == 5
    assert client.get(f"/api/runs/{job_id}/worst?step=1").json()["step"] == 1


def test_malformed_json_bodies_name_the_body(client: TestClient) -> None:
    for url in ("/api/runs", "/api/sets", "/api/estimate"):
        answer = client.post(url, content=b'{"name": ',
                             headers={"Content-Type": "application/json"})
        assert answer.status_code == 400, answer.text
        assert answer.json()["detail"]["field"] == "body", answer.text
