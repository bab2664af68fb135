"""``GET /api/runs/{id}/jobs``: a run's checkpoint jobs with their counts and errors."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from predwatch.config import Settings
from predwatch.records import Run
from predwatch.server.app import create_app


def test_a_runs_jobs_show_their_state_and_a_failed_jobs_error(store: Any) -> None:
    store.ensure_run(Run(id="r1"))
    for step in (5, 10, 15):
        store.enqueue_job("r1", step, f"/out/checkpoint-{step}", max_attempts=1)
    done, failed = store.claim_job("w"), store.claim_job("w")
    store.finish_job(done.id, "w")
    store.finish_job(failed.id, "w", error="DataError: /out/checkpoint-10: cannot load")
    client = TestClient(create_app(store, Settings()))
    body = client.get("/api/runs/r1/jobs").json()
    assert body["counts"] == {"pending": 1, "running": 0, "done": 1, "failed": 1}
    assert [(j["step"], j["status"]) for j in body["jobs"]] == [
        (5, "done"), (10, "failed"), (15, "pending")]
    assert body["jobs"][1]["error"] == "DataError: /out/checkpoint-10: cannot load"
    only_failed = client.get("/api/runs/r1/jobs", params={"status": "failed"}).json()
    assert [j["step"] for j in only_failed["jobs"]] == [10]
    assert client.get("/api/runs/nope/jobs").status_code == 404
    assert client.get("/api/runs/r1/jobs", params={"status": "lost"}).status_code == 400
