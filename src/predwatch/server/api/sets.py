"""Prediction sets and cost estimates.

```
GET  /api/sets                                   {sets: [...]}
GET  /api/sets/{name}                            {set} with every version
GET  /api/sets/{name}/versions/{version|latest}  {version, items, total_count, next_offset}
POST /api/sets                                   create a version from {name, items, ...}
GET  /api/sets/{name}/diff?a=&b=                 {added, removed, changed, unchanged}
POST /api/estimate                               the cost of a plan, or of a measured run
```
Sets are shared by everyone who may use the server (any API key or run token; anyone on an
open server): a golden set is a team's yardstick, not one person's run. Creating a version needs
an API key (its user is recorded as the creator), or an open server; a run token cannot.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from predwatch.config import PredictionsConfig
from predwatch.errors import Forbidden, PayloadError, PayloadTooLarge
from predwatch.recording.estimate import Estimate
from predwatch.records import without_nul
from predwatch.server.deps import Access
from predwatch.server.openapi import error
from predwatch.sets import read_items
from predwatch.sets.model import MAX_NAME_CHARS, PredictionSet, SetDiff, SetItem, SetVersion
from predwatch.sets.stored import diff_versions

router = APIRouter(prefix="/api", tags=["sets"])

MAX_ITEMS = 100_000
INT32 = 2**31 - 1  # versions and offsets are 32-bit integers in the database
MAX_EPOCHS = 1e6
MAX_FIGURE = 1e12  # seconds, tokens, rates: far beyond any real plan, far from overflowing


class SetCreate(BaseModel):
    """``POST /api/sets``: items in any format ``predwatch sets import`` reads from JSON."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    description: str | None = Field(default=None, max_length=10_000)
    source: str | None = Field(default=None, max_length=1000)
    items: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_ITEMS)


class EstimateRequest(BaseModel):
    """``POST /api/estimate``: a plan (``config`` + training figures) or a ``run_id``.

    Figures are bounded (and finite) so the arithmetic of an estimate cannot overflow, and
    strict: ``true`` is not a number of seconds."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)

    run_id: str | None = Field(default=None, max_length=200)
    config: dict[str, Any] = Field(default_factory=dict)
    prompts: int | None = Field(default=None, ge=1, le=INT32)
    num_train_epochs: float | None = Field(default=None, gt=0, le=MAX_EPOCHS)
    max_steps: int | None = Field(default=None, ge=0, le=INT32)
    steps_per_epoch: float | None = Field(default=None, ge=1e-6, le=INT32)
    eval_strategy: str | None = Field(default=None, pattern="^(steps|epoch|no)$")
    eval_steps: float | None = Field(default=None, gt=0, le=INT32)
    tokens_per_second: float | None = Field(default=None, gt=0, le=MAX_FIGURE)
    seconds_per_prediction: float | None = Field(default=None, ge=0, le=MAX_FIGURE)
    mean_completion_tokens: float | None = Field(default=None, ge=0, le=MAX_FIGURE)
    seconds_per_step: float | None = Field(default=None, ge=0, le=MAX_FIGURE)
    training_seconds: float | None = Field(default=None, ge=0, le=MAX_FIGURE)
    frequency: str | None = Field(default=None, pattern="^(epoch|eval|steps)$")


class SetListed(PredictionSet):
    """A set in the list: its latest version number and item count (no versions)."""

    versions: list[SetVersion] = Field(default_factory=list, exclude=True)


class SetsList(BaseModel):
    sets: list[SetListed]


class SetDetail(BaseModel):
    set: PredictionSet


class SetVersionPage(BaseModel):
    version: SetVersion
    items: list[SetItem]
    total_count: int
    next_offset: int | None = None


class SetCreated(BaseModel):
    version: SetVersion
    created: bool = Field(description="false: this exact content already was a version")


@router.get("/sets")
def sets_list(access: Access) -> SetsList:
    """Every set with its latest version number and item count."""
    return SetsList(sets=[SetListed(**dict(s)) for s in access.store.list_sets()])


@router.get("/sets/{name}")
def set_detail(name: str, access: Access) -> SetDetail:
    """One set with all its versions, oldest first."""
    return SetDetail(set=access.store.get_set(name))


@router.get("/sets/{name}/versions/{version}")
def set_version(
    name: str,
    version: Annotated[str, Path(pattern=r"^(latest|[1-9][0-9]{0,8})$",
                                 description="a version number, or latest")],
    access: Access,
    limit: int = Query(500, ge=1, le=5000),
    offset: int = Query(0, ge=0, le=INT32),
) -> SetVersionPage:
    """A version (a number or ``latest``) and a page of its items in order."""
    found, items = access.store.list_set_items(name, _version_number(version),
                              limit=limit, offset=offset)
    following = offset + len(items)
    total = found.item_count
    return SetVersionPage(version=found, items=items, total_count=total,
                          next_offset=following if following < total else None)


@router.post("/sets", status_code=201, responses={
    200: {"model": SetCreated, "description": "this exact content already was a version"},
    **error(403, 422)})
def set_create(request: Request, response: Response, body: SetCreate,
               access: Access) -> SetCreated:
    """Store ``items`` as a new version of set ``name`` (201), or answer the version that
    already has exactly this content (200, ``created: false``)."""
    who = access.who
    if who.run_id is not None:
        raise Forbidden("a run write token cannot create prediction sets; use an API key",
                        detail={"field": "Authorization"})
    raw_items = without_nul(body.items)  # PostgreSQL cannot store NUL characters
    _check_text_lengths(raw_items, request.app.state.settings.max_text_chars)
    items = read_items(raw_items, source_id="items")
    version, created = access.store.create_set_version(
        without_nul(body.name), items,
        description=without_nul(body.description), source=without_nul(body.source),
        owner=who.user,
    )
    if not created:
        response.status_code = 200
    return SetCreated(version=version, created=created)


@router.get("/sets/{name}/diff")
def set_diff(
    name: str,
    access: Access,
    a: int = Query(..., ge=1, le=INT32, description="the older version"),
    b: int | None = Query(None, ge=1, le=INT32,
                             description="the newer version (default: latest)"),
) -> SetDiff:
    """Items added, removed and changed from version ``a`` to ``b``."""
    return diff_versions(access.store, name, a, b)


@router.post("/estimate", tags=["estimate"], responses=error(404, 422))
def estimate(body: EstimateRequest, access: Access) -> Estimate:
    """The projected cost of recording predictions: of a plan, or measured on a run."""
    from predwatch.recording.estimate import estimate_cost, estimate_from_run, stored_set_size

    store = access.store
    if body.run_id is not None:
        access.run(body.run_id)  # 404 for a run the caller may not see
        return estimate_from_run(store, body.run_id)
    config = PredictionsConfig.from_dict(body.config)
    figures = body.model_dump(exclude={"run_id", "config"})
    set_size = stored_set_size(store, config) if body.prompts is None else None
    return estimate_cost(config, **figures, set_size=set_size)


def _check_text_lengths(items: list[dict[str, Any]], max_chars: int) -> None:
    """413 naming the first item field whose text is longer than ``max_chars``
    (``Settings.max_text_chars``, the limit ingest cuts rows to)."""
    for i, item in enumerate(items):
        for key, value in item.items():
            where = _longer_than(value, max_chars)
            if where is not None:
                field = f"items[{i}].{key}{where}"
                raise PayloadTooLarge(f"{field} is longer than {max_chars} characters",
                                      detail={"field": field, "limit": max_chars})


def _longer_than(value: Any, max_chars: int) -> str | None:
    """The path (below ``value``) of a string longer than ``max_chars``, or None."""
    if isinstance(value, str):
        return "" if len(value) > max_chars else None
    entries = (value.items() if isinstance(value, dict)
               else enumerate(value) if isinstance(value, list) else ())
    for key, item in entries:
        where = _longer_than(item, max_chars)
        if where is not None:
            return (f"[{key}]" if isinstance(key, int) else f".{key}") + where
    return None


def _version_number(version: str) -> int | None:
    if version == "latest":
        return None
    # isdigit() would take "²" (int() refuses it): ASCII decimal digits only, and bounded.
    if version.isascii() and version.isdecimal() and 1 <= int(version) <= INT32:
        return int(version)
    raise PayloadError(f"invalid version {version!r}: a number from 1, or 'latest'",
                       detail={"field": "version"})
