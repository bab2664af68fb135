"""FastAPI dependencies: the store, the caller, and the runs the caller may read — once.

Every route and page that takes a run id gets its run from here, so the ownership check
(``auth.Principal.run``: another owner's run answers 404, exactly like a missing one) is written
in one place and cannot be forgotten::

    @router.get("/api/runs/{run_id}/thing")
    def thing(run: ReadableRun, access: Access) -> Thing:   # run: the caller's, or 404
        ...

``ReadableRun`` reads the path parameter ``run_id``; ``ReadableJob`` the ``job_id`` of the
original routes; ``ManageableRun`` is the stricter check for deleting a run and its tokens. For
run ids in a query (``/api/compare?run_a=&run_b=``) call ``access.run(run_id)``. FastAPI
resolves each dependency once per request, so the credential is looked up once however many of
these a route takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends, Request

from predwatch.config import Settings
from predwatch.records import Run
from predwatch.server.auth import Principal, reader
from predwatch.storage.base import Store


def store_of(request: Request) -> Store:
    """The app's store (``create_app`` keeps it on ``app.state``)."""
    return cast(Store, request.app.state.store)


def settings_of(request: Request) -> Settings:
    """The app's settings."""
    return cast(Settings, request.app.state.settings)


@dataclass(frozen=True)
class Caller:
    """Who asks, and the store they ask: ``run(id)`` is the only way to a run."""

    store: Store
    who: Principal

    @property
    def owner(self) -> str | None:
        """The ``owner`` filter for store and analysis calls (None: every owner)."""
        return self.who.owner

    def run(self, run_id: str) -> Run:
        """The run if the caller may read it, else ``NotFound`` (never a hint it exists)."""
        return self.who.run(self.store, run_id)

    def runs_visible(self) -> bool:
        """Whether the caller may list runs (a run token sees only its own)."""
        return self.who.run_id is None


def caller(request: Request, who: Annotated[Principal, Depends(reader)]) -> Caller:
    """FastAPI dependency: the store and the authenticated caller of this request."""
    return Caller(store_of(request), who)


Access = Annotated[Caller, Depends(caller)]
"""A route parameter: the store and the caller (``access.run(id)`` checks ownership)."""
StoreDep = Annotated[Store, Depends(store_of)]
"""A route parameter: the app's store (no authentication)."""
SettingsDep = Annotated[Settings, Depends(settings_of)]
"""A route parameter: the app's settings."""


def readable_run(run_id: str, access: Access) -> Run:
    """FastAPI dependency: the run of the path's ``run_id``, if the caller may read it."""
    return access.run(run_id)


def readable_job(job_id: str, access: Access) -> Run:
    """FastAPI dependency: the run of the path's ``job_id`` (the original routes' name)."""
    return access.run(job_id)


def manageable_run(run_id: str, access: Access) -> Run:
    """FastAPI dependency: the path's run if the caller may delete it or issue its tokens (a
    key's own run, any run on an open server; never with a run token)."""
    return access.who.manageable_run(access.store, run_id)


ReadableRun = Annotated[Run, Depends(readable_run)]
"""A route parameter: the run named by the path's ``run_id`` (404 unless the caller's)."""
ReadableJob = Annotated[Run, Depends(readable_job)]
"""A route parameter: the run named by the path's ``job_id`` (404 unless the caller's)."""
ManageableRun = Annotated[Run, Depends(manageable_run)]
"""A route parameter: the path's run, for deleting it or managing its tokens (else 404)."""
