"""A run's checkpoint jobs on its page and in the runs list (issue #13): counts per state, each
failed job's error, and the JSON twin (``/api/runs/{id}/jobs``) saying the same."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("jinja2")
from fastapi.testclient import TestClient

from predwatch.config import Settings
from predwatch.records import Run
from predwatch.server import create_app


@pytest.fixture
def client(store: Any) -> Iterator[TestClient]:
    store.create_run(Run(id="watched", name="watched run"))
    store.create_run(Run(id="plain", name="no jobs"))
    for step in (10, 20, 30, 40):
        store.enqueue_job("watched", step, f"/ckpt/checkpoint-{step}", max_attempts=1)
    failed = store.claim_job("w1", run_id="watched")
    store.finish_job(failed.id, "w1", error="CUDA out of memory <at> layer 3", retry=False)
    done = store.claim_job("w1", run_id="watched")
    store.finish_job(done.id, "w1")
    store.claim_job("w2", run_id="watched")  # running; step 40 stays pending
    with TestClient(create_app(store, Settings())) as c:
        yield c


def test_the_run_page_counts_jobs_per_state_and_shows_each_failure(client: TestClient) -> None:
    html = client.get("/runs/watched").text
    counts = dict(re.findall(r'data-job-count="(\w+)">.*?<b>(\d+)</b>', html, re.S))
    assert counts == {"pending": "1", "running": "1", "done": "1", "failed": "1"}
    failed = re.search(r'<table class="grid compact failed-jobs-table">(.*?)</table>', html, re.S)
    assert failed, html
    assert 'data-job-step="10"' in failed.group(1)
    assert "CUDA out of memory &lt;at&gt; layer 3" in failed.group(1)  # escaped
    assert "data-jobs-active" in html  # pending and running jobs: the page polls
    twin = client.get("/api/runs/watched/jobs").json()
    assert twin["counts"] == {k: int(v) for k, v in counts.items()}
    assert [j["error"] for j in twin["jobs"] if j["status"] == "failed"] == [
        "CUDA out of memory <at> layer 3"]


def test_a_run_without_jobs_shows_no_jobs_section(client: TestClient) -> None:
    html = client.get("/runs/plain").text
    assert 'aria-labelledby="jobs-title"' not in html and "data-jobs-active" not in html


def test_the_runs_list_badges_runs_with_jobs(client: TestClient) -> None:
    html = client.get("/").text
    row = re.search(r'<tr data-run-id="watched">(.*?)</tr>', html, re.S).group(1)
    assert re.search(r"data-jobs-badge[^>]*>jobs 1/4 · 1 failed</span>", row), row
    assert "1 pending, 1 running, 1 done, 1 failed" in row
    plain = re.search(r'<tr data-run-id="plain">(.*?)</tr>', html, re.S).group(1)
    assert "data-jobs-badge" not in plain


def test_the_runs_list_reads_trends_and_jobs_in_a_fixed_number_of_queries(
        client: TestClient, store: Any) -> None:
    from sqlalchemy import event

    from predwatch.records import EvalPoint, Prediction

    def statements(path: str) -> int:
        seen: list[str] = []

        def count(*args: Any) -> None:
            seen.append(args[2])

        event.listen(store.engine, "before_cursor_execute", count)
        try:
            assert client.get(path).status_code == 200
        finally:
            event.remove(store.engine, "before_cursor_execute", count)
        return len(seen)

    few = statements("/?sort=name")
    for i in range(12):
        store.create_run(Run(id=f"more-{i}"))
        store.write_eval_point(EvalPoint(run_id=f"more-{i}", step=1), [Prediction(
            run_id=f"more-{i}", step=1, prompt_id="p", prompt="q", prediction="a")])
        store.enqueue_job(f"more-{i}", 1, "/ckpt/checkpoint-1")
    html = client.get("/?sort=name").text
    assert statements("/?sort=name") == few  # was 2 more per run (its trends, its jobs)
    row = re.search(r'<tr data-run-id="more-3">(.*?)</tr>', html, re.S).group(1)
    assert "1 pending, 0 running, 0 done, 0 failed" in row


def test_trends_and_job_counts_of_many_runs_equal_those_of_each(store: Any) -> None:
    from predwatch.records import EvalPoint, Prediction

    for run_id, steps in (("a", (1, 2, 3)), ("b", (5,)), ("c", ())):
        store.create_run(Run(id=run_id))
        for step in steps:
            store.write_eval_point(EvalPoint(run_id=run_id, step=step), [Prediction(
                run_id=run_id, step=step, prompt_id="p", prompt="q", prediction="a",
                ground_truth="a" if step % 2 else "b")])
    store.enqueue_job("a", 3, "/ckpt/checkpoint-3")
    ids = ["a", "b", "c", "unknown", "a"]
    trends = store.trends_of_runs(ids)
    assert set(trends) == {"a", "b", "c", "unknown"}
    for run_id in ("a", "b", "c", "unknown"):
        assert trends[run_id] == store.trends(run_id)
    assert [t.step for t in trends["a"]] == [1, 2, 3] and trends["c"] == []
    counts = store.job_counts_of_runs(ids)
    assert counts["a"] == store.job_counts("a") == {"pending": 1, "running": 0, "done": 0,
                                                    "failed": 0}
    assert counts["unknown"] == store.job_counts("unknown")
