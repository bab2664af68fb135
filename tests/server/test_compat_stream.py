"""Conformance of the live stream: events parsed exactly as the original UI's hook parses them
(``JSON.parse(data).prediction`` is the row, ``total_count`` sets the count) against a real
server, with the row identical to the list's (same ``id``: React keys, de-duplication)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from compat_wire import generated, hook_events, new_job, serve, write, writer_records

from predwatch.testing import ServerHandle

ROWS = 5


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerHandle]:
    yield from serve(request, tmp_path_factory.mktemp("stream"),
                     env={"PREDWATCH_HEARTBEAT_SECONDS": "0.5"})


def listen(server: ServerHandle, job_id: str, want: int, events: list[tuple[str, Any]],
           connected: threading.Event, **params: Any) -> None:
    """The hook's loop: fetch, read the body in chunks, parse, stop after ``want`` rows."""
    url = f"{server.url}/api/training/predictions/{job_id}/stream"
    with httpx.stream("GET", url, params={"max_seconds": 20, **params}, timeout=30,
                      headers={"Accept": "text/event-stream",
                               "X-API-Key": "wak_the_hooks_key"}) as answer:
        assert answer.status_code == 200
        for name, data in hook_events(answer.iter_raw()):
            events.append((name, json.loads(data)))
            connected.set()
            if sum(n == "prediction" for n, _ in events) >= want and any(
                    n == "heartbeat" for n, _ in events):
                return


def test_new_rows_arrive_live_as_the_list_renders_them(server: ServerHandle) -> None:
    job_id, token = new_job(server)
    events: list[tuple[str, Any]] = []
    connected = threading.Event()
    listener = threading.Thread(target=listen, args=(server, job_id, 2 * ROWS, events, connected))
    listener.start()
    assert connected.wait(30)  # the job had no rows when the page opened
    for step in (10, 20):
        preds = [generated(0, step, i, cer=0.1, passed=True) for i in range(ROWS)]
        assert write(server, token, job_id, writer_records(preds, job_id, "u")).status_code == 200
    listener.join(30)
    assert not listener.is_alive()

    name, hello = events[0]
    assert name == "connected" and hello["jobId"] == job_id and hello["timestamp"]
    beats = [data for n, data in events if n == "heartbeat"]
    assert beats and all("timestamp" in b for b in beats)
    live = [data for n, data in events if n == "prediction"]
    assert len(live) == 2 * ROWS
    assert all(isinstance(d["total_count"], int) and d["timestamp"] for d in live)
    counts = [d["total_count"] for d in live]
    assert counts == list(range(1, 2 * ROWS + 1))  # the job's rows so far, at each row
    rows = [d["prediction"] for d in live]
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids)  # a key per row, nothing to de-duplicate twice

    listed = httpx.get(f"{server.url}/api/training/predictions/{job_id}", timeout=30).json()
    by_id = {r["id"]: r for r in listed["predictions"]}
    assert set(by_id) == set(ids)
    for row in rows:  # the live row is the list's row, key for key, value for value
        assert row == by_id[row["id"]]
        assert isinstance(row["epoch"], int)


def test_a_reconnect_resumes_without_duplicates(server: ServerHandle) -> None:
    """The UI merges live rows by ``id``: a replay from ``after`` repeats no row it has."""
    job_id, token = new_job(server)
    preds = [generated(1, 5, i, cer=0.2) for i in range(ROWS)]
    write(server, token, job_id, writer_records(preds, job_id, "u"))
    events: list[tuple[str, Any]] = []
    listen(server, job_id, ROWS, events, threading.Event(), after=0)
    first = [d["prediction"]["id"] for n, d in events if n == "prediction"]
    assert len(first) == ROWS
    again: list[tuple[str, Any]] = []
    listen(server, job_id, ROWS - 2, again, threading.Event(), after=first[1])
    assert [d["prediction"]["id"] for n, d in again if n == "prediction"] == first[2:]
    # the count goes on from the rows the page already has
    assert [d["total_count"] for n, d in again if n == "prediction"] == list(range(3, ROWS + 1))
