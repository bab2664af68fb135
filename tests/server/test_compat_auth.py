"""Credentials as the original clients send them: an API key in ``X-API-Key``,
``X-Workspace-API-Key`` or ``Authorization: Bearer``; the write token as ``Bearer``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from predwatch.config import Settings
from predwatch.server import create_app
from predwatch.server.auth import create_api_key


@pytest.fixture
def secured(store: Any) -> Iterator[tuple[TestClient, Any]]:
    """A server that requires API keys."""
    with TestClient(create_app(store, Settings(auth="on"))) as client:
        yield client, store


def test_a_key_is_read_from_each_header_the_sdks_use(secured: tuple[TestClient, Any]) -> None:
    client, store = secured
    key = create_api_key(store, "alice")[1]
    job = client.post("/api/runs", json={}, headers={"X-API-Key": key}).json()
    job_id, token = job["job_id"], job["token"]
    written = client.post("/api/training/local/predictions",
                          headers={"Authorization": f"Bearer {token}"},
                          json={"job_id": job_id, "predictions": [
                              {"job_id": job_id, "user_id": "someone-else", "epoch": 0,
                               "step": 1, "sample_index": 0, "prompt": "q", "prediction": "a"}]})
    assert written.status_code == 200, written.text
    assert store.get_run(job_id).owner == "alice"  # from the key, not the record's user_id
    for headers in ({"X-API-Key": key}, {"X-Workspace-API-Key": key},
                    {"Authorization": f"Bearer {key}"}):
        answer = client.get(f"/api/training/predictions/{job_id}", headers=headers)
        assert answer.status_code == 200, (headers, answer.text)
        assert answer.json()["predictions"][0]["user_id"] == "alice"


def test_a_server_with_keys_refuses_foreign_credentials_with_a_sentence(
        secured: tuple[TestClient, Any]) -> None:
    client, store = secured
    key = create_api_key(store, "alice")[1]
    job_id = client.post("/api/runs", json={}, headers={"X-API-Key": key}).json()["job_id"]
    for headers in ({}, {"X-Workspace-API-Key": "wak_original"},
                    {"Authorization": "Bearer eyJ.session.jwt"}, {"Authorization": "Basic x"}):
        answer = client.get(f"/api/training/predictions/{job_id}/epochs", headers=headers)
        assert answer.status_code == 401, headers
        body = answer.json()
        assert body["error"].startswith("Unauthorized: ") and body["code"] == "unauthorized"
    other = create_api_key(store, "bob")[1]
    hidden = client.get(f"/api/training/predictions/{job_id}",
                        headers={"X-Workspace-API-Key": other})
    assert hidden.status_code == 404 and hidden.json()["error"].startswith("Not Found: ")
