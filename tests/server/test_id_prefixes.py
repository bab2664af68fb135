"""Unique id prefixes in page URLs (``server.deps``: ``PageRun``, ``run_by_prefix``,
``prompt_by_prefix``): a prefix redirects to the page of the full id, one several ids share
answers 409 naming them, one no id has 404; another owner's runs are never candidates; the API
routes (the original ``/api/training/*`` ones included) still take exact ids only."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from predwatch.config import Settings
from predwatch.server import create_app
from predwatch.server.auth import create_api_key


def _run_with_answers(client: TestClient, run_id: str, headers: dict[str, str] | None = None,
                      prompts: tuple[str, ...] = ("p-alpha-1", "p-alpha-2", "p-beta")) -> None:
    created = client.post("/api/runs", json={"id": run_id, "name": f"name of {run_id}"},
                          headers=headers or {})
    assert created.status_code == 201, created.text
    sent = client.post("/api/training/local/predictions", headers={
        "Authorization": f"Bearer {created.json()['token']}"}, json={
        "job_id": run_id, "predictions": [
            {"step": 1, "sample_index": i, "prompt": f"q{i}", "prompt_id": pid,
             "prediction": "a", "ground_truth": "a"} for i, pid in enumerate(prompts)]})
    assert sent.status_code == 200, sent.text


@pytest.fixture
def client(store: Any) -> Iterator[TestClient]:
    with TestClient(create_app(store, Settings()), follow_redirects=False) as c:
        for run_id in ("abc111", "abc222", "xyz999", "same", "same-longer"):
            _run_with_answers(c, run_id)
        yield c


def test_a_unique_run_prefix_redirects_to_the_full_id_keeping_the_query(
    client: TestClient,
) -> None:
    moved = client.get("/runs/xyz?step=1&failed=1")
    assert moved.status_code == 307
    assert moved.headers["location"] == "/runs/xyz999?step=1&failed=1"
    page = client.get(moved.headers["location"])
    assert page.status_code == 200 and "xyz999" in page.text


def test_an_ambiguous_prefix_answers_409_naming_the_candidates(client: TestClient) -> None:
    page = client.get("/runs/abc")
    assert page.status_code == 409
    assert "text/html" in page.headers["content-type"]
    assert "abc111" in page.text and "abc222" in page.text and "ambiguous" in page.text
    assert "xyz999" not in page.text
    compare = client.get("/compare?run_a=abc&run_b=xyz")
    assert compare.status_code == 409 and "abc111" in compare.text


def test_an_unknown_prefix_answers_404(client: TestClient) -> None:
    page = client.get("/runs/nothing-like-it")
    assert page.status_code == 404 and "nothing-like-it" in page.text


def test_an_exact_id_wins_over_longer_ids_it_starts(client: TestClient) -> None:
    page = client.get("/runs/same")
    assert page.status_code == 200 and 'data-copy="same"' in page.text


def test_prompt_prefixes_resolve_in_the_timeline(client: TestClient) -> None:
    moved = client.get("/runs/xyz/prompts/p-b")
    assert moved.status_code == 307
    assert moved.headers["location"] == "/runs/xyz999/prompts/p-beta"
    assert client.get(moved.headers["location"]).status_code == 200
    assert client.get("/runs/xyz999/prompts/p-beta").status_code == 200  # no redirect
    ambiguous = client.get("/runs/xyz999/prompts/p-alpha")
    assert ambiguous.status_code == 409
    assert "p-alpha-1" in ambiguous.text and "p-alpha-2" in ambiguous.text
    assert client.get("/runs/xyz999/prompts/p-gamma").status_code == 404


def test_compare_and_overlay_take_prefixes(client: TestClient) -> None:
    compare = client.get("/compare?run_a=xyz&run_b=abc1")
    assert compare.status_code == 200
    assert 'href="/api/compare?run_a=xyz999&amp;run_b=abc111' in compare.text
    overlay = client.get("/runs/overlay?run=xyz&run=abc2")
    assert overlay.status_code == 200 and "name of abc222" in overlay.text


def test_api_routes_keep_taking_exact_ids_only(client: TestClient) -> None:
    for url in ("/api/training/predictions/{}", "/api/training/predictions/{}/epochs",
                "/api/training/predictions/{}/trends", "/api/runs/{}", "/api/runs/{}/overview"):
        full = client.get(url.format("xyz999"))
        assert full.status_code == 200, (url, full.text)
        assert client.get(url.format("xyz")).status_code == 404, url
    body = client.get("/api/training/predictions/xyz999").json()
    assert body["job_id"] == "xyz999" and body["total_count"] == 3


def test_another_owners_runs_are_never_candidates(store: Any) -> None:
    with TestClient(create_app(store, Settings(auth="on")), follow_redirects=False) as c:
        alice = {"X-API-Key": create_api_key(store, "alice")[1]}
        bob = {"X-API-Key": create_api_key(store, "bob")[1]}
        _run_with_answers(c, "shared-a1", alice)
        _run_with_answers(c, "shared-b2", bob)
        mine = c.get("/runs/shared", headers=alice)
        assert mine.status_code == 307 and mine.headers["location"] == "/runs/shared-a1"
        theirs = c.get("/runs/shared-a", headers=bob)
        assert theirs.status_code == 404 and "shared-a1" not in theirs.text
