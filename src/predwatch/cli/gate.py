"""``predwatch compare`` and ``predwatch check``, the CI gate.

``check`` exits 0 when at most ``--max-regressions`` prompts regressed, 1 when more did (with
``--alpha``: 1 only on a significant regression at that level), 2 on any other error (unknown
run, unreachable server, bad options).
"""

from __future__ import annotations

from typing import Any

import click

from predwatch.cli.common import (
    cli_errors,
    console,
    db_option,
    is_server,
    open_backend,
    resolve_run,
    server_option,
)
from predwatch.cli.main import main

UI_URL = click.option("--ui-url", default=None, metavar="URL",
                      help="The web UI's address, for a link to the comparison "
                           "[default: --server's].")


class GateError(click.ClickException):
    """Any failure of ``check`` other than the verdict itself (exit code 2)."""

    exit_code = 2


@main.command()
@click.argument("run_a")
@click.argument("run_b")
@click.option("--step-a", type=int, default=None, help="RUN_A's point [default: its last].")
@click.option("--step-b", type=int, default=None, help="RUN_B's point [default: its last].")
@click.option("--regressed-only", is_flag=True, help="List only regressed prompts.")
@click.option("--tolerance", type=click.FloatRange(0, 1), default=None,
              help="Character error rate change that counts [default: 0.05].")
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True,
              help="Prompts to list.")
@click.option("--alpha", type=click.FloatRange(0, 0.5, min_open=True, max_open=True),
              default=0.05, show_default=True,
              help="Level of the significance tests (McNemar, or a sign-flip test of "
                   "per-prompt pass rates with several answers per prompt; bootstrap "
                   "intervals).")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@UI_URL
@db_option
@server_option
def compare(run_a: str, run_b: str, step_a: int | None, step_b: int | None,
            regressed_only: bool, tolerance: float | None, limit: int, alpha: float,
            as_json: bool, ui_url: str | None, db: str | None, server: str | None,
            api_key: str | None) -> None:
    """Compare RUN_B with RUN_A prompt by prompt: flips, score deltas, regressions, and
    whether they are beyond chance.

    RUN_A and RUN_B are run ids or unique prefixes of them.
    """
    from predwatch.analysis import Comparison, compare_runs

    params: dict[str, Any] = {"step_a": step_a, "step_b": step_b,
                              "regressed_only": regressed_only, "alpha": alpha}
    if tolerance is not None:
        params["tolerance"] = tolerance
    with cli_errors(), open_backend(db, server, api_key) as backend:
        run_a, run_b = resolve_run(backend, run_a), resolve_run(backend, run_b)
        if is_server(backend):
            data = backend.get("/api/compare", run_a=run_a, run_b=run_b, limit=10000, **params)
            comparison = Comparison.model_validate(data)
        else:
            comparison = compare_runs(backend, run_a, run_b, **params)
    if as_json:
        click.echo(comparison.model_dump_json(indent=2))
        return
    from predwatch.cli.report import print_comparison

    print_comparison(console(), comparison, limit=limit, ui_url=ui_url or server)


@main.command()
@click.argument("run")
@click.option("--baseline", required=True, help="The run to compare against (id or prefix).")
@click.option("--max-regressions", type=click.IntRange(0), default=0, show_default=True,
              help="Regressed prompts allowed before failing (without --alpha).")
@click.option("--alpha", type=click.FloatRange(0, 0.5, min_open=True, max_open=True),
              default=None, help="Fail only on a regression significant at this level "
                                 "(e.g. 0.05) instead of counting regressed prompts.")
@click.option("--step", type=int, default=None, help="RUN's point [default: its last].")
@click.option("--baseline-step", type=int, default=None,
              help="The baseline's point [default: its last].")
@click.option("--tolerance", type=click.FloatRange(0, 1), default=None,
              help="Character error rate change that counts [default: 0.05].")
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True,
              help="Prompts to list in the report.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@UI_URL
@db_option
@server_option
def check(run: str, baseline: str, max_regressions: int, alpha: float | None, step: int | None,
          baseline_step: int | None, tolerance: float | None, limit: int, as_json: bool,
          ui_url: str | None, db: str | None, server: str | None, api_key: str | None) -> None:
    """Fail (exit 1) when more than --max-regressions prompts regressed from the baseline, or
    with --alpha, when the regression is significant at that level.

    RUN is a run id or a unique prefix of one. Exit codes: 0 passed, 1 failed the gate, 2
    error (unknown run, bad options, ...).
    """
    from predwatch.analysis import RegressionReport, regression_report

    params: dict[str, Any] = {"step": step, "baseline_step": baseline_step,
                              "max_regressions": max_regressions}
    if alpha is not None:
        params["alpha"] = alpha
    if tolerance is not None:
        params["tolerance"] = tolerance
    with cli_errors(GateError), open_backend(db, server, api_key) as backend:
        run, baseline = resolve_run(backend, run), resolve_run(backend, baseline)
        if is_server(backend):
            data = backend.get(f"/api/runs/{run}/check", baseline=baseline, **params)
            report = RegressionReport.model_validate(data)
        else:
            report = regression_report(backend, run, baseline=baseline, **params)
    if as_json:
        click.echo(report.model_dump_json(indent=2))
    else:
        from predwatch.cli.report import print_check

        print_check(console(), report, limit=limit, ui_url=ui_url or server)
    if not report.passed:
        raise SystemExit(1)
