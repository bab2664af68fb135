"""FastAPI dependencies: the store, the caller, and the runs the caller may read — once.

Every route and page that takes a run id gets its run from here, so the ownership check
(``auth.Principal.run``: another owner's run answers 404, exactly like a missing one) is written
in one place and cannot be forgotten::

    @router.get("/api/runs/{run_id}/thing")
    def thing(run: ReadableRun, access: Access) -> Thing:   # run: the caller's, or 404
        ...

``ReadableRun`` reads the path parameter ``run_id``; ``ReadableJob`` the ``job_id`` of the
original routes; ``ManageableRun`` is the stricter check for deleting a run and its tokens. For
run ids in a query (``/api/compare?run_a=&run_b=``) call ``access.run(run_id)``.

HTML pages also take a unique prefix of an id (``/runs/3f2a``): ``PageRun`` and
``access.run_by_prefix(ref)`` for runs, ``prompt_by_prefix`` for prompt ids. An exact id always
wins; a prefix several ids share answers 409 naming them, one no id has 404. API routes take
exact ids only (their answers stay what the original clients expect). FastAPI
resolves each dependency once per request, so the credential is looked up once however many of
these a route takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends, Request

from predwatch.config import Settings
from predwatch.errors import Conflict, NotFound
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

    def run_by_prefix(self, ref: str) -> Run:
        """The run ``ref`` names: its exact id, else the one readable run whose id starts with
        it. ``Conflict`` (409) naming the candidates when several do, ``NotFound`` when none."""
        try:
            return self.run(ref)
        except NotFound:
            if not ref:
                raise
        if not self.runs_visible():  # a run token: its own run, or nothing
            own = str(self.who.run_id)
            if own.startswith(ref):
                return self.run(own)
            raise NotFound(f"run {ref!r} not found") from None
        found: list[str] = []
        cursor: str | None = None
        for _ in range(PREFIX_SCAN_PAGES):  # ``search`` matches ids (and names) containing ref
            page = self.store.list_runs(owner=self.owner, search=ref, limit=200, cursor=cursor)
            found += [r.id for r in page.items if r.id.startswith(ref)]
            cursor = page.next_cursor
            if cursor is None:
                break
        return self.run(_one(sorted(found), ref, "run"))

    def runs_visible(self) -> bool:
        """Whether the caller may list runs (a run token sees only its own)."""
        return self.who.run_id is None


PREFIX_SCAN_PAGES = 25
"""Runs matching a prefix are looked for among this many pages of 200 search results."""
SHOWN_CANDIDATES = 10


def _one(found: list[str], ref: str, what: str) -> str:
    """The only id in ``found``; else 404 (none) or 409 naming the candidates (several)."""
    if len(found) == 1:
        return found[0]
    if not found:
        raise NotFound(f"{what} {ref!r} not found (no {what} id is or starts with it)")
    shown = ", ".join(found[:SHOWN_CANDIDATES])
    more = f", … ({len(found)} in all)" if len(found) > SHOWN_CANDIDATES else ""
    raise Conflict(f"{what} id prefix {ref!r} is ambiguous: it starts {shown}{more}",
                   detail={"candidates": found[:SHOWN_CANDIDATES], "count": len(found)})


def prompt_by_prefix(store: Store, run_id: str, ref: str) -> str:
    """The prompt id ``ref`` names in a run: itself when the run answered it, else the one
    prompt id of the run's answers that starts with it (409 naming several, 404 for none).

    The prefix case reads every answer's prompt id once (a page then redirects to the full
    id, so it is paid once per link)."""
    if not ref or store.timeline(run_id, ref):
        return ref
    ids: set[str] = set()
    offset = 0
    while True:
        page = store.list_predictions(run_id, limit=1000, offset=offset)
        ids.update(p.prompt_id for p in page.items if p.prompt_id.startswith(ref))
        offset += len(page.items)
        if not page.items or len(page.items) < 1000:
            break
    return _one(sorted(ids), ref, "prompt")


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


def page_run(run_id: str, access: Access) -> Run:
    """FastAPI dependency of the HTML pages: the run the path's ``run_id`` names, its full id
    or a unique prefix of it (``Caller.run_by_prefix``)."""
    return access.run_by_prefix(run_id)


def manageable_run(run_id: str, access: Access) -> Run:
    """FastAPI dependency: the path's run if the caller may delete it or issue its tokens (a
    key's own run, any run on an open server; never with a run token)."""
    return access.who.manageable_run(access.store, run_id)


ReadableRun = Annotated[Run, Depends(readable_run)]
"""A route parameter: the run named by the path's ``run_id`` (404 unless the caller's)."""
ReadableJob = Annotated[Run, Depends(readable_job)]
"""A route parameter: the run named by the path's ``job_id`` (404 unless the caller's)."""
PageRun = Annotated[Run, Depends(page_run)]
"""A page parameter: the run the path's ``run_id`` names, by full id or unique prefix."""
ManageableRun = Annotated[Run, Depends(manageable_run)]
"""A route parameter: the path's run, for deleting it or managing its tokens (else 404)."""
