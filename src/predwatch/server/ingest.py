"""Ingest: every limit on what a client may send, applied in one place.

``read_body`` enforces the body size *after* decompression (``Content-Encoding: gzip`` is
accepted) while streaming, so an oversized or gzip-bomb body is refused without being held in
memory. ``parse_batch`` validates the body against the records and makes it storable:

- more than ``max_rows_per_request`` rows: 413 naming ``predictions``;
- text longer than ``max_text_chars`` (prompt, answer, expected answer, error, chat messages of
  any shape, validator messages and details, generation parameters): cut, and the row marked
  ``truncated`` — the round is kept rather than rejected; ``prompt_id`` is derived from the
  prompt before the cut;
- steps, indexes and counts: non-negative integers (``true`` is not a number);
- NUL characters: stripped everywhere (PostgreSQL cannot store them);
- identifiers longer than ``MAX_ID_CHARS`` (they are indexed; cutting one would merge prompts)
  and labels longer than ``MAX_LABEL_CHARS``: 400; integers outside the 32-bit columns and
  impossible timestamps: 400;
- non-finite scores (NaN, inf): stored as unknown (null);
- ``job_id``, ``run_id`` (of the body, a row or the point): must be the token's run (403
  naming the field), never trusted to pick the run; a row's ``user_id`` (the original writer
  sends one) is ignored, as the owner is the token's.

Every refusal is a ``PayloadError`` (4xx) whose ``detail.field`` names the field.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pydantic import ValidationError

from predwatch.config import Settings
from predwatch.errors import Forbidden, PayloadError, PayloadTooLarge
from predwatch.records import (
    EvalPoint,
    Prediction,
    Run,
    prompt_identity,
    strip_nul_deep,
    utcnow,
)
from predwatch.server.errors import field_path
from predwatch.server.guards import MAX_JSON_DEPTH, depth_message, json_depth_violation
from predwatch.server.schemas import NULL_MEANS_DEFAULT, IngestBody, default_of

MAX_ID_CHARS = 512  # 4 bytes a character at worst: stays under PostgreSQL's btree row limit
MAX_LABEL_CHARS = 4096
_ID_FIELDS = ("prompt_id", "item_id", "set_id", "sample_source_id")
INT32 = 2**31 - 1
LONG_TEXT = ("prompt", "ground_truth", "prediction", "error")
_INT_FIELDS = tuple(n for n, f in Prediction.model_fields.items()
                    if f.annotation in (int, int | None))
_FLOAT_FIELDS = tuple(n for n, f in Prediction.model_fields.items()
                      if f.annotation in (float, float | None))
_LABEL_FIELDS = tuple(n for n, f in Prediction.model_fields.items()
                      if f.annotation in (str, str | None) and n not in LONG_TEXT)
_NUL_ESCAPE = b"\\u0000"


async def read_body(chunks: AsyncIterator[bytes], encoding: str | None, limit: int) -> bytes:
    """The request body, decompressed, at most ``limit`` bytes (``PayloadTooLarge`` beyond)."""
    encoding = (encoding or "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise PayloadError(f"unsupported Content-Encoding {encoding!r} (use gzip or none)",
                           detail={"field": "Content-Encoding"})
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding == "gzip" else None
    out = bytearray()

    def add(data: bytes) -> None:
        out.extend(data)
        if len(out) > limit:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes (after decompression)",
                                  detail={"field": "body", "limit": limit})

    try:
        async for chunk in chunks:
            if inflater is None:
                add(chunk)
                continue
            # Inflate in bounded steps so a small bomb cannot expand past the limit in memory.
            data = chunk
            while data:
                add(inflater.decompress(data, limit + 1 - len(out)))
                data = inflater.unconsumed_tail
        if inflater is not None:
            add(inflater.flush())
            if not inflater.eof:
                raise zlib.error("truncated gzip stream")
    except zlib.error as exc:
        raise PayloadError(f"body is not valid gzip: {exc}", detail={"field": "body"}) from None
    if inflater is not None:  # the request guard could only see the compressed bytes
        deep = json_depth_violation(bytes(out))
        if deep is not None:
            raise PayloadError(depth_message(deep), detail={"field": deep,
                                                            "limit": MAX_JSON_DEPTH})
    return bytes(out)


@dataclass
class ParsedBatch:
    """An ingest request made storable: one ``(point, rows)`` group per evaluation point."""

    groups: list[tuple[EvalPoint, list[Prediction]]] = field(default_factory=list)
    count: int = 0
    truncated: int = 0


def parse_batch(raw: bytes, run: Run, settings: Settings) -> ParsedBatch:
    """Validate an ingest body for ``run`` (the token's run) and apply every limit."""
    if not raw.strip():
        raise PayloadError("request body is empty; expected {job_id, predictions}",
                           detail={"field": "body"})
    try:
        body = IngestBody.model_validate_json(raw)
    except ValidationError as exc:
        raise payload_error(exc) from None
    if body.job_id != run.id:
        raise Forbidden(f"job_id {body.job_id!r} is not the run of this token",
                        detail={"field": "job_id"})
    if len(body.predictions) > settings.max_rows_per_request:
        raise PayloadTooLarge(
            f"{len(body.predictions)} predictions in one request; at most "
            f"{settings.max_rows_per_request} (send several requests)",
            detail={"field": "predictions", "limit": settings.max_rows_per_request},
        )
    has_nul = _NUL_ESCAPE in raw  # JSON can only carry NUL escaped: skip the deep scan otherwise
    # No string in a body is longer than the body: a small body has no text to cut.
    may_cut = len(raw) > settings.max_text_chars
    parsed = ParsedBatch(count=len(body.predictions))
    rows: list[Prediction] = []
    for i, p in enumerate(body.predictions):
        # The hot path: a parsed row is ours, so limits edit its fields in place (no copies).
        fields = p.__dict__
        for name in ("run_id", "job_id"):
            if fields[name] not in (None, run.id):
                raise Forbidden(
                    f"predictions[{i}].{name} {fields[name]!r} is not the run of this token",
                    detail={"field": f"predictions[{i}].{name}"})
        for name in NULL_MEANS_DEFAULT:
            if fields[name] is None:
                fields[name] = default_of(name)
        if has_nul:
            strip_nul_deep(p)
        if not fields["prompt_id"]:
            # From the full prompt, before any cut: two prompts that differ only past the cut
            # are different prompts (deriving it later would merge them and drop a row).
            fields["prompt_id"] = prompt_identity(fields["prompt"], fields["messages"])
        cut = _limit_row(fields, i, settings.max_text_chars, may_cut)
        parsed.truncated += cut
        fields["run_id"] = run.id
        fields["truncated"] = fields["truncated"] or cut
        rows.append(p)
    parsed.groups = _group(body, rows, run, has_nul)
    return parsed


def _group(body: IngestBody, rows: list[Prediction], run: Run, has_nul: bool
           ) -> list[tuple[EvalPoint, list[Prediction]]]:
    if body.eval_point is not None:
        ep = body.eval_point
        if ep.run_id not in (None, run.id):
            raise Forbidden(f"eval_point.run_id {ep.run_id!r} is not the run of this token",
                            detail={"field": "eval_point.run_id"})
        if has_nul:
            strip_nul_deep(ep)
        _check_ints(ep.__dict__, ("step", "sample_count", "failed_count"), "eval_point")
        _check_time(ep.created_at, "eval_point.created_at")
        for i, p in enumerate(rows):
            if p.step != ep.step:
                raise PayloadError(
                    f"predictions[{i}].step is {p.step} but eval_point.step is {ep.step}",
                    detail={"field": f"predictions[{i}].step"},
                )
        generation_ms = ep.generation_ms if _finite(ep.generation_ms) else None
        epoch = ep.epoch if _finite(ep.epoch) else None
        point = EvalPoint.model_construct(**dict(ep.__dict__, run_id=run.id, epoch=epoch,
                                                 generation_ms=generation_ms))
        return [(point, rows)]
    by_step: dict[int, list[Prediction]] = {}
    for p in rows:
        by_step.setdefault(p.step, []).append(p)
    groups = []
    for step, members in by_step.items():
        first = members[0]
        point = EvalPoint(
            run_id=run.id, step=step, trigger=first.trigger,
            epoch=next((p.epoch for p in members if p.epoch is not None), None),
            sample_count=len(members), failed_count=sum(p.error is not None for p in members),
            created_at=utcnow(),
        )
        groups.append((point, members))
    return groups


def _limit_row(fields: dict[str, Any], i: int, max_chars: int, may_cut: bool = True) -> bool:
    """Apply the limits to the fields of row ``i`` in place; True when text was cut.
    ``may_cut`` False: the body is shorter than ``max_chars``, so no text can be too long."""
    cut = _cut_texts(fields, max_chars) if may_cut else False
    for name in _LABEL_FIELDS:
        value = fields[name]
        if value is not None and len(value) > MAX_ID_CHARS:
            limit = MAX_ID_CHARS if name in _ID_FIELDS else MAX_LABEL_CHARS
            if len(value) > limit:
                raise PayloadError(f"predictions[{i}].{name} is longer than {limit} characters",
                                   detail={"field": f"predictions[{i}].{name}"})
    _check_ints(fields, _INT_FIELDS, f"predictions[{i}]")
    for name in _FLOAT_FIELDS:
        value = fields[name]
        if value is not None and not math.isfinite(value):
            fields[name] = None
    metrics = fields["metrics"]
    if not all(v is None or math.isfinite(v) for v in metrics.values()):
        fields["metrics"] = {k: (v if _finite(v) else None) for k, v in metrics.items()}
    _check_time(fields["created_at"], f"predictions[{i}].created_at")
    return cut


def _cut_texts(fields: dict[str, Any], max_chars: int) -> bool:
    """Cut every text of a row (answers, messages, parameters, validator reports) in place."""
    cut = False
    for name in LONG_TEXT:
        value = fields[name]
        if value is not None and len(value) > max_chars:
            fields[name] = value[:max_chars]
            cut = True
    if fields["messages"] is not None:
        cut = _cut_deep(fields["messages"], max_chars)[1] or cut
    if fields["generation_params"]:
        cut = _cut_deep(fields["generation_params"], max_chars)[1] or cut
    for issue in (*fields["validation_errors"], *fields["validation_results"]):
        cut = _cut_fields(issue.__dict__, ("message", "detail"), max_chars) or cut
    return cut


def _cut_fields(fields: dict[str, Any], names: tuple[str, ...], max_chars: int) -> bool:
    cut = False
    for name in names:
        value, was_cut = _cut_deep(fields[name], max_chars)
        if was_cut:
            fields[name] = value
            cut = True
    return cut


def _cut_deep(value: Any, max_chars: int) -> tuple[Any, bool]:
    """``value`` with every string in it (lists and dict values, in place) cut to ``max_chars``;
    and whether anything was cut. Chat messages, validator details and generation parameters
    are JSON of any shape (e.g. ``content: [{"type": "text", "text": ...}]``)."""
    if isinstance(value, str):
        return (value[:max_chars], True) if len(value) > max_chars else (value, False)
    cut = False
    if isinstance(value, list):
        for i, item in enumerate(value):
            new, was_cut = _cut_deep(item, max_chars)
            if was_cut:
                value[i] = new
                cut = True
    elif isinstance(value, dict):
        for key, item in value.items():
            new, was_cut = _cut_deep(item, max_chars)
            if was_cut:
                value[key] = new
                cut = True
    return value, cut


def _check_ints(fields: dict[str, Any], names: tuple[str, ...], where: str) -> None:
    for name in names:
        value = fields[name]
        if value is not None and not -INT32 <= value <= INT32:
            raise PayloadError(f"{where}.{name} = {value} is out of range (32-bit integer)",
                               detail={"field": f"{where}.{name}"})


def _check_time(value: datetime, where: str) -> None:
    try:
        utc = value.astimezone(timezone.utc) if value.tzinfo else value
        ok = 1970 <= utc.year <= 9000
    except (OverflowError, ValueError):
        ok = False
    if not ok:
        raise PayloadError(f"{where} is not a plausible timestamp", detail={"field": where})


def _finite(value: float | None) -> bool:
    return value is None or math.isfinite(value)


def payload_error(exc: ValidationError) -> PayloadError:
    """A pydantic validation error as a 400 naming every bad field (``predictions[3].step``)."""
    problems = [{"field": field_path(err["loc"]), "reason": _reason(err)} for err in exc.errors()]
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return PayloadError(f"invalid request body: {first['field']}: {first['reason']}{more}",
                        detail={"field": first["field"], "problems": problems[:50]})


def _reason(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown field"
    if err["type"] == "missing":
        return "required field is missing"
    return str(err["msg"])
