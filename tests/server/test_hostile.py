"""Hostile input, on both databases: every JSON body is bounded in depth (a 400 naming the
field path, on every route, ingest included, gzip too), and no stored value can turn a list,
the home page or a comparison into a 500 — a row that cannot be read (written by hand, by an
older or newer version) is shown as a marked placeholder."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from predwatch.config import Settings
from predwatch.records import EvalPoint, Prediction, Run
from predwatch.server.app import create_app
from predwatch.server.auth import issue_run_token
from predwatch.server.guards import MAX_JSON_DEPTH, json_depth_violation
from predwatch.storage.undecodable import UNDECODABLE

JSON_HEADERS = {"Content-Type": "application/json"}


def nested(depth: int, leaf: Any = 1, key: str = "a") -> Any:
    """``{"a": {"a": ... leaf}}``: ``depth`` objects deep."""
    value = leaf
    for _ in range(depth):
        value = {key: value}
    return value


def deep_text(depth: int) -> str:
    return json.dumps(nested(depth), separators=(",", ":"))


@pytest.fixture
def client(store: Any) -> Iterator[TestClient]:
    with TestClient(create_app(store, Settings(auth="off")),
                    raise_server_exceptions=False) as c:
        yield c


def lists_answer(client: TestClient, run_id: str, other: str) -> None:
    """Every list, page and comparison that includes ``run_id`` answers (no 500)."""
    for path in ("/api/runs", "/", "/compare", f"/compare?a={run_id}&b={other}",
                 f"/api/runs/{run_id}", f"/runs/{run_id}", f"/api/runs/{run_id}/points",
                 f"/api/runs/{run_id}/predictions", f"/api/training/predictions/{run_id}",
                 f"/api/training/predictions/{run_id}/trends", f"/api/runs/{run_id}/worst",
                 f"/api/compare?a={run_id}&b={other}"):
        answer = client.get(path)
        assert answer.status_code < 500, (path, answer.text[:300])


def test_a_run_config_nested_past_the_limit_is_refused_naming_its_path(
    client: TestClient, store: Any
) -> None:
    body = json.dumps({"id": "deep", "config": nested(250)})
    refused = client.post("/api/runs", content=body, headers=JSON_HEADERS)
    assert refused.status_code == 400
    field = refused.json()["detail"]["field"]
    assert field == "config" + ".a" * (MAX_JSON_DEPTH - 1)  # the value at level 65
    assert f"deeper than {MAX_JSON_DEPTH} levels" in refused.json()["message"]
    assert store.list_runs().total == 0
    # At the limit it is stored and read back; brackets inside strings are not nesting.
    ok = {"id": "at-limit", "config": nested(MAX_JSON_DEPTH - 1), "name": "[" * 500}
    assert client.post("/api/runs", json=ok).status_code == 201
    assert client.post("/api/runs", json={"id": "text", "config": {"s": "[{" * 300}}
                       ).status_code == 201
    assert client.get("/api/runs/at-limit").json()["config"] == ok["config"]
    lists_answer(client, "at-limit", "text")


def test_ingest_bodies_are_bounded_plain_and_gzip(client: TestClient, store: Any) -> None:
    store.create_run(Run(id="r"))
    token = issue_run_token(store, "r")
    row = {"step": 1, "prompt": "p", "prediction": "a",
           "messages": [{"role": "user", "content": nested(200)}]}
    raw = json.dumps({"job_id": "r", "predictions": [row]}).encode()
    auth = {"Authorization": f"Bearer {token}", **JSON_HEADERS}
    for headers, body in ((auth, raw), ({**auth, "Content-Encoding": "gzip"}, gzip.compress(raw))):
        refused = client.post("/api/training/local/predictions", content=body, headers=headers)
        assert refused.status_code == 400, refused.text
        assert refused.json()["detail"]["field"].startswith("predictions[0].messages[0].content.a")
    assert store.list_predictions("r").total == 0
    row["messages"] = [{"role": "user", "content": [{"type": "text", "text": "[[[["}]}]
    good = json.dumps({"job_id": "r", "predictions": [row]}).encode()
    accepted = client.post("/api/training/local/predictions", content=gzip.compress(good),
                           headers={**auth, "Content-Encoding": "gzip"})
    assert accepted.status_code == 200 and accepted.json()["inserted"] == 1


def test_every_json_route_is_bounded(client: TestClient) -> None:
    items = [{"prompt": "p", "tags": [nested(100)]}]
    refused = client.post("/api/sets", json={"name": "s", "items": items})
    assert refused.status_code == 400 and refused.json()["detail"]["field"].startswith(
        "items[0].tags[0].a")
    assert client.post("/api/estimate", content="[" * 10_000 + "]" * 10_000,
                       headers=JSON_HEADERS).json()["detail"]["field"] == "[0]" * 64


def test_the_depth_check_names_keys_and_indexes_exactly() -> None:
    assert json_depth_violation(b'{"a": [1, {"b\\"q": [[[1]]]}]}', 4) == 'a[1].b"q[0]'
    assert json_depth_violation(b'{"x": "[[[[[[", "y": {}}', 2) is None
    assert json_depth_violation(b'[[], [[[]]]]', 3) == "[1][0][0]"
    assert json_depth_violation(json.dumps({"k" * 100: nested(5)}).encode(), 3).startswith(
        "k" * 40 + "….a")


def hostile_runs(store: Any) -> None:
    """Runs written with raw SQL that this predwatch cannot read as written."""
    store.create_run(Run(id="fine", name="fine"))
    jsonb = "CAST(:config AS jsonb)" if store.dialect == "postgresql" else ":config"
    insert = text(f"INSERT INTO runs (id, name, config, status, created_at) "
                  f"VALUES (:id, :id, {jsonb}, :status, CURRENT_TIMESTAMP)")
    with store.engine.begin() as conn:
        conn.execute(insert, {"id": "deep", "config": deep_text(240), "status": "running"})
        conn.execute(insert, {"id": "newer", "config": "{}", "status": "stale"})
        conn.execute(insert, {"id": "list-config", "config": "[1, 2]", "status": "running"})
        if store.dialect == "sqlite":  # SQLite stores any text in any column
            conn.execute(insert, {"id": "not-json", "config": "{oops", "status": "running"})
            conn.execute(text("INSERT INTO runs (id, config, status, created_at) VALUES "
                              "('bad-time', '{}', 'running', 'yesterday')"))


def test_runs_that_cannot_be_read_are_listed_as_marked_placeholders(
    client: TestClient, store: Any
) -> None:
    hostile_runs(store)
    listed = client.get("/api/runs")
    assert listed.status_code == 200
    runs = {r["id"]: r for r in listed.json()["runs"]}
    expected = {"deep", "newer", "list-config", "fine"} | (
        {"not-json", "bad-time"} if store.dialect == "sqlite" else set())
    assert set(runs) == expected
    assert runs["fine"]["config"] == {}
    for run_id in expected - {"fine"}:
        assert UNDECODABLE in runs[run_id]["config"], run_id
    assert "recursion limit" in runs["deep"]["config"][UNDECODABLE]
    assert "status" in runs["newer"]["config"][UNDECODABLE]
    assert runs["deep"]["name"] == "deep"  # what is readable is kept
    home = client.get("/")
    assert home.status_code == 200
    assert home.text.count("data-undecodable") == len(expected) - 1
    lists_answer(client, "deep", "fine")
    assert client.get("/runs/deep").text.count("stored data unreadable") == 1


def test_predictions_and_points_that_cannot_be_read_are_shown_as_such(
    client: TestClient, store: Any
) -> None:
    store.create_run(Run(id="r"))
    store.create_run(Run(id="other"))
    rows = [Prediction(run_id="r", step=5, prompt_id=f"p{i}", sample_index=i, prompt=f"q{i}",
                       prediction="a", ground_truth="a") for i in range(3)]
    store.write_eval_point(EvalPoint(run_id="r", step=5, sample_count=3), rows)
    store.write_eval_point(EvalPoint(run_id="other", step=5, sample_count=1),
                           [rows[0].model_copy(update={"run_id": "other"})])
    jsonb = "CAST(:v AS jsonb)" if store.dialect == "postgresql" else ":v"
    with store.engine.begin() as conn:
        conn.execute(text(f"UPDATE predictions SET messages = {jsonb} "
                          "WHERE run_id = 'r' AND prompt_id = 'p1'"), {"v": deep_text(240)})
        conn.execute(text("UPDATE predictions SET finish_reason = 'exploded' "
                          "WHERE run_id = 'r' AND prompt_id = 'p2'"))
        conn.execute(text(f"UPDATE eval_points SET card = {jsonb} WHERE run_id = 'r'"),
                     {"v": deep_text(240)})
    listed = client.get("/api/runs/r/predictions")
    assert listed.status_code == 200, listed.text
    by_prompt = {p["prompt_id"]: p for p in listed.json()["predictions"]}
    assert set(by_prompt) == {"p0", "p1", "p2"}
    assert by_prompt["p0"]["error"] is None
    for bad in ("p1", "p2"):
        assert by_prompt[bad]["error"].startswith("this stored row could not be read")
        assert UNDECODABLE in by_prompt[bad]["generation_params"]
        assert by_prompt[bad]["step"] == 5 and by_prompt[bad]["prompt"] == f"q{bad[1]}"
    compat = client.get("/api/training/predictions/r")
    assert compat.status_code == 200 and compat.json()["total_count"] == 3
    points = client.get("/api/runs/r/points").json()["points"]
    assert UNDECODABLE in points[0]["card"]
    page = client.get("/runs/r")
    assert page.status_code == 200 and "this stored row could not be read" in page.text
    lists_answer(client, "r", "other")
    timeline = client.get("/api/runs/r/prompts/p1/timeline")
    assert timeline.status_code == 200, timeline.text
    (entry,) = timeline.json()["entries"]
    assert entry["prediction"]["error"].startswith("this stored row could not be read")
    # A point's answers (the bulk read path, as the timeline's) mark the row too.
    answers = {p.prompt_id: p for p in store.point_predictions("r", 5)}
    assert answers["p0"].error is None
    assert UNDECODABLE in answers["p2"].generation_params
