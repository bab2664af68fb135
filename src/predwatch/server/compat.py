"""The original system's wire shapes, made from predwatch's records (see docs/compat.md).

The original clients (its trainer-side writer, Python and TypeScript SDKs, web UI) read these
shapes; predwatch's own routes keep its richer ones. Keys are only ever added here, never
renamed, and values keep the types the original clients declare:

- a row carries ``id`` (a string: the row's sequence number, the same id the live stream
  sends), ``job_id``, ``user_id`` (the run's owner) and ``epoch`` as an integer (the epoch the
  step is in: ``floor(epoch)``, 0 when unknown, as the original writer's ``int(state.epoch)``);
  the exact epoch stays under ``epoch_exact``;
- epochs and trends have one entry per integer epoch;
- error bodies carry a human-readable ``error`` (``OriginalErrors``); the machine code moves to
  ``code``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic_core import from_json, to_json
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from predwatch.records import Prediction, Run, TrendPoint
from predwatch.storage.base import EpochSums

PREFIX = "/api/training/"


def int_epoch(epoch: float | None) -> int:
    """The integer epoch of a (possibly fractional) epoch: the epoch the step is in."""
    return 0 if epoch is None or not math.isfinite(epoch) else math.floor(epoch)


# --- rows --------------------------------------------------------------------------------------
class OriginalPrediction(Prediction):
    """A row as the original clients read it: every original column, plus predwatch's fields."""

    id: str = Field(description="stable row id (the sequence number; the stream sends the same)")
    job_id: str
    user_id: str | None = Field(None, description="the run's owner (null on an open server)")
    epoch: int = Field(description="integer epoch: floor of the exact epoch, 0 when unknown")
    epoch_exact: float | None = Field(None, description="the exact (fractional) epoch")


def original_row(seq: int, prediction: Prediction, run: Run) -> dict[str, Any]:
    """One row in the original shape (a plain dict: rendered straight to JSON)."""
    data = prediction.model_dump(mode="json")
    data["id"] = str(seq)
    data["job_id"] = run.id
    data["user_id"] = run.owner
    data["epoch"] = int_epoch(prediction.epoch)
    data["epoch_exact"] = prediction.epoch
    return data


class OriginalPredictionsPage(BaseModel):
    job_id: str
    predictions: list[OriginalPrediction]
    total_count: int = Field(description="predictions matching the filter (all pages)")
    epoch_count: int = Field(description="integer epochs of the run")
    next_cursor: str | None = None


# --- epochs ------------------------------------------------------------------------------------
class OriginalEpoch(BaseModel):
    epoch: int
    prediction_count: int
    latest_step: int


class OriginalEpochs(BaseModel):
    job_id: str
    epochs: list[OriginalEpoch]


def original_epochs(epochs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """``store.epochs`` (one entry per exact epoch) merged into one entry per integer epoch."""
    merged: dict[int, dict[str, Any]] = {}
    for e in epochs:
        n = int_epoch(e["epoch"])
        entry = merged.setdefault(n, {"epoch": n, "prediction_count": 0, "latest_step": 0})
        entry["prediction_count"] += e["prediction_count"]
        entry["latest_step"] = max(entry["latest_step"], e["latest_step"])
    return [merged[n] for n in sorted(merged)]


# --- trends ------------------------------------------------------------------------------------
class EpochTrend(BaseModel):
    """Aggregates of one integer epoch's rows; averages leave nulls out."""

    epoch: int
    step: int = Field(description="the epoch's last step")
    sample_count: int
    avg_exact_match: float | None = None
    avg_char_error_rate: float | None = None
    avg_length_ratio: float | None = None
    avg_word_overlap: float | None = None
    min_char_error_rate: float | None = None
    max_char_error_rate: float | None = None
    validation_pass_rate: float | None = Field(None, description="passes / validated rows")
    # additions
    failed_count: int = Field(0, description="rows whose generation failed")
    avg_latency_ms: float | None = None
    avg_completion_tokens: float | None = None


class OriginalTrends(BaseModel):
    job_id: str
    trends: list[EpochTrend] | list[TrendPoint]
    overall_improvement: float | None = Field(
        description="% drop of the mean character error rate from the first to the last entry; "
        "null with fewer than two entries or a first CER of 0")
    per: Literal["epoch", "point"] = Field(
        "epoch", description="one entry per integer epoch (default) or per evaluation point")


def epoch_trends(sums: Iterable[EpochSums]) -> list[EpochTrend]:
    """One trend entry per integer epoch from the store's sums per exact epoch (exact: sums and
    non-null counts add up, averages of averages would not)."""
    merged: dict[int, EpochSums] = {}
    for s in sums:
        n = int_epoch(s.epoch)
        merged[n] = merged[n].merge(s) if n in merged else s
    return [_trend(n, merged[n]) for n in sorted(merged)]


def _trend(n: int, s: EpochSums) -> EpochTrend:
    def mean(name: str) -> float | None:
        total, count = s.sums.get(name, (0.0, 0))
        return total / count if count else None

    return EpochTrend(
        epoch=n, step=s.last_step, sample_count=s.rows,
        avg_exact_match=mean("exact_match"), avg_char_error_rate=mean("char_error_rate"),
        avg_length_ratio=mean("length_ratio"), avg_word_overlap=mean("word_overlap"),
        min_char_error_rate=s.min_cer, max_char_error_rate=s.max_cer,
        validation_pass_rate=s.passed / s.validated if s.validated else None,
        failed_count=s.failed, avg_latency_ms=mean("latency_ms"),
        avg_completion_tokens=mean("completion_tokens"),
    )


def overall_improvement(cers: list[float | None]) -> float | None:
    """(first CER - last CER) / first CER x 100 over the first and last entries; None with fewer
    than two entries, a missing CER at either end, or a first CER of 0."""
    if len(cers) < 2:
        return None
    first, last = cers[0], cers[-1]
    if first is None or last is None or first <= 0:
        return None
    return (first - last) / first * 100.0


# --- errors ------------------------------------------------------------------------------------
class OriginalErrors:
    """ASGI middleware: error bodies of the original routes carry a human-readable ``error``.

    The app answers ``{error: <code>, message, detail}``; under ``/api/training/`` the body
    becomes ``{error: "<Status>: <message>", code: <code>, message, detail}`` (the original
    answered e.g. ``{error: "Unauthorized: Invalid token"}``, and its SDKs show ``error``).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def rewriting_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                types = dict(message.get("headers", []))
                if message["status"] >= 400 and types.get(b"content-type", b"").startswith(
                        b"application/json"):
                    start = message  # hold it until the (small) body is complete
                    return
            elif message["type"] == "http.response.body" and start is not None:
                chunks.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                body = humanize_error(start["status"], b"".join(chunks))
                headers = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
                headers.append((b"content-length", str(len(body)).encode()))
                await send({**start, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, rewriting_send)


def humanize_error(status: int, raw: bytes) -> bytes:
    """An error body with ``error`` as a sentence and the machine code under ``code``."""
    try:
        body = from_json(raw)
    except ValueError:
        return raw
    if not isinstance(body, dict) or "code" in body:
        return raw
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    message = str(body.get("message") or body.get("error") or phrase)
    body = {"error": f"{phrase}: {message}", "code": body.get("error"), **{
        k: v for k, v in body.items() if k != "error"}}
    return to_json(body)
