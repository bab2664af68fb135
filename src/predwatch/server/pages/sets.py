"""Prediction-set pages: the sets, one version's items, and what changed between two versions.

They call the functions behind ``/api/sets`` (``predwatch.sets``). Sets are shared by everyone
who may use the server, as in the API.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse

from predwatch.server.deps import Access
from predwatch.server.pages.runs import int_param
from predwatch.server.pages.ui import path_segment, render
from predwatch.sets.stored import diff_versions

router = APIRouter()

ITEMS_PER_PAGE = 50


@router.get("/sets", response_class=HTMLResponse, include_in_schema=False)
def sets_page(request: Request, access: Access) -> HTMLResponse:
    """Every set with its latest version, size and description: the set's own, else what its
    newest version that has one says (a description given with a later version counts)."""
    sets = access.store.list_sets()
    descriptions = {s.name: s.description or _latest_description(access, s.name) for s in sets}
    return render(request, "sets.html", sets=sets, descriptions=descriptions,
                  json_url="/api/sets")


def _latest_description(access: Access, name: str) -> str | None:
    versions = access.store.get_set(name).versions
    return next((v.description for v in reversed(versions) if v.description), None)


@router.get("/sets/{name}", response_class=HTMLResponse, include_in_schema=False)
def set_page(request: Request, name: str, access: Access) -> HTMLResponse:
    """A set's versions and the items of its latest version."""
    return _version_page(request, access, name, None)


@router.get("/sets/{name}/versions/{version}", response_class=HTMLResponse,
            include_in_schema=False)
def set_version_page(request: Request, name: str,
                     version: Annotated[int, Path(ge=1, le=2**31 - 1)],
                     access: Access) -> HTMLResponse:
    """The items of one version of a set."""
    return _version_page(request, access, name, version)


def _version_page(request: Request, access: Access, name: str,
                  version: int | None) -> HTMLResponse:
    store = access.store
    found = store.get_set(name)
    page = max(int_param(request, "page") or 1, 1)
    shown, items = store.list_set_items(name, version, limit=ITEMS_PER_PAGE,
                              offset=(page - 1) * ITEMS_PER_PAGE)
    pages = max(1, -(-shown.item_count // ITEMS_PER_PAGE))
    return render(request, "set.html", set=found, version=shown, items=items, page=page,
                  pages=pages, first_index=(page - 1) * ITEMS_PER_PAGE,
                  json_url=f"/api/sets/{path_segment(name)}/versions/{shown.version}")


@router.get("/sets/{name}/diff", response_class=HTMLResponse, include_in_schema=False)
def set_diff_page(request: Request, name: str, access: Access) -> HTMLResponse:
    """Items added, removed and changed from version ``a`` to ``b`` (default: the last two)."""
    store = access.store
    found = store.get_set(name)
    numbers = [v.version for v in found.versions]
    b = int_param(request, "b") or (numbers[-1] if numbers else None)
    a = int_param(request, "a")
    if a is None and b is not None:
        a = max((n for n in numbers if n < b), default=b)
    diff = diff_versions(store, name, a, b) if a is not None else None
    return render(request, "set_diff.html", set=found, diff=diff, a=a, b=b,
                  json_url=f"/api/sets/{path_segment(found.name)}/diff?a={a}&b={b}")
