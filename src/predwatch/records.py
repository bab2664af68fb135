"""The records predwatch passes around: one shape per entity, defined once, no I/O.

A record is converted to and from database rows in exactly one place (``storage/sql.py``) and to
and from the wire in exactly one place (the server's schemas reuse these models), so a score added
here cannot be dropped silently on the way.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Trigger(str, Enum):
    """Why an evaluation point happened."""

    EVAL = "eval"
    EPOCH = "epoch"
    STEPS = "steps"
    MANUAL = "manual"
    CHECKPOINT = "checkpoint"


class FinishReason(str, Enum):
    EOS = "eos"
    LENGTH = "length"
    STOP = "stop"
    ERROR = "error"


# "prediction_set": the original writer's name for samples read from a samples file
SampleSource = Literal["dataset", "set", "prediction_set"]
RunStatus = Literal["running", "finished", "failed"]

# The original four metrics keep their own columns; every other metric lives in ``metrics``.
CORE_METRICS = ("exact_match", "char_error_rate", "length_ratio", "word_overlap")


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no insignificant whitespace: the input of every content hash."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def without_nul(value: Any) -> Any:
    """``value`` (text, JSON-like lists and maps, records) with NUL characters removed
    (PostgreSQL stores none); a record (pydantic model) is cleaned in place."""
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, list):
        return [without_nul(v) for v in value]
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, BaseModel):
        strip_nul_deep(value)
    return value


def strip_nul_deep(record: BaseModel) -> None:
    """Remove NUL characters from every field of ``record``, in place."""
    for name, value in record.__dict__.items():
        setattr(record, name, without_nul(value))


def prompt_identity(prompt: str | None = None, messages: list[dict[str, Any]] | None = None) -> str:
    """``prompt_id``: sha256 of the canonical prompt (chat messages without the answer, or text)."""
    payload = canonical_json(messages) if messages is not None else (prompt or "")
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=True, validate_assignment=False)


class Sample(Record):
    """One prompt to answer at every evaluation point, with its identity and expected answer.

    ``prompt`` is what a person reads (for a chat: the last user turn) and, when ``messages`` is
    None, also exactly what the model is fed. ``messages`` is the conversation up to (not
    including) the final assistant turn.
    """

    prompt_id: str
    source_index: int
    prompt: str
    messages: list[dict[str, Any]] | None = None
    ground_truth: str | None = None
    sample_source: SampleSource = "dataset"
    sample_source_id: str | None = None
    set_id: str | None = None
    set_version: int | None = None
    item_id: str | None = None
    validators: list[dict[str, Any]] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    # Rendered into the chat template with ``messages``, as TRL does (``tools=``, ``**kwargs``).
    tools: list[dict[str, Any]] | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    # Content parts left out of the prompt (a text model cannot read them), counted by type.
    dropped_content: dict[str, int] = Field(default_factory=dict)
    # The sampling seed of this one answer, when several are drawn per prompt (``num_samples``;
    # set by the recorder from ``sample_seed``): a generator that samples draws this row's
    # tokens from it alone, so the answer does not depend on the rest of its batch.
    seed: int | None = None


class Generation(Record):
    """What a generator returns for one sample."""

    text: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: float | None = None
    finish_reason: FinishReason | None = None
    error: str | None = None

    @property
    def total_tokens(self) -> int | None:
        if self.prompt_tokens is None or self.completion_tokens is None:
            return None
        return self.prompt_tokens + self.completion_tokens


class ValidationIssue(Record):
    """One reason an answer failed validation (wire name: an item of ``validation_errors``).

    Extra keys are kept as sent (the original system's schema validator adds ``schema_path``).
    """

    model_config = ConfigDict(extra="allow", use_enum_values=True)

    validator: str
    message: str
    detail: Any = None


class ValidatorResult(Record):
    """The full result of one validator on one answer."""

    validator: str  # the validator's kind, e.g. "json_schema"
    name: str | None = None  # a label from the config, when given
    passed: bool
    message: str | None = None
    detail: Any = None
    error: bool = False  # the validator itself raised; counted as failed


class Prediction(Record):
    """One answer to one prompt at one evaluation point (a row of ``predictions``)."""

    # where
    run_id: str
    step: int
    epoch: float | None = None
    trigger: Trigger = Trigger.MANUAL
    sample_index: int = 0
    sample_number: int = 0  # >0 when several answers are drawn per prompt at one point
    # 0 for the first recording of this step; 1, 2, ... for each later one (a resumed run
    # recording a step again): set by the store from the point's writer, never merged
    attempt: int = 0
    # identity
    prompt_id: str
    source_index: int | None = None
    sample_source: SampleSource = "dataset"
    sample_source_id: str | None = None
    set_id: str | None = None
    set_version: int | None = None
    item_id: str | None = None
    # content
    prompt: str = ""
    messages: list[dict[str, Any]] | None = None
    ground_truth: str | None = None
    prediction: str = ""
    truncated: bool = False  # the server cut an over-long text field
    # scores
    exact_match: float | None = None
    char_error_rate: float | None = None
    length_ratio: float | None = None
    word_overlap: float | None = None
    metrics: dict[str, float | None] = Field(default_factory=dict)
    # validation
    validation_pass: bool | None = None
    validation_kind: str | None = None
    validation_errors: list[ValidationIssue] = Field(default_factory=list)
    validation_results: list[ValidatorResult] = Field(default_factory=list)
    # reproducibility
    generation_params: dict[str, Any] = Field(default_factory=dict)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    latency_ms: float | None = None
    max_new_tokens: int | None = None
    do_sample: bool | None = None
    finish_reason: FinishReason | None = None
    checkpoint: str | None = None
    model_revision: str | None = None
    chat_template_hash: str | None = None
    precision: str | None = None
    library_versions: dict[str, str] = Field(default_factory=dict)
    # failure of generation for this sample (the row is still written)
    error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


class EvalPoint(Record):
    """One evaluation point of a run: when, why, how many samples, how many failed, what it cost."""

    run_id: str
    step: int
    epoch: float | None = None
    trigger: Trigger = Trigger.MANUAL
    sample_count: int = 0
    failed_count: int = 0  # samples whose generation failed (rows with ``error``)
    generation_ms: float | None = None  # wall time spent generating at this point
    card: dict[str, Any] = Field(default_factory=dict)  # the reproducibility card
    created_at: datetime = Field(default_factory=utcnow)
    # Which recording of this step: the store numbers attempts by ``writer`` (one id per
    # recorder session), so a re-send of the same attempt dedupes and another writer at an
    # already recorded step becomes the next attempt. Read back: the newest attempt.
    attempt: int = 0
    writer: str | None = None


# A running run whose writer has not been heard from for this long is shown as stale (it
# probably crashed); writes refresh ``Run.last_seen_at``.
STALE_AFTER = timedelta(hours=2)


class Run(Record):
    """A training run (``job`` on the wire: ``job_id`` is its ``id``)."""

    id: str
    name: str | None = None
    owner: str | None = None
    model_name: str | None = None
    base_model: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    status: RunStatus = "running"
    created_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    last_seen_at: datetime | None = None  # the last write of its writer (a heartbeat)

    def is_stale(self, now: datetime | None = None, *, after: timedelta = STALE_AFTER) -> bool:
        """True when the run is still ``running`` but nothing was written for ``after``: its
        writer probably stopped (crashed, killed) without finishing it."""
        if self.status != "running":
            return False
        seen = self.last_seen_at or self.created_at
        return (now or utcnow()) - seen > after


class TrendPoint(Record):
    """Aggregates of one evaluation point (an entry of the ``trends`` route)."""

    epoch: float | None
    step: int
    sample_count: int
    avg_exact_match: float | None = None
    avg_char_error_rate: float | None = None
    avg_length_ratio: float | None = None
    avg_word_overlap: float | None = None
    min_char_error_rate: float | None = None
    max_char_error_rate: float | None = None
    validation_pass_rate: float | None = None
    # additions (keys are only ever added on the wire)
    avg_token_f1: float | None = None
    avg_rouge_l: float | None = None
    failed_count: int = 0
    avg_latency_ms: float | None = None
    avg_completion_tokens: float | None = None
    averages: dict[str, float | None] = Field(
        default_factory=dict,
        description="mean of every metric recorded at this point, by metric name (the avg_* "
        "fields included)")
