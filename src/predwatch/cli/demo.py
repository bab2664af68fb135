"""``predwatch demo``."""

from __future__ import annotations

import logging
from typing import Any

import click

from predwatch.cli.common import db_option, fmt, resolve_db_url
from predwatch.cli.main import main


@main.command()
@db_option
@click.option("--steps", default=300, show_default=True, help="Training steps.")
@click.option("--eval-every", default=25, show_default=True,
              help="Steps between evaluation points.")
@click.option("--no-serve", is_flag=True, help="Exit after training instead of serving the UI.")
@click.option("--port", default=8000, show_default=True, help="Port of the UI served at the end.")
def demo(db: str | None, steps: int, eval_every: int, no_serve: bool, port: int) -> None:
    """Train a tiny local model on a JSON task and record it, then serve the UI.

    Nothing is downloaded: the tokenizer and model are built on this machine. Predictions land
    in --db (default ./predwatch.db); a table shows exact match, character error rate and JSON
    validity at each evaluation point.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from predwatch.demo import run_demo

    url = resolve_db_url(db)
    console = Console()
    console.print(f"[bold]predwatch demo[/] — recording into [cyan]{url}[/]")
    # transformers/datasets chatter would tear the progress bar; predwatch's own errors still show.
    for noisy in ("transformers", "datasets", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    table = Table(title="What the model answers, evaluation point by evaluation point")
    for col in ("step", "epoch", "exact match", "char error rate", "valid JSON", "generation"):
        table.add_column(col, justify="right")

    with Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(),
        MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True,
    ) as progress:
        task = progress.add_task("training", total=steps)

        def on_step(step: int, total: int) -> None:
            progress.update(task, completed=step, total=total)

        def on_point(s: Any) -> None:
            row = (
                str(s.step), fmt(s.epoch, 2), fmt(s.exact_match, 2, pct=True),
                fmt(s.char_error_rate, 3), fmt(s.validation_pass_rate, 2, pct=True),
                f"{s.generation_ms / 1000:.1f}s",
            )
            table.add_row(*row)
            progress.console.print("  ".join(f"{h}={v}" for h, v in zip(
                ("step", "epoch", "exact", "cer", "valid", "gen"), row, strict=True)))

        result = run_demo(url, max_steps=steps, eval_every=eval_every, on_point=on_point,
                          on_step=on_step)

    console.print(table)
    console.print(
        f"Recorded {sum(s.sample_count for s in result.summaries)} answers at "
        f"{len(result.summaries)} evaluation points in {result.seconds:.0f}s — "
        f"run [bold]{result.run_id}[/]."
    )
    if no_serve:
        console.print(f"Browse them with: predwatch serve --db {url}")
        return
    try:
        from predwatch.server.run import serve
    except ImportError:
        console.print(f"(the web UI is not installed; inspect {url} with `predwatch runs list`)")
        return
    console.print(
        f"Serving the UI at http://127.0.0.1:{port}/runs/{result.run_id} (Ctrl-C to stop)"
    )
    serve(database_url=url, host="127.0.0.1", port=port)
