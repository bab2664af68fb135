"""The checkpoint job queue on both databases: claims, leases, retries, failures, counts."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from predwatch.errors import NotFound, PayloadError
from predwatch.storage import open_store


def test_a_job_is_queued_once_per_run_and_step(store: Any) -> None:
    job, new = store.enqueue_job("r1", 10, "/out/checkpoint-10", epoch=0.5, payload={"a": 1})
    again, new_again = store.enqueue_job("r1", 10, "/elsewhere", payload={"a": 2})
    assert (new, new_again) == (True, False)
    assert again.id == job.id and again.path == "/out/checkpoint-10" and again.payload == {"a": 1}
    assert store.job_counts("r1") == {"pending": 1, "running": 0, "done": 0, "failed": 0}


def test_jobs_are_claimed_oldest_first_and_only_once(store: Any) -> None:
    for step in (5, 10):
        store.enqueue_job("r1", step, f"/out/checkpoint-{step}")
    first, second = store.claim_job("w1"), store.claim_job("w2")
    assert (first.step, first.worker, first.attempts, first.status) == (5, "w1", 1, "running")
    assert (second.step, second.worker) == (10, "w2")
    assert store.claim_job("w3") is None


def test_claim_can_be_limited_to_one_run(store: Any) -> None:
    store.enqueue_job("other", 1, "/a")
    store.enqueue_job("mine", 2, "/b")
    assert store.claim_job("w", run_id="mine").run_id == "mine"
    assert store.claim_job("w", run_id="mine") is None


def test_a_finished_job_is_done(store: Any) -> None:
    store.enqueue_job("r1", 5, "/out/checkpoint-5")
    job = store.claim_job("w1")
    done = store.finish_job(job.id, "w1")
    assert (done.status, done.error, done.lease_until) == ("done", None, None)
    assert done.finished_at is not None
    assert store.claim_job("w1") is None


def test_a_failed_attempt_returns_to_the_queue_until_attempts_run_out(store: Any) -> None:
    store.enqueue_job("r1", 5, "/out/checkpoint-5", max_attempts=2)
    job = store.claim_job("w1")
    assert store.finish_job(job.id, "w1", error="OSError: disk").status == "pending"
    job = store.claim_job("w2")
    assert job.attempts == 2
    failed = store.finish_job(job.id, "w2", error="OSError: disk again")
    assert (failed.status, failed.error) == ("failed", "OSError: disk again")
    assert store.claim_job("w3") is None
    listed = store.list_jobs(run_id="r1", status="failed")
    assert [j.error for j in listed] == ["OSError: disk again"]


def test_an_error_without_retry_fails_at_once(store: Any) -> None:
    store.enqueue_job("r1", 5, "/gone")
    job = store.claim_job("w1")
    failed = store.finish_job(job.id, "w1", error="deleted", retry=False)
    assert (failed.status, failed.attempts) == ("failed", 1)


def test_a_lapsed_lease_returns_the_job_and_the_old_holder_loses_it(store: Any) -> None:
    store.enqueue_job("r1", 5, "/out/checkpoint-5")
    dead = store.claim_job("dead", lease_s=-1)  # its lease is already over: a dead worker
    taken = store.claim_job("alive")
    assert taken.id == dead.id and taken.attempts == 2 and taken.worker == "alive"
    assert store.heartbeat_job(dead.id, "dead") is False
    assert store.heartbeat_job(taken.id, "alive") is True
    # The dead worker's late "done" does not touch the job its successor holds.
    assert store.finish_job(dead.id, "dead").status == "running"
    assert store.finish_job(taken.id, "alive").status == "done"


def test_a_job_whose_workers_keep_dying_fails_with_the_reason(store: Any) -> None:
    store.enqueue_job("r1", 5, "/out/checkpoint-5", max_attempts=2)
    store.claim_job("w1", lease_s=-1)
    store.claim_job("w2", lease_s=-1)
    assert store.claim_job("w3") is None
    (failed,) = store.list_jobs(run_id="r1")
    assert failed.status == "failed"
    assert "w2 stopped sending heartbeats" in failed.error and "2 attempt(s)" in failed.error


def test_bad_arguments_are_refused(store: Any) -> None:
    with pytest.raises(PayloadError, match="max_attempts"):
        store.enqueue_job("r1", 1, "/x", max_attempts=0)
    with pytest.raises(PayloadError, match="status"):
        store.list_jobs(status="lost")


def test_concurrent_workers_never_claim_a_job_twice(db_url: str) -> None:
    setup = open_store(db_url)
    for step in range(40):
        setup.enqueue_job("r1", step, f"/out/checkpoint-{step}")
    claimed: dict[str, list[int]] = {}

    def work(name: str) -> None:
        own = open_store(db_url)  # a worker has its own connections, like another machine
        try:
            while (job := own.claim_job(name)) is not None:
                claimed.setdefault(name, []).append(job.step)
                own.finish_job(job.id, name)
        finally:
            own.close()

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    steps = sorted(s for got in claimed.values() for s in got)
    assert steps == list(range(40))
    assert setup.job_counts() == {"pending": 0, "running": 0, "done": 40, "failed": 0}
    setup.close()


def test_deleting_a_run_deletes_its_jobs_and_only_its_own(store: Any) -> None:
    from predwatch.records import Run

    store.create_run(Run(id="gone"))
    store.create_run(Run(id="kept"))
    for step in (5, 10, 15):
        store.enqueue_job("gone", step, f"/out/checkpoint-{step}")
    store.enqueue_job("kept", 5, "/other/checkpoint-5")
    running = store.claim_job("w1", run_id="gone")
    store.delete_run("gone")
    assert store.list_jobs(run_id="gone") == []  # measured before: all three were left
    assert store.job_counts("gone") == {"pending": 0, "running": 0, "done": 0, "failed": 0}
    assert [j.run_id for j in store.list_jobs()] == ["kept"]
    assert store.heartbeat_job(running.id, "w1") is False  # its worker finds it gone
    assert store.claim_job("w2").run_id == "kept"  # nothing of the deleted run is claimed
    # A run that is not there: NotFound, and the queue is untouched.
    store.enqueue_job("absent", 1, "/x")
    with pytest.raises(NotFound):
        store.delete_run("absent")
    assert len(store.list_jobs(run_id="absent")) == 1
