"""The run a route or page reads comes from ``server.deps`` — one ownership check for all.

A sweep over every route and page that takes a run id (from the OpenAPI document and the page
list, so a new route is swept too): another user's key gets 404 exactly like a run that does not
exist, with no word of the run in the answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from predwatch.config import Settings
from predwatch.server import create_app
from predwatch.server.auth import create_api_key

PAGES = ("/runs/{run_id}", "/runs/{run_id}/prompts/p1", "/compare?run_a={run_id}",
         "/compare?run_a={run_id}&run_b={run_id}")
QUERY = {"run_a": "{run_id}", "run_b": "{run_id}", "baseline": "{run_id}"}


@pytest.fixture
def two_users(store: Any) -> Iterator[tuple[TestClient, dict[str, str], dict[str, str]]]:
    with TestClient(create_app(store, Settings(auth="on"))) as client:
        alice = {"X-API-Key": create_api_key(store, "alice")[1]}
        bob = {"X-API-Key": create_api_key(store, "bob")[1]}
        yield client, alice, bob


def alices_run(client: TestClient, alice: dict[str, str], run_id: str = "secret-run") -> str:
    created = client.post("/api/runs", json={"id": run_id, "name": "private"}, headers=alice)
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    sent = client.post("/api/training/local/predictions", headers={
        "Authorization": f"Bearer {token}"}, json={"job_id": run_id, "predictions": [
            {"step": 1, "prompt": "q", "prompt_id": "p1", "prediction": "a",
             "ground_truth": "a"}]})
    assert sent.status_code == 200, sent.text
    return run_id


def run_urls(client: TestClient) -> list[tuple[str, str]]:
    """``(method, url)`` of every API operation naming a run, with ``{run_id}`` to fill in."""
    spec = client.get("/openapi.json").json()
    found = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            names = {p["name"] for p in operation.get("parameters", [])}
            query = {k: v for k, v in QUERY.items() if k in names}
            if not ({"run_id", "job_id"} & names or query):
                continue
            url = re.sub(r"\{(run_id|job_id)\}", "{run_id}", path).replace("{prompt_id}", "p1")
            if query:
                url += "?" + "&".join(f"{k}={v}" for k, v in query.items())
            if not path.endswith("/stream"):  # streams: checked below with a bounded read
                found.append((method.upper(), url))
    return found


def test_every_route_and_page_with_a_run_id_hides_another_users_run(
    two_users: tuple[TestClient, dict[str, str], dict[str, str]],
) -> None:
    client, alice, bob = two_users
    run_id = alices_run(client, alice)
    urls = run_urls(client)
    assert len(urls) >= 15, urls  # the sweep really covers the API
    for method, template in urls + [("GET", page) for page in PAGES]:
        url = template.replace("{run_id}", run_id)
        mine = client.request(method, url.replace(run_id, "no-such-run"), headers=bob)
        theirs = client.request(method, url, headers=bob)
        assert theirs.status_code == 404, (method, url, theirs.text)
        assert mine.status_code == 404, (method, url, mine.text)
        assert "private" not in theirs.text
    for stream in (f"/api/runs/{run_id}/stream", f"/api/training/predictions/{run_id}/stream"):
        assert client.get(stream + "?max_seconds=1", headers=bob).status_code == 404
    # Nothing was changed by bob's attempts: alice still sees her run, with its token working.
    assert client.get(f"/api/runs/{run_id}", headers=alice).json()["summary"][
        "prediction_count"] == 1


def test_a_taken_run_id_answers_409_only_to_whoever_may_see_that_run(
    two_users: tuple[TestClient, dict[str, str], dict[str, str]],
) -> None:
    client, alice, bob = two_users
    alices_run(client, alice, "taken")
    again = client.post("/api/runs", json={"id": "taken"}, headers=alice)
    assert again.status_code == 409 and "already exists" in again.json()["message"]
    other = client.post("/api/runs", json={"id": "taken"}, headers=bob)
    assert other.status_code == 403, other.text
    assert other.json()["detail"] == {"field": "id"}
    assert "exist" not in other.json()["message"] and "alice" not in other.text
    assert client.post("/api/runs", json={"id": "free"}, headers=bob).status_code == 201
