"""Request and response bodies of the API.

Request bodies reuse the records (``Prediction``, ``EvalPoint``): the wire shape *is* the record,
with unknown fields rejected (``extra="forbid"``). Two fields are relaxed because the server
supplies them: ``run_id`` comes from the write token, and ``prompt_id`` is derived from the prompt
when a client (like the original system) does not send one. Limits are applied in one place,
``predwatch.server.ingest``. Response models document the shapes in ``/docs``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from predwatch.analysis import (
    Comparison,
    PointOut,
    RunOverview,
    RunSummary,
    Timeline,
    WorstSample,
)
from predwatch.records import (
    EvalPoint,
    Prediction,
    Run,
    SampleSource,
    TrendPoint,
    Trigger,
    ValidationIssue,
    ValidatorResult,
    utcnow,
)
from predwatch.scoring import Metric


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _refuse_bool(value: Any) -> Any:
    # JSON ``true`` would otherwise be taken as 1 where a number is expected.
    if isinstance(value, bool):
        raise ValueError("expected an integer, not a boolean")
    return value


Counter = Annotated[int, Field(ge=0), BeforeValidator(_refuse_bool)]
"""A step, an index or a count as posted: a non-negative integer (not ``true``)."""


# --- requests -------------------------------------------------------------------------------------
class PredictionIn(Prediction):
    """A prediction as posted; ``run_id`` (from the token) and ``prompt_id`` may be omitted.
    Steps, indexes and token counts are non-negative integers.

    The original writer's record is accepted as it is: its ``job_id`` (checked against the
    token's run by ingest) and ``user_id`` (ignored: the owner comes from the token), and
    ``null`` for any field that has a default (``NULL_MEANS_DEFAULT``: ingest puts the default
    back; a field-level type is cheaper than a model validator on the hot path).
    """

    job_id: str | None = None
    user_id: str | None = None
    run_id: str | None = None  # type: ignore[assignment]
    prompt_id: str | None = None  # type: ignore[assignment]
    step: Counter
    sample_index: Counter | None = 0  # type: ignore[assignment]
    sample_number: Counter | None = 0  # type: ignore[assignment]
    source_index: Counter | None = None
    set_version: Counter | None = None
    prompt_tokens: Counter | None = None
    completion_tokens: Counter | None = None
    total_tokens: Counter | None = None
    max_new_tokens: Counter | None = None
    trigger: Trigger | None = Trigger.MANUAL  # type: ignore[assignment]
    sample_source: SampleSource | None = "dataset"  # type: ignore[assignment]
    prompt: str | None = ""  # type: ignore[assignment]
    prediction: str | None = ""  # type: ignore[assignment]
    truncated: bool | None = False  # type: ignore[assignment]
    metrics: dict[str, float | None] | None = Field(  # type: ignore[assignment]
        default_factory=dict)
    validation_errors: list[ValidationIssue] | None = Field(  # type: ignore[assignment]
        default_factory=list)
    validation_results: list[ValidatorResult] | None = Field(  # type: ignore[assignment]
        default_factory=list)
    generation_params: dict[str, Any] | None = Field(  # type: ignore[assignment]
        default_factory=dict)
    library_versions: dict[str, str] | None = Field(  # type: ignore[assignment]
        default_factory=dict)
    created_at: datetime | None = Field(default_factory=utcnow)  # type: ignore[assignment]


NULL_MEANS_DEFAULT: tuple[str, ...] = tuple(
    name for name, f in Prediction.model_fields.items()
    if not f.is_required() and f.get_default(call_default_factory=True) is not None
    and PredictionIn.model_fields[name].annotation != f.annotation)
"""Fields whose ``null`` means "not given" (the original writer sends ``validation_errors:
null``, ``sample_source: null``, ...); ``default_of(name)`` is what ingest stores instead."""


def default_of(name: str) -> Any:
    """The record's default of field ``name`` (a fresh one for containers)."""
    return Prediction.model_fields[name].get_default(call_default_factory=True)


class EvalPointIn(EvalPoint):
    """An evaluation point as posted; ``run_id`` comes from the token and may be omitted."""

    run_id: str | None = None  # type: ignore[assignment]
    step: Counter
    sample_count: Counter = 0
    failed_count: Counter = 0


class IngestBody(_Body):
    """``POST /api/training/local/predictions``: the original ``{job_id, predictions}`` plus an
    optional ``eval_point`` (what ``Batch.to_wire`` sends). Without one, the evaluation points
    are derived from the rows' ``step``/``epoch``/``trigger``."""

    job_id: str
    eval_point: EvalPointIn | None = None
    predictions: list[PredictionIn]


class RunCreate(_Body):
    """``POST /api/runs``: describe a new run (the owner is the caller's user)."""

    id: str | None = Field(default=None, min_length=1, max_length=200,
                              pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
    name: str | None = Field(default=None, max_length=1000)
    model_name: str | None = Field(default=None, max_length=1000)
    base_model: str | None = Field(default=None, max_length=1000)
    config: dict[str, Any] = Field(default_factory=dict)


class RunFinish(_Body):
    status: Literal["finished", "failed", "running"] = "finished"


# --- responses ------------------------------------------------------------------------------------
class IngestResult(BaseModel):
    success: bool = True
    count: int = Field(description="rows accepted (re-sent rows included)")
    inserted: int = Field(description="rows newly stored (re-sent rows are skipped)")
    truncated: int = Field(0, description="rows whose over-long text was cut")
    job_id: str


class PredictionOut(Prediction):
    """A stored prediction; ``id`` is its sequence number (as in the live stream)."""

    id: int | None = None


class PredictionsPage(BaseModel):
    job_id: str
    predictions: list[Prediction]
    total_count: int = Field(description="predictions matching the filter (all pages)")
    epoch_count: int
    next_cursor: str | None = None


class EpochSummary(BaseModel):
    epoch: float | None
    prediction_count: int
    latest_step: int


class EpochsResponse(BaseModel):
    job_id: str
    epochs: list[EpochSummary]


class TrendsResponse(BaseModel):
    job_id: str
    trends: list[TrendPoint]
    overall_improvement: float = Field(
        description="% drop of the mean character error rate from the first to the last point"
    )


class RunOut(Run):
    """A run on the wire: the record plus ``job_id`` (the original system's name for its id)."""

    job_id: str
    stale: bool = Field(default=False, description="running, but nothing written for long "
                        "(``last_seen_at``): its writer probably stopped without finishing it")

    @classmethod
    def of(cls, run: Run) -> RunOut:
        return cls(**run.model_dump(), job_id=run.id, stale=run.is_stale())


class RunDetail(RunOut):
    """``GET /api/runs/{run_id}``: a run with a summary of its evaluation points."""

    summary: RunSummary


class RunCreated(BaseModel):
    run: RunOut
    job_id: str
    token: str = Field(description="the run's write token; shown once, stored hashed")


class RunsPage(BaseModel):
    runs: list[RunOut]
    total_count: int
    next_cursor: str | None = None


class PointsPage(BaseModel):
    job_id: str
    points: list[PointOut]
    next_cursor: str | None = None


class TokenIssued(BaseModel):
    job_id: str
    token: str
    revoked: int = 0


class TokensRevoked(BaseModel):
    job_id: str
    revoked: int


class WhoAmI(BaseModel):
    user: str | None = None
    run: RunOut | None = None
    auth_required: bool


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    database: str = Field(description="the store's dialect: sqlite or postgresql")
    auth_required: bool


class RunDeleted(BaseModel):
    deleted: bool = True
    job_id: str


class OverviewOut(RunOverview):
    """``GET /api/runs/{run_id}/overview``: what the run page's head shows."""

    job_id: str


class MetricsList(BaseModel):
    """``GET /api/metrics``: every registered metric and how it is shown."""

    metrics: list[Metric]


class TimelinePage(Timeline):
    next_cursor: str | None = None


class ComparisonPage(Comparison):
    next_cursor: str | None = None


class WorstPage(BaseModel):
    job_id: str
    lens: str
    step: int | None = Field(description="the evaluation point looked at (default: the last)")
    lenses: list[str]
    items: list[WorstSample]


class ErrorBody(BaseModel):
    """Every error: a code, a sentence for people, and ``detail`` (``field`` names the bad one)."""

    error: str
    message: str
    detail: Any = None
