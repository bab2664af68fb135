"""Browser sessions and cross-site request forgery, on both databases.

A signed-in browser holds a random session id in ``predwatch_session_<port>`` (never the key);
the server keeps only its digest, ends it on sign-out, expiry or key revocation. A state change
carried by that cookie must come from this server's own pages (``Sec-Fetch-Site``/``Origin``)
or carry the session's CSRF token; API-key and run-token headers are unaffected.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from predwatch.config import Settings
from predwatch.records import Run
from predwatch.server.app import create_app
from predwatch.server.auth import create_api_key, csrf_token, issue_run_token

BASE = "http://127.0.0.1:8000"
COOKIE = "predwatch_session_8000"
SAME = {"Origin": BASE}
OTHER_PORT = {"Origin": "http://127.0.0.1:9000"}


@pytest.fixture
def site(store: Any) -> Iterator[dict[str, Any]]:
    """An auth-required server with one user, one run and its write token."""
    _, key = create_api_key(store, "ann")
    store.create_run(Run(id="ann-run", owner="ann"))
    token = issue_run_token(store, "ann-run")
    with TestClient(create_app(store, Settings(auth="on")), base_url=BASE) as client:
        yield {"client": client, "store": store, "key": key, "token": token}


def sign_in(client: TestClient, key: str) -> str:
    signed = client.post("/login", data={"key": key, "next": "/"}, headers=SAME,
                         follow_redirects=False)
    assert signed.status_code == 303, signed.text
    return str(client.cookies[COOKIE])


def status_of(store: Any, run_id: str = "ann-run") -> str:
    return str(store.get_run(run_id).status)


def test_signing_in_stores_a_hashed_session_and_never_puts_the_key_in_a_cookie(
    site: dict[str, Any],
) -> None:
    client, store, key = site["client"], site["store"], site["key"]
    signed = client.post("/login", data={"key": key}, headers=SAME, follow_redirects=False)
    header = signed.headers["set-cookie"]
    assert f"{COOKIE}=" in header
    lowered = header.lower()
    assert "httponly" in lowered and "samesite=strict" in lowered and "path=/" in lowered
    assert key not in header  # the key never leaves the sign-in form
    session = client.cookies[COOKIE]
    assert session.startswith("pws_") and session != key
    with store.engine.connect() as conn:
        stored = conn.execute(text("SELECT session_hash FROM sessions")).scalars().all()
    assert stored == [hashlib.sha256(session.encode()).hexdigest()]
    assert client.get("/api/whoami").json()["user"] == "ann"


def test_signing_out_ends_the_session_server_side(site: dict[str, Any]) -> None:
    client, store = site["client"], site["store"]
    session = sign_in(client, site["key"])
    out = client.post("/logout", data={"csrf_token": csrf_token(session)}, headers=SAME,
                      follow_redirects=False)
    assert out.status_code == 303 and COOKIE not in client.cookies
    with store.engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM sessions")) == 0
    # A copy of the cookie taken before sign-out is worth nothing now.
    replay = client.get("/api/whoami", headers={"Cookie": f"{COOKIE}={session}"})
    assert replay.status_code == 401 and replay.json()["detail"]["field"] == "cookie"


def test_an_expired_session_or_a_revoked_key_ends_the_session(site: dict[str, Any]) -> None:
    client, store = site["client"], site["store"]
    session = sign_in(client, site["key"])
    assert client.get("/api/whoami").status_code == 200
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE sessions SET expires_at = :t"),
                     {"t": "2000-01-01 00:00:00" if store.dialect == "sqlite" else "2000-01-01Z"})
    assert client.get("/api/whoami").status_code == 401
    client.cookies.clear()
    session = sign_in(client, site["key"])
    for found in store.list_api_keys("ann"):
        store.revoke_api_key(found["id"])
    assert client.get("/api/whoami", headers={"Cookie": f"{COOKIE}={session}"}).status_code == 401


def test_a_run_token_or_an_unknown_key_cannot_sign_in(site: dict[str, Any]) -> None:
    client = site["client"]
    refused = client.post("/login", data={"key": site["token"]}, headers=SAME)
    assert refused.status_code == 401 and "not a run write token" in refused.text
    assert client.post("/login", data={"key": "pwk_nope"}, headers=SAME).status_code == 401
    assert COOKIE not in client.cookies


def test_the_old_key_cookie_is_no_longer_read_and_sign_in_clears_it(site: dict[str, Any]
                                                                    ) -> None:
    client = site["client"]
    assert client.get("/api/whoami",
                      headers={"Cookie": f"predwatch_key={site['key']}"}).status_code == 401
    signed = client.post("/login", data={"key": site["key"]}, headers=SAME,
                         follow_redirects=False)
    cleared = [c for c in signed.headers.get_list("set-cookie") if c.startswith("predwatch_key=")]
    assert cleared and "max-age=0" in cleared[0].lower()


def test_the_cookie_is_named_after_the_port_so_servers_on_one_host_stay_apart(
    site: dict[str, Any],
) -> None:
    session = sign_in(site["client"], site["key"])
    with TestClient(site["client"].app, base_url="http://127.0.0.1:9000") as other:
        # The browser sends the 8000 cookie to port 9000 too; there it signs nobody in.
        seen = other.get("/api/whoami", headers={"Cookie": f"{COOKIE}={session}"})
        assert seen.status_code == 401


@pytest.mark.parametrize("headers", [
    OTHER_PORT,
    {"Sec-Fetch-Site": "same-site", "Origin": "http://127.0.0.1:9000"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Origin": "null"},
    {},  # neither header (an old browser) and no CSRF token
], ids=["origin-other-port", "same-site", "cross-site", "null-origin", "no-headers"])
def test_a_state_change_by_cookie_from_elsewhere_is_refused(
    site: dict[str, Any], headers: dict[str, str],
) -> None:
    client, store = site["client"], site["store"]
    sign_in(client, site["key"])
    finish = client.post("/api/runs/ann-run/finish", json={"status": "failed"}, headers=headers)
    assert finish.status_code == 403, finish.text
    assert finish.json()["error"] == "forbidden"
    revoke = client.delete("/api/runs/ann-run/tokens", headers=headers)
    assert revoke.status_code == 403
    form = client.post("/api/runs/ann-run/finish", content=b"status=failed", headers={
        **headers, "Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 403
    assert status_of(store) == "running"
    assert store.run_for_token(hashlib.sha256(site["token"].encode()).hexdigest()) is not None


def test_a_state_change_by_cookie_passes_from_this_origin_or_with_the_csrf_token(
    site: dict[str, Any],
) -> None:
    client, store = site["client"], site["store"]
    session = sign_in(client, site["key"])
    assert client.post("/api/runs/ann-run/finish", json={"status": "failed"},
                       headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200
    assert client.post("/api/runs/ann-run/finish", json={"status": "running"},
                       headers=SAME).status_code == 200
    assert client.post("/api/runs/ann-run/finish", json={"status": "finished"},
                       headers={"X-CSRF-Token": "0" * 64}).status_code == 403
    assert client.post("/api/runs/ann-run/finish", json={"status": "finished"},
                       headers={"X-CSRF-Token": csrf_token(session)}).status_code == 200
    assert status_of(store) == "finished"


def test_header_credentials_are_unaffected_by_the_origin_rules(site: dict[str, Any]) -> None:
    client, store = site["client"], site["store"]
    client.cookies.clear()
    by_token = client.post("/api/runs/ann-run/finish", json={"status": "failed"},
                           headers={"Authorization": f"Bearer {site['token']}"})
    assert by_token.status_code == 200
    by_key = client.post("/api/runs/ann-run/finish", json={"status": "finished"},
                         headers={"X-API-Key": site["key"], **OTHER_PORT})
    assert by_key.status_code == 200 and status_of(store) == "finished"
    # An ambient Basic credential is not a header credential: still checked (and refused).
    basic = client.post("/api/runs/ann-run/finish", json={},
                        headers={"Authorization": "Basic eDp5", **OTHER_PORT})
    assert basic.status_code == 403


def test_an_open_server_refuses_cross_origin_state_changes_from_anyone(store: Any) -> None:
    store.create_run(Run(id="open-run"))
    with TestClient(create_app(store, Settings(auth="off")), base_url=BASE) as client:
        forged = client.post("/api/runs/open-run/finish", content=b"status=failed",
                             headers={"Content-Type": "application/x-www-form-urlencoded",
                                      **OTHER_PORT})
        assert forged.status_code == 403 and status_of(store, "open-run") == "running"
        assert client.post("/api/runs", json={"id": "planted"},
                           headers={"Sec-Fetch-Site": "same-site"}).status_code == 403
        # A script or the CLI (no Origin, no Sec-Fetch-Site, no cookie) works as before.
        assert client.post("/api/runs/open-run/finish", json={}).status_code == 200
        assert status_of(store, "open-run") == "finished"


def test_pages_carry_the_csrf_token_in_their_forms_and_sign_out(site: dict[str, Any]) -> None:
    client = site["client"]
    session = sign_in(client, site["key"])
    home = client.get("/").text
    token = csrf_token(session)
    assert f'name="csrf_token" value="{token}"' in home and 'action="/logout"' in home
    assert session not in home  # the page never shows the session id itself
    config = client.get("/config").text
    assert f'name="csrf_token" value="{token}"' in config
    # The config form posts back without Origin (old browsers): its token lets it through.
    assert client.post("/config", data={"csrf_token": token, "sample_count": "5"}
                       ).status_code == 200
    assert client.post("/config", data={"sample_count": "5"}).status_code == 403
    out = client.post("/logout", data={"csrf_token": token}, follow_redirects=False)
    assert out.status_code == 303
    signed_out = client.get("/")
    assert signed_out.status_code == 401 and 'action="/logout"' not in signed_out.text
