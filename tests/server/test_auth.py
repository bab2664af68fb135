"""Write tokens are scoped to one run; read keys see only their user's runs; refusals are clean."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from predwatch.config import Settings
from predwatch.errors import ConfigError
from predwatch.server import create_app
from predwatch.server.auth import create_api_key
from predwatch.server.run import check_bind
from predwatch.storage.tables import api_keys, run_tokens

ROW = {"step": 1, "prompt": "q", "prediction": "a"}


@pytest.fixture
def secured(store: Any) -> Iterator[tuple[TestClient, Any]]:
    """A server that requires API keys."""
    with TestClient(create_app(store, Settings(auth="on"))) as client:
        yield client, store


def key_headers(store: Any, user: str) -> dict[str, str]:
    return {"X-API-Key": create_api_key(store, user)[1]}


def new_run(client: TestClient, headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    answer = client.post("/api/runs", json={}, headers=headers)
    assert answer.status_code == 201, answer.text
    return answer.json()["job_id"], {"Authorization": f"Bearer {answer.json()['token']}"}


def ingest(client: TestClient, auth: dict[str, str], job_id: str, **row: Any) -> Any:
    return client.post("/api/training/local/predictions", headers=auth,
                       json={"job_id": job_id, "predictions": [{**ROW, **row}]})


def test_token_of_run_a_cannot_write_run_b(secured: tuple[TestClient, Any]) -> None:
    client, store = secured
    alice = key_headers(store, "alice")
    run_a, token_a = new_run(client, alice)
    run_b, _ = new_run(client, alice)
    refused = ingest(client, token_a, run_b)
    assert refused.status_code == 403 and refused.json()["detail"]["field"] == "job_id"
    smuggled = ingest(client, token_a, run_a, run_id=run_b)
    assert smuggled.status_code == 403
    assert smuggled.json()["detail"]["field"] == "predictions[0].run_id"
    assert store.list_predictions(run_b).total == 0
    assert ingest(client, token_a, run_a).json()["count"] == 1
    assert store.get_run(run_a).owner == "alice"  # the owner comes from the key, not the body


def test_revoked_and_unknown_tokens_get_401_and_rotation_works(
    secured: tuple[TestClient, Any],
) -> None:
    client, store = secured
    alice = key_headers(store, "alice")
    run_id, token = new_run(client, alice)
    assert ingest(client, token, run_id).status_code == 200
    revoked = client.delete(f"/api/runs/{run_id}/tokens", headers=alice).json()
    assert revoked == {"job_id": run_id, "revoked": 1}
    refused = ingest(client, token, run_id)
    assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
    assert ingest(client, {"Authorization": "Bearer pwr_made-up"}, run_id).status_code == 401
    assert ingest(client, {}, run_id).status_code == 401
    assert ingest(client, {"Authorization": "Basic abc"}, run_id).status_code == 401
    fresh = client.post(f"/api/runs/{run_id}/tokens", headers=alice).json()["token"]
    assert ingest(client, {"Authorization": f"Bearer {fresh}"}, run_id, step=2).status_code == 200


def test_key_of_user_a_sees_404_for_user_b_runs(secured: tuple[TestClient, Any]) -> None:
    client, store = secured
    alice, bob = key_headers(store, "alice"), key_headers(store, "bob")
    run_b, token_b = new_run(client, bob)
    assert ingest(client, token_b, run_b).status_code == 200
    prompt_id = store.list_predictions(run_b).items[0].prompt_id
    for method, path in (
        ("GET", f"/api/runs/{run_b}"), ("GET", f"/api/runs/{run_b}/points"),
        ("GET", f"/api/runs/{run_b}/predictions"), ("GET", f"/api/training/predictions/{run_b}"),
        ("GET", f"/api/training/predictions/{run_b}/epochs"),
        ("GET", f"/api/training/predictions/{run_b}/trends"),
        ("GET", f"/api/training/predictions/{run_b}/stream?max_seconds=0.1"),
        ("GET", f"/api/runs/{run_b}/prompts/{prompt_id}/timeline"),
        ("GET", f"/api/runs/{run_b}/compare"), ("GET", f"/api/runs/{run_b}/worst"),
        ("GET", f"/api/compare?run_a={run_b}&run_b={run_b}"),
        ("GET", f"/api/runs/{run_b}/check?baseline={run_b}"),
        ("POST", f"/api/runs/{run_b}/finish"), ("DELETE", f"/api/runs/{run_b}"),
        ("POST", f"/api/runs/{run_b}/tokens"), ("DELETE", f"/api/runs/{run_b}/tokens"),
    ):
        answer = client.request(method, path, headers=alice)
        assert answer.status_code == 404, (method, path, answer.text)
        assert client.request(method, path, headers={"X-API-Key": "pwk_wrong"}).status_code == 401
    assert client.get("/api/runs", headers=alice).json()["total_count"] == 0
    assert [r["job_id"] for r in client.get("/api/runs", headers=bob).json()["runs"]] == [run_b]
    # A Bearer header works for keys too, and bob still sees his run.
    bearer = {"Authorization": f"Bearer {bob['X-API-Key']}"}
    assert client.get(f"/api/runs/{run_b}", headers=bearer).status_code == 200


def test_auth_required_answers_401_naming_how_to_get_a_key(secured: tuple[TestClient, Any]) -> None:
    client, store = secured
    answer = client.get("/api/runs")
    assert answer.status_code == 401
    assert "predwatch keys create" in answer.json()["message"]
    assert client.post("/api/runs", json={}).status_code == 401
    key_id, key = create_api_key(store, "carol")
    assert client.get("/api/runs", headers={"X-API-Key": key}).status_code == 200
    store.revoke_api_key(key_id)
    assert client.get("/api/runs", headers={"X-API-Key": key}).status_code == 401
    assert client.get("/api/health").status_code == 200  # liveness needs no key


def test_a_run_token_reads_and_finishes_only_its_own_run(secured: tuple[TestClient, Any]) -> None:
    client, store = secured
    alice = key_headers(store, "alice")
    run_a, token_a = new_run(client, alice)
    run_b, _ = new_run(client, alice)
    me = client.get("/api/whoami", headers=token_a).json()
    assert me["run"]["job_id"] == run_a and me["user"] is None
    assert client.get(f"/api/runs/{run_a}", headers=token_a).status_code == 200
    assert client.get(f"/api/runs/{run_b}", headers=token_a).status_code == 404
    assert client.post(f"/api/runs/{run_a}/finish", headers=token_a).json()["status"] == "finished"
    assert client.delete(f"/api/runs/{run_a}", headers=token_a).status_code == 404
    assert client.post("/api/runs", json={}, headers=token_a).status_code == 403


def test_secrets_are_stored_hashed(secured: tuple[TestClient, Any]) -> None:
    client, store = secured
    alice = key_headers(store, "alice")
    _, token = new_run(client, alice)
    with store.engine.connect() as conn:
        stored = [*conn.scalars(select(run_tokens.c.token_hash)),
                  *conn.scalars(select(api_keys.c.key_hash))]
    secrets = [token["Authorization"].split()[1], alice["X-API-Key"]]
    assert len(stored) == 2
    assert not any(s in h or h in s for s in secrets for h in stored)


def test_open_server_binds_only_to_loopback_and_auth_needs_a_key(store: Any) -> None:
    check_bind(Settings(host="127.0.0.1"), store)  # open loopback: fine
    with pytest.raises(ConfigError, match="predwatch keys create"):
        check_bind(Settings(host="0.0.0.0", auth="off"), store)
    with pytest.raises(ConfigError, match="predwatch keys create"):
        check_bind(Settings(host="0.0.0.0"), store)  # auto: auth required, but no key yet
    create_api_key(store, "alice")
    check_bind(Settings(host="0.0.0.0"), store)


def test_only_loopback_addresses_and_localhost_count_as_loopback(store: Any) -> None:
    from predwatch.config import is_loopback

    for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback(host), host
    for host in ("127.evil.example", "127.0.0.1.nip.io", "0.0.0.0", "10.0.0.1", "::", "", "lo"):
        assert not is_loopback(host), host
    assert Settings(host="127.evil.example").auth_required
    with pytest.raises(ConfigError, match="predwatch keys create"):
        check_bind(Settings(host="127.evil.example", auth="off"), store)
