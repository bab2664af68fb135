"""``predwatch.client``: the auth convention and the error mapping, against the real app."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from predwatch.client import ApiClient, ServerUnavailable, retry_after, status_of
from predwatch.config import Settings
from predwatch.errors import AuthError, Conflict, NotFound
from predwatch.records import Run
from predwatch.server.app import create_app
from predwatch.server.auth import create_api_key, issue_run_token
from predwatch.storage import open_store


@pytest.fixture
def app_client(sqlite_url: str) -> Iterator[tuple[TestClient, str, str]]:
    """The app requiring auth, with a user's key and a run token of that user's run."""
    store = open_store(sqlite_url)
    _, key = create_api_key(store, "ana")
    store.create_run(Run(id="r1", owner="ana"))
    token = issue_run_token(store, "r1")
    with TestClient(create_app(store, Settings(auth="on")), base_url="http://server") as http:
        yield http, key, token
    store.close()


def test_a_key_goes_as_x_api_key_and_a_token_as_bearer(
    app_client: tuple[TestClient, str, str]
) -> None:
    http, key, token = app_client
    both = ApiClient("http://server", token=token, api_key=key, http=http)
    assert both.get("/api/whoami", auth="key")["user"] == "ana"
    assert both.get("/api/whoami", auth="token")["run"]["id"] == "r1"
    assert both.get("/api/whoami")["user"] == "ana"  # "any": the key first


def test_refusals_become_errors_of_the_tree_with_the_servers_message(
    app_client: tuple[TestClient, str, str]
) -> None:
    http, key, _ = app_client
    client = ApiClient("http://server", api_key=key, http=http)
    with pytest.raises(NotFound, match="answered 404") as missing:
        client.get("/api/runs/nope")
    assert status_of(missing.value) == 404
    with pytest.raises(Conflict):
        client.call("POST", "/api/runs", json={"id": "r1"})
    with pytest.raises(AuthError):
        ApiClient("http://server", http=http).get("/api/runs")


def test_an_unreachable_server_is_retried_until_the_deadline_then_named(tmp_path: object) -> None:
    from predwatch.testing import free_port

    client = ApiClient(f"http://127.0.0.1:{free_port()}", backoff_base=0.01, backoff_max=0.02)
    with pytest.raises(ServerUnavailable, match="cannot reach") as down:
        client.get("/api/health", deadline=time.monotonic() + 0.5)
    assert "attempt(s)" in down.value.message and status_of(down.value) is None
    client.cancel()
    with pytest.raises(ServerUnavailable, match="cancelled"):
        client.get("/api/health")


def test_retry_after_takes_seconds_or_an_http_date() -> None:
    def answer(value: str) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": value})

    assert retry_after(answer("3")) == 3.0
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < (retry_after(answer(later)) or 0) <= 30
    assert retry_after(answer("soon")) is None
    assert retry_after(httpx.Response(429)) is None
