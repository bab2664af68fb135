"""Terminal reports of comparisons and regression checks (``predwatch compare`` / ``check``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from rich.console import Console
from rich.table import Table

from predwatch.analysis import (
    Comparison,
    PointRef,
    PromptPair,
    RegressionReport,
    RunOverview,
    Significance,
)

# Scores where a lower value is better; for the rest higher is better.
LOWER_IS_BETTER = {"char_error_rate", "length_ratio"}


def _ref(ref: PointRef) -> str:
    name = f"{ref.run_name} ({ref.run_id})" if ref.run_name else ref.run_id
    epoch = f", epoch {round(ref.epoch, 2):g}" if ref.epoch is not None else ""
    return f"{name} @ step {ref.step}{epoch}, {ref.sample_count} answers"


def _delta(name: str, value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value) < 1e-12:
        return "0"
    better = value < 0 if name in LOWER_IS_BETTER else value > 0
    if name == "length_ratio":  # closer to 1 is better, not lower: no colour
        return f"{value:+.3f}"
    return f"[{'green' if better else 'red'}]{value:+.3f}[/]"


def _short(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def compare_link(ui_url: str | None, comparison: Comparison) -> str | None:
    """The web UI's page of this comparison, when a UI address is known."""
    if not ui_url:
        return None
    a, b = comparison.a, comparison.b
    query = urlencode({"run_a": a.run_id, "run_b": b.run_id, "step_a": a.step, "step_b": b.step})
    return f"{ui_url.rstrip('/')}/compare?{query}"


def print_significance(console: Console, sig: Significance) -> None:
    """The test that ran (exact McNemar on single answers, or the sign-flip test on per-prompt
    pass rates with several answers per prompt), the bootstrap intervals, then whether any
    regression is real."""
    console.print(f"  test: {sig.test_description}")
    rate = sig.pass_rate
    if rate is not None:
        how = "exact" if rate.exact else f"{rate.resamples} random sign patterns"
        console.print(
            f"  pass rate per prompt: {rate.mean_a:.1%} → {rate.mean_b:.1%} over {rate.prompts} "
            f"prompts ({rate.answers_a} and {rate.answers_b} answers each; {rate.worse} worse, "
            f"{rate.better} better; sign-flip p = {rate.p_value:.3g} two-sided, "
            f"{rate.p_worse:.3g} worse, {how})")
    for label, test in (("validation pass→fail vs fail→pass", sig.validation),
                        ("exact match lost vs gained", sig.exact_match)):
        if test is not None:
            console.print(f"  {label}: {test.worse} vs {test.better} (exact McNemar "
                          f"p = {test.p_value:.3g} two-sided, {test.p_worse:.3g} worse)")
    for name, iv in sig.deltas.items():
        console.print(f"  {name}: mean Δ {iv.mean:+.3f}, {iv.confidence:.0%} bootstrap interval "
                      f"[{iv.low:+.3f}, {iv.high:+.3f}] over {iv.prompts} prompts")
    if sig.significant_regression:
        console.print(f"  [bold red]significant regression at α = {sig.alpha:g}[/]: "
                      + "; ".join(sig.reasons))
    else:
        console.print(f"  no significant regression at α = {sig.alpha:g}")


def print_comparison(console: Console, comparison: Comparison, *, limit: int = 20,
                     title: str = "Comparison", ui_url: str | None = None) -> None:
    """Header, counts, mean score deltas, significance, then the most severe prompts."""
    console.print(f"[bold]{title}[/]")
    console.print(f"  A (before): {_ref(comparison.a)}")
    console.print(f"  B (after):  {_ref(comparison.b)}")
    c = comparison.counts
    parts = [(c.paired, "paired", ""), (c.added, "added", ""), (c.removed, "removed", ""),
             (c.changed, "changed", ""), (c.regressed, "regressed", "red"),
             (c.improved, "improved", "green"), (c.pass_to_fail, "pass→fail", "red"),
             (c.fail_to_pass, "fail→pass", "green")]
    console.print("  " + " · ".join(
        f"[{style}]{n} {label}[/]" if n and style else f"{n} {label}" for n, label, style in parts))
    known = {k: v for k, v in comparison.mean_deltas.items() if v is not None}
    if known:
        console.print("  mean score change over paired prompts (B − A): " + ", ".join(
            f"{name} {_delta(name, value)}" for name, value in known.items()))
    if comparison.significance is not None:
        print_significance(console, comparison.significance)
    link = compare_link(ui_url, comparison)
    if link:
        console.print(f"  in the web UI: {link}", soft_wrap=True)
    shown = [i for i in comparison.items if i.regressed or i.improved or i.status != "paired"]
    if shown:
        console.print(_items_table(shown[:limit]))
        if len(shown) > limit:
            console.print(f"  … {len(shown) - limit} more (--limit to show more)")
    else:
        console.print("  no prompt regressed or improved")


def _items_table(items: list[PromptPair]) -> Table:
    table = Table(title="prompts that changed verdict (regressed first)", title_justify="left")
    for col, justify in (("# id", "left"), ("prompt", "left"), ("status", "left"),
                         ("Δ CER", "right"),
                         ("Δ exact", "right"), ("why", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for item in items:
        status: str
        if item.status != "paired":
            status = item.status
        elif item.regressed:
            status = "[red]regressed[/]"
        else:
            status = "[green]improved[/]"
        answer = item.b or item.a
        index = f"{answer.sample_index} " if answer is not None else ""
        table.add_row(
            f"{index}{item.prompt_id[:8]}", _short(item.prompt), status,
            _delta("char_error_rate", item.deltas.get("char_error_rate")),
            _delta("exact_match", item.deltas.get("exact_match")),
            "; ".join(item.reasons) or ("—" if item.status == "paired" else ""),
        )
    return table


def print_check(console: Console, report: RegressionReport, *, limit: int = 20,
                ui_url: str | None = None) -> None:
    """The comparison, then the verdict of the regression gate."""
    print_comparison(console, report.comparison, limit=limit, ui_url=ui_url,
                     title="Regression check (A = baseline, B = candidate)")
    verdict = "[bold green]PASS[/]" if report.passed else "[bold red]FAIL[/]"
    if report.alpha is not None:
        found = "a significant" if report.significant_regression else "no significant"
        console.print(f"{verdict}: {found} regression at α = {report.alpha:g} "
                      f"({report.regressed} prompt(s) regressed)")
        return
    console.print(f"{verdict}: {report.regressed} prompt(s) regressed; "
                  f"at most {report.max_regressions} allowed")


def _metric_value(value: float | None, fmt_: str) -> str:
    if value is None:
        return "—"
    return f"{value * 100:.1f}%" if fmt_ == "pct" else f"{value:.3f}"


def print_runs(console: Console, runs: list[dict[str, Any]], total: int | None,
               overviews: list[RunOverview]) -> None:
    """Runs with full ids, status and their last evaluation point's headline metrics."""
    table = Table(title=f"runs ({total if total is not None else len(runs)})",
                  title_justify="left")
    names: list[tuple[str, str, str]] = []  # (metric, label, format), first seen first
    for overview in overviews:
        for card in overview.cards:  # the metrics some run has a value of
            if card.value is not None and card.metric.name not in {n for n, _, _ in names}:
                names.append((card.metric.name, card.metric.label, card.metric.format))
    # owner, model and times are in --json: the terminal keeps ids whole and the metrics
    for col in ("id", "name", "status", "points", "step"):
        table.add_column(col, no_wrap=col == "id", justify="right" if col in (
            "points", "step") else "left")
    for _, label, _ in names:
        table.add_column(label, justify="right")
    for r, overview in zip(runs, overviews, strict=True):
        cards = {c.metric.name: c.value for c in overview.cards}
        status = r["status"] + (" (stale)" if r.get("stale") else "")
        last = overview.summary.last_step
        table.add_row(r["id"], r.get("name") or "", status,
                      str(overview.summary.point_count), "—" if last is None else str(last),
                      *(_metric_value(cards.get(n), f) for n, _, f in names))
    console.print(table)


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float | None]) -> str:
    """A one-line trend: one block per point, scaled to the values' range ('·' where none)."""
    known = [v for v in values if v is not None]
    if not known:
        return ""
    low, high = min(known), max(known)
    span = high - low
    out = []
    for v in values:
        if v is None:
            out.append("·")
        else:
            level = 0 if span == 0 else round((v - low) / span * (len(SPARKS) - 1))
            out.append(SPARKS[level])
    return "".join(out)


def print_run(console: Console, overview: RunOverview) -> None:
    """``predwatch runs show``: the run, its headline metrics with trends, then its points."""
    from predwatch.analysis.overview import VALIDATION, metric_value

    run, summary = overview.run, overview.summary
    console.print(f"[bold]{run.name or run.id}[/]  id {run.id}  status {run.status}")
    if run.model_name or run.base_model:
        console.print(f"  model {run.model_name or '—'}  base {run.base_model or '—'}")
    console.print(f"  {summary.point_count} evaluation points, {summary.prediction_count} "
                  f"answers, {summary.failed_count} failed generations")
    if not overview.points:
        console.print("  no evaluation points yet")
        return
    shown = [*overview.metrics, VALIDATION]
    trends = overview.trends
    for card in (c for c in overview.cards if c.value is not None):
        m = card.metric
        series = [metric_value(t, m.name) for t in trends]
        change = "" if card.change is None else f" (since first: {card.change:+.3f})"
        console.print(f"  {m.title:<24} {_metric_value(card.value, m.format):>8}{change}  "
                      f"{sparkline(series)}")
    table = Table(title="evaluation points", title_justify="left")
    for col in ("step", "epoch", "trigger", "answers", "failed"):
        table.add_column(col, justify="left" if col == "trigger" else "right")
    for m in shown:
        table.add_column(m.label, justify="right")
    for p in overview.points:
        trigger = str(getattr(p.trigger, "value", p.trigger))
        table.add_row(str(p.step), "—" if p.epoch is None else f"{p.epoch:g}", trigger,
                      str(p.sample_count), str(p.failed_count),
                      *(_metric_value(metric_value(p.trend, m.name), m.format) for m in shown))
    console.print(table)
