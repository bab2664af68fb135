"""The checkpoint job queue of a run: pending / running / done / failed, with each job's error."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from predwatch.server.auth import Reader
from predwatch.server.responses import JSON
from predwatch.storage.base import Store
from predwatch.storage.jobs import Job

router = APIRouter(prefix="/api", tags=["jobs"])


class JobCounts(BaseModel):
    pending: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0


class RunJobs(BaseModel):
    """A run's checkpoint jobs, oldest first, and how many are in each state."""

    run_id: str
    counts: JobCounts
    jobs: list[Job]


def _store(request: Request) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


@router.get("/runs/{run_id}/jobs", response_model=RunJobs)
def run_jobs(
    request: Request,
    run_id: str,
    who: Reader,
    status: Annotated[Literal["pending", "running", "done", "failed"] | None,
                      Query(description="only jobs in this state")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> JSON:
    """The run's checkpoint jobs (``predwatch watch`` / ``worker``); a failed one says why."""
    store = _store(request)
    run = who.run(store, run_id)  # 404 for runs the caller may not see
    found = store.list_jobs(run_id=run.id, status=status, limit=limit)
    return JSON({"run_id": run.id, "counts": store.job_counts(run.id),
                 "jobs": [j.model_dump(mode="json") for j in found]})
