"""Terminal reports of comparisons and regression checks (``predwatch compare`` / ``check``)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from predwatch.analysis import Comparison, PointRef, PromptPair, RegressionReport

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


def print_comparison(console: Console, comparison: Comparison, *, limit: int = 20,
                     title: str = "Comparison") -> None:
    """Header, counts, mean score deltas, then the most severe prompts."""
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
    shown = [i for i in comparison.items if i.regressed or i.improved or i.status != "paired"]
    if shown:
        console.print(_items_table(shown[:limit]))
        if len(shown) > limit:
            console.print(f"  … {len(shown) - limit} more (--limit to show more)")
    else:
        console.print("  no prompt regressed or improved")


def _items_table(items: list[PromptPair]) -> Table:
    table = Table(title="prompts that changed verdict (regressed first)", title_justify="left")
    for col, justify in (("prompt", "left"), ("status", "left"), ("Δ CER", "right"),
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
        table.add_row(
            _short(item.prompt), status,
            _delta("char_error_rate", item.deltas.get("char_error_rate")),
            _delta("exact_match", item.deltas.get("exact_match")),
            "; ".join(item.reasons) or ("—" if item.status == "paired" else ""),
        )
    return table


def print_check(console: Console, report: RegressionReport, *, limit: int = 20) -> None:
    """The comparison, then the verdict of the regression gate."""
    print_comparison(console, report.comparison, limit=limit,
                     title="Regression check (A = baseline, B = candidate)")
    verdict = "[bold green]PASS[/]" if report.passed else "[bold red]FAIL[/]"
    console.print(f"{verdict}: {report.regressed} prompt(s) regressed; "
                  f"at most {report.max_regressions} allowed")


def print_runs(console: Console, runs: list[dict], total: int | None) -> None:
    table = Table(title=f"runs ({total if total is not None else len(runs)})",
                  title_justify="left")
    for col in ("id", "name", "owner", "status", "model", "created"):
        table.add_column(col)
    for r in runs:
        table.add_row(r["id"], r.get("name") or "", r.get("owner") or "", r["status"],
                      r.get("model_name") or r.get("base_model") or "",
                      str(r["created_at"])[:19].replace("T", " "))
    console.print(table)

