"""What a page shows, as CSV or JSON: the predictions table, the worst samples, the compare
table and the runs table — the rows on screen, with the page's filters, sort and page.

Each export route takes the same query string as its page and computes its rows with the same
function (``runs.table_shown``, ``worst_shown``, ``runs_shown``, ``compare.compare_shown``), so a
download is exactly what the reader was looking at. ``/runs/{id}/predictions.csv?step=30&
failed=1`` is the failed answers of step 30 as the table lists them. JSON is a list of the same
rows, keys as the CSV's header (lists and maps stay JSON; CSV holds them as JSON text).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response

from predwatch import analysis
from predwatch.analysis.overview import shown_metrics
from predwatch.records import Prediction
from predwatch.server.deps import Access, PageRun
from predwatch.server.pages import compare as pages_compare
from predwatch.server.pages import runs as pages_runs
from predwatch.server.pages import sweep
from predwatch.server.pages.ui import featured_metrics, score_of

router = APIRouter()

Format = Literal["csv", "json"]
Row = dict[str, Any]


def _errors(p: Prediction | None) -> list[dict[str, Any]]:
    if p is None:
        return []
    return [e.model_dump(mode="json") for e in p.validation_errors]


def prediction_row(p: Prediction, names: Sequence[str]) -> Row:
    """One predictions-table row: where, what, every shown score, validation and cost."""
    row: Row = {"step": p.step, "epoch": p.epoch, "sample_index": p.sample_index,
                "prompt_id": p.prompt_id, "prompt": p.prompt, "ground_truth": p.ground_truth,
                "prediction": p.prediction}
    row.update({name: score_of(p, name) for name in names})
    row.update({"validation_pass": p.validation_pass, "validation_errors": _errors(p),
                "error": p.error, "prompt_tokens": p.prompt_tokens,
                "completion_tokens": p.completion_tokens, "latency_ms": p.latency_ms,
                "finish_reason": p.finish_reason})
    return row


def worst_row(w: analysis.WorstSample) -> Row:
    p = w.prediction
    return {"lens": w.lens, "reason": w.reason, "step": p.step, "epoch": p.epoch,
            "prompt_id": p.prompt_id, "prompt": p.prompt, "ground_truth": p.ground_truth,
            "prediction": p.prediction, "score": w.score,
            "previous_step": w.previous.step if w.previous else None,
            "previous_prediction": w.previous.prediction if w.previous else None,
            "previous_score": w.previous_score, "delta": w.delta,
            "newly_failing_validators": w.validators, "validation_pass": p.validation_pass,
            "validation_errors": _errors(p), "error": p.error}


def compare_row(it: analysis.PromptPair, names: Sequence[str]) -> Row:
    verdict = ("regressed" if it.regressed else "improved" if it.improved
               else "changed" if it.changed else "same") if it.status == "paired" else it.status
    row: Row = {"prompt_id": it.prompt_id, "occurrence": it.occurrence, "status": it.status,
                "verdict": verdict, "reasons": it.reasons, "prompt": it.prompt,
                "ground_truth": it.ground_truth,
                "step_a": it.a.step if it.a else None, "step_b": it.b.step if it.b else None,
                "answer_a": it.a.prediction if it.a else None,
                "answer_b": it.b.prediction if it.b else None}
    row.update({f"delta_{name}": it.deltas.get(name) for name in names})
    row.update({"validation_a": it.a.validation_pass if it.a else None,
                "validation_b": it.b.validation_pass if it.b else None})
    return row


def run_row(r: pages_runs.RunRow, params: Sequence[str], names: Sequence[str]) -> Row:
    last = r.last
    row: Row = {"id": r.run.id, "name": r.run.name, "status": sweep.display_status(r.run),
                "model_name": r.run.model_name, "base_model": r.run.base_model}
    row.update({f"hp.{key}": r.params.get(key) for key in params})
    row.update({"points": len(r.trends), "last_step": last.step if last else None,
                "last_epoch": last.epoch if last else None,
                "last_sample_count": last.sample_count if last else None})
    row.update({name: sweep.metric_value(last, name) for name in names})
    row["validation_pass_rate"] = last.validation_pass_rate if last else None
    row.update({f"jobs_{state}": n for state, n in r.jobs.items()})
    row["created_at"] = r.run.created_at.isoformat()
    return row


def _cell(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False) if value else ""
    return "" if value is None else value


def download(rows: list[Row], fmt: Format, name: str) -> Response:
    """The rows as a CSV (header: the first row's keys) or JSON (a list) attachment."""
    if fmt == "json":
        body = json.dumps(rows, ensure_ascii=False, indent=1, default=str)
        media = "application/json"
    else:
        out = io.StringIO()
        columns = list(rows[0]) if rows else []
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
        body, media = out.getvalue(), "text/csv; charset=utf-8"
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:120]
    return Response(body, media_type=media, headers={
        "Content-Disposition": f'attachment; filename="{safe}.{fmt}"',
        "Cache-Control": "no-store"})


def _names() -> list[str]:
    return [m.name for m in featured_metrics()]


@router.get("/runs/{run_id}/predictions.{fmt}", include_in_schema=False)
def export_predictions(request: Request, run: PageRun, access: Access, fmt: Format) -> Response:
    """The predictions table of the run page with the same query string (step, filter, sort,
    page): the rows it lists."""
    f = pages_runs.TableFilter.from_request(request)
    step = pages_runs.shown_step(run, f, [p.step for p in access.store.eval_points(run.id)])
    table = pages_runs.table_shown(access.store, run.id, f, step)
    names = [m.name for m in shown_metrics(access.store.trends(run.id))]
    return download([prediction_row(p, names) for p in table.items], fmt,
                    f"{run.id}-step{step}-predictions" + (f"-page{f.page}" if f.page > 1 else ""))


@router.get("/runs/{run_id}/worst.{fmt}", include_in_schema=False)
def export_worst(request: Request, run: PageRun, access: Access, fmt: Format) -> Response:
    """The worst samples panel of the run page (``step``, ``lens``)."""
    f = pages_runs.TableFilter.from_request(request)
    step = pages_runs.shown_step(run, f, [p.step for p in access.store.eval_points(run.id)])
    lens = pages_runs.lens_param(request)
    worst = pages_runs.worst_shown(access, run.id, lens, step)
    return download([worst_row(w) for w in worst], fmt, f"{run.id}-step{step}-{lens}")


@router.get("/runs.{fmt}", include_in_schema=False)
def export_runs(request: Request, access: Access, fmt: Format) -> Response:
    """The runs table with the same query string (search, filters, sort, page)."""
    view = pages_runs.runs_shown(request, access)
    names = _names()
    return download([run_row(r, view["params"], names) for r in view["rows"]], fmt, "runs")


@router.get("/compare.{fmt}", include_in_schema=False)
def export_compare(request: Request, access: Access, fmt: Format) -> Response:
    """The compare table with the same query string (runs, points, options, page)."""
    view = pages_compare.compare_shown(request, access)
    c = view["comparison"]
    names = list(c.mean_deltas) if c is not None else []
    name = (f"compare-{view['run_a']}-{view['step_a']}-vs-{view['run_b']}-{view['step_b']}"
            if c is not None else "compare")
    return download([compare_row(it, names) for it in view["items"]], fmt, name)
