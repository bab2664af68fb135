"""What the HTML pages share: the Jinja environment (autoescaped), number formatting, the
metrics shown (columns, sort orders and charts, all from the scoring registry), and small
server-side drawings (sparklines) that need no JavaScript.

Pages fetch data through ``server.deps`` and ``predwatch.analysis`` — the same calls as their
JSON twins — and hand models to templates; nothing here touches the database.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse

from predwatch.errors import MissingDependency

try:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
    from markupsafe import Markup
except ModuleNotFoundError as exc:  # the pages need the [server] extra, like the API
    raise MissingDependency(exc.name or "jinja2", "server") from exc

from predwatch import __version__
from predwatch.analysis.overview import VALIDATION
from predwatch.analysis.textdiff import word_diff
from predwatch.records import CORE_METRICS, Prediction
from predwatch.scoring import Metric, metric_info, metrics
from predwatch.server import assets

TEMPLATES = Path(__file__).resolve().parent / "templates"


# Orders a predictions table can be sorted by besides the metrics (store sort names).
_OTHER_SORTS: tuple[tuple[str, str], ...] = (
    ("-latency_ms", "latency (slowest first)"),
    ("-completion_tokens", "tokens (most first)"),
)


def metric_of(name: str) -> Metric:
    """How to show ``name``: a registered metric, or the validation pass rate."""
    return VALIDATION if name == VALIDATION.name else metric_info(name)


def featured_metrics() -> list[Metric]:
    """The metrics every page shows (``featured=True`` in the registry), in order."""
    return [m for m in metrics() if m.featured]


def sort_options() -> list[tuple[str, str]]:
    """Every order a predictions table offers: sample order, each registered metric both
    ways (labelled by its direction), latency and tokens."""
    options = [("", "sample order")]
    for m in metrics():
        if m.higher_is_better is False:
            options += [(m.name, f"{m.label} (best first)"),
                        (f"-{m.name}", f"{m.label} (worst first)")]
        else:
            options += [(m.name, f"{m.title} (lowest first)"),
                        (f"-{m.name}", f"{m.title} (highest first)")]
    return options + list(_OTHER_SORTS)


def score_of(p: Prediction | None, name: str) -> float | None:
    """A score of a prediction: a column for the original four, else from ``metrics``."""
    if p is None:
        return None
    if name in CORE_METRICS:
        return cast(float | None, getattr(p, name))
    return p.metrics.get(name)


_COLORS = ("blue", "red", "teal", "purple", "amber", "green")


AXIS_TITLE_MAX = 16  # characters that fit along a chart's height; longer titles use the label


def axis_title(m: Metric) -> str:
    """A chart's y-axis title with its unit: rates in %, 0–1 scores say so."""
    name = m.title if len(m.title) <= AXIS_TITLE_MAX else m.label
    if m.format == "pct":
        return f"{name} (%)"
    if m.range == (0.0, 1.0):
        return f"{name} (0–1)"
    return name


def chart_specs(shown: list[Metric]) -> list[dict[str, Any]]:
    """What each trend chart plots (embedded as JSON; ``charts.js`` draws them): one chart per
    shown metric, then the validation pass rate and cost. Series read a trends entry's
    ``averages[metric]`` or its field ``key``."""
    specs: list[dict[str, Any]] = []
    for i, m in enumerate(shown):
        color = _COLORS[i % len(_COLORS)]
        spec: dict[str, Any] = {
            "key": m.name, "title": m.title, "hint": "mean per evaluation point",
            "axis": axis_title(m),
            "range": list(m.range) if m.range else None, "fmt": m.format,
            "series": [{"metric": m.name, "label": f"mean {m.label}", "color": color}]}
        if m.name == "char_error_rate":  # the store keeps the min and max of CER only
            spec["hint"] = "mean, with the min–max band"
            spec["series"] += [
                {"key": "min_char_error_rate", "label": "min", "color": color, "thin": True},
                {"key": "max_char_error_rate", "label": "max", "color": color, "thin": True}]
            spec["band"] = [3, 2]
        specs.append(spec)
    specs.append({"key": "validation", "title": "Validation pass rate",
                  "hint": "share of answers that pass", "range": [0, 1], "fmt": "pct",
                  "axis": "Pass rate (%)",
                  "series": [{"key": "validation_pass_rate", "label": "pass rate",
                              "color": "green"}]})
    specs.append({"key": "cost", "title": "Tokens & latency",
                  "hint": "mean completion tokens · mean latency", "range": None, "fmt": "num1",
                  "series": [{"key": "avg_completion_tokens", "label": "tokens", "color": "blue",
                              "scale": "tokens", "axis": "tokens (mean)"},
                             {"key": "avg_latency_ms", "label": "latency", "color": "amber",
                              "scale": "ms", "fmt": "ms", "axis": "latency (mean)"}]})
    return specs


# --- formatting -------------------------------------------------------------------------------
def fmt_num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def fmt_pct(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    return f"{value * 100:.{digits}f}%"


def fmt_epoch(value: float | None) -> str:
    """1.5 → "1.5", 2.0 → "2", 0.3333 → "0.33" (an epoch is a float, never truncated to int)."""
    if value is None:
        return "—"
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return text or "0"


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    return f"{value:.0f} ms"


def fmt_time(value: datetime | None) -> str:
    if value is None:
        return "—"
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def fmt_delta(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "—"
    if abs(value) < 0.5 * 10 ** -digits:
        return f"±{0:.{digits}f}"
    return f"{value:+.{digits}f}"


def metric_delta(value: float | None, name: str, digits: int = 3) -> str:
    """A change of score ``name`` in its unit: a rate (``format="pct"``) in percentage points
    (``+12.5 pts``), any other score as a plain difference (``-0.120``)."""
    if value is not None and metric_of(name).format == "pct":
        return fmt_delta(value * 100, 1) + " pts"
    return fmt_delta(value, digits)


def delta_title(name: str) -> str:
    """What a change of ``name`` is measured in (a tooltip)."""
    m = metric_of(name)
    if m.format == "pct":
        return f"change of {m.title.lower()} in percentage points"
    return f"change of {m.title.lower()} (difference of the 0–1 score)" if m.range == (0.0, 1.0) \
        else f"change of {m.title.lower()}"


def unit_of(name: str) -> str:
    """The unit a score is shown in: ``%`` for rates, "" for other scores."""
    return "%" if metric_of(name).format == "pct" else ""


def delta_class(value: float | None, name: str) -> str:
    """``good`` / ``bad`` / ``flat`` for a change of score ``name`` (CER: lower is better)."""
    higher_is_better = metric_of(name).higher_is_better
    if value is None or higher_is_better is None or abs(value) < 1e-9:
        return "flat"
    better = value > 0 if higher_is_better else value < 0
    return "good" if better else "bad"


def short(text: str | None, limit: int = 160) -> str:
    """The first ``limit`` characters of a text on one line (the full text is shown on expand)."""
    if not text:
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def sparkline(values: Sequence[float | None], *, width: int = 120, height: int = 28,
              lower_is_better: bool = False, label: str = "") -> Markup:
    """An inline SVG sparkline (drawn server-side: it needs no JavaScript)."""
    points = [(i, v) for i, v in enumerate(values) if v is not None]
    if not points:
        return Markup('<span class="muted">—</span>')
    lo = min(v for _, v in points)
    hi = max(v for _, v in points)
    span = hi - lo
    n = max(len(values) - 1, 1)
    pad = 2

    def xy(i: int, v: float) -> tuple[float, float]:
        level = (v - lo) / span if span else 0.5  # a flat line sits in the middle
        return (pad + (width - 2 * pad) * i / n, pad + (height - 2 * pad) * (1 - level))

    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, v) for i, v in points))
    last_x, last_y = xy(*points[-1])
    first, last = points[0][1], points[-1][1]
    trend = "flat" if abs(last - first) < 1e-9 else (
        "good" if (last < first) == lower_is_better else "bad")
    title = Markup.escape(label)
    return Markup(
        f'<svg class="spark spark-{trend}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{title}"><title>{title}</title>'
        f'<polyline points="{coords}" fill="none" stroke-width="1.5"/>'
        f'<circle cx="{last_x:.1f}" cy="{last_y:.1f}" r="2"/></svg>'
    )


# --- request helpers --------------------------------------------------------------------------
def url_with(request: Request, **changes: Any) -> str:
    """The current URL with some query parameters changed (None or "" removes one)."""
    params = {k: v for k, v in request.query_params.items()}
    for key, value in changes.items():
        if value is None or value == "" or value is False:
            params.pop(key, None)
        else:
            params[key] = "1" if value is True else str(value)
    query = urlencode(params)
    return request.url.path + (f"?{query}" if query else "")


def query_with(request: Request, **changes: Any) -> str:
    """The current query string (``?...``, "" when empty) with some parameters changed."""
    url = url_with(request, **changes)
    return url[len(request.url.path):]


def query_string(**params: Any) -> str:
    """``?a=1&b=2`` from the non-empty parameters ("" when none)."""
    kept = {k: ("1" if v is True else str(v)) for k, v in params.items()
            if v is not None and v != "" and v is not False}
    return ("?" + urlencode(kept)) if kept else ""


def _to_json(value: Any) -> Markup:
    """JSON safe to put in a ``<script type="application/json">`` (``<``, ``>``, ``&`` escaped)."""
    text = json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
    for raw, safe in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("'", "\\u0027")):
        text = text.replace(raw, safe)
    return Markup(text)


def path_segment(value: Any) -> str:
    """A value quoted to be one segment of a URL path (``/`` included)."""
    return quote(str(value), safe="")


def _pretty_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2, default=str)


def build_env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(["html"], default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        asset_url=assets.asset_url,
        import_map=assets.import_map,
        app_version=__version__,  # not `version`: the set pages pass a version of their own
        featured_metrics=featured_metrics,
        metric_of=metric_of,
        score_of=score_of,
        word_diff=word_diff,
        sparkline=sparkline,
        delta_class=delta_class,
        metric_delta=metric_delta,
        delta_title=delta_title,
        query_string=query_string,
        has_sets=False,  # pages.py turns it on when the set pages are installed
        section="",
    )
    env.filters.update(
        num=fmt_num, pct=fmt_pct, epoch=fmt_epoch, ms=fmt_ms, time=fmt_time, delta=fmt_delta,
        short=short, json_script=_to_json, pretty_json=_pretty_json, seg=path_segment,
    )
    return env


ENV = build_env()


def render(request: Request, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    """Render a page template; every page gets ``request``, ``url_with`` and ``csrf_token``
    (the session's token for forms that POST; '' when not signed in)."""
    from predwatch.server.auth import csrf_token_of

    html = ENV.get_template(template).render(
        request=request, url_with=lambda **kw: url_with(request, **kw),
        query_with=lambda **kw: query_with(request, **kw),
        csrf_token=csrf_token_of(request), **context
    )
    return HTMLResponse(html, status_code=status)


def mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None
