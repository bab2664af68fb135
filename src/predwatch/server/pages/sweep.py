"""Runs side by side: the hyperparameters of each run's config as columns, sorting and
filtering done server-side (query parameters, so the runs table works without JavaScript),
and the trends of several runs merged for one overlay chart per metric.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from predwatch.records import Run, TrendPoint
from predwatch.scoring import Metric
from predwatch.server.pages.ui import axis_title

Scalar = str | int | float | bool

# Shown first, in this order, when a run's config has them (the knobs of a sweep).
PREFERRED = (
    "model", "dataset", "learning_rate", "num_train_epochs", "max_steps",
    "per_device_train_batch_size", "gradient_accumulation_steps", "lora.r", "lora_r",
    "lora.alpha", "lora_alpha", "warmup_steps", "weight_decay", "seed",
)
# Not hyperparameters: predwatch's own settings, paths, and unreadable-config markers.
_SKIPPED = {"predictions", "output_dir", "predwatch_undecodable", "eval_strategy"}
MAX_COLUMNS = 12
# A sorted or filtered runs list is built from this many newest runs (one query per 200).
MAX_SORTED_RUNS = 1000


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))


def hyperparameters(run: Run) -> dict[str, Scalar]:
    """A run's hyperparameters, flat: ``run.config``'s scalars, ``training_args`` unprefixed,
    other nested sections one level deep as ``section.key`` (``lora.r``)."""
    found: dict[str, Scalar] = {}
    config = run.config if isinstance(run.config, dict) else {}
    for key, value in config.items():
        if key in _SKIPPED:
            continue
        if isinstance(value, dict):
            for inner, v in value.items():
                name = inner if key == "training_args" else f"{key}.{inner}"
                if inner not in _SKIPPED and _scalar(v):
                    found.setdefault(name, v)
        elif _scalar(value):
            found[key] = value
    return found


def columns(params: Iterable[dict[str, Scalar]]) -> list[str]:
    """The hyperparameter columns of a runs table: preferred names first, then the rest
    alphabetically; past ``MAX_COLUMNS``, the ones whose value is the same in every run go."""
    rows = list(params)
    names = {k for p in rows for k in p}
    ordered = [n for n in PREFERRED if n in names] + sorted(names - set(PREFERRED))
    if len(ordered) <= MAX_COLUMNS:
        return ordered
    varying = [n for n in ordered if len({repr(p.get(n)) for p in rows}) > 1]
    return (varying or ordered)[:MAX_COLUMNS]


def display_status(run: Run) -> str:
    """``stale`` for a running run whose writer went silent, else the run's status."""
    return "stale" if run.is_stale() else run.status


def sort_value(value: Any) -> tuple[int, float, str]:
    """An order for mixed cells: numbers by value, then text; empty cells last."""
    if value is None:
        return (2, 0.0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value).lower())


def metric_value(last: TrendPoint | None, name: str) -> float | None:
    """A metric's mean at a run's last evaluation point (``validation`` = the pass rate)."""
    if last is None:
        return None
    if name == "validation":
        return last.validation_pass_rate
    return last.averages.get(name)


@dataclass(frozen=True)
class Overlay:
    """Several runs' trends merged on one step axis: entry ``averages["{i}:{metric}"]`` is
    run ``i``'s value at that step (None where it has no point there)."""

    trends: list[dict[str, Any]]
    specs: list[dict[str, Any]]


_COLORS = ("blue", "red", "teal", "purple", "amber", "green")


def overlay(runs: list[Run], trends: list[list[TrendPoint]], shown: list[Metric]) -> Overlay:
    """One chart per shown metric (and the validation pass rate), one series per run."""
    steps = sorted({t.step for ts in trends for t in ts})
    merged: list[dict[str, Any]] = []
    for step in steps:
        averages: dict[str, float | None] = {}
        for i, ts in enumerate(trends):
            t = next((t for t in ts if t.step == step), None)
            for m in shown:
                averages[f"{i}:{m.name}"] = t.averages.get(m.name) if t else None
            averages[f"{i}:validation"] = t.validation_pass_rate if t else None
        merged.append({"step": step, "epoch": None, "averages": averages})
    charts: list[tuple[str, str, list[float] | None, str, str]] = [
        (m.name, m.title, list(m.range) if m.range else None, m.format, axis_title(m))
        for m in shown]
    charts.append(("validation", "Validation pass rate", [0, 1], "pct", "Pass rate (%)"))
    specs = [{
        "key": key, "title": title, "hint": "mean per evaluation point, one line per run",
        "range": rng, "fmt": fmt, "noclick": True, "axis": axis,
        "series": [{"metric": f"{i}:{key}", "label": run.name or run.id[:12],
                    "color": _COLORS[i % len(_COLORS)]} for i, run in enumerate(runs)],
    } for key, title, rng, fmt, axis in charts]
    return Overlay(trends=merged, specs=specs)
