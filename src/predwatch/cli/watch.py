"""``predwatch watch``, ``predwatch worker`` and ``predwatch jobs list``: recording off the
training path, from the checkpoints a training job saves (any framework), through a job queue
in the database."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import click

from predwatch.cli.common import cli_errors, console, db_option, resolve_db_url, store_for
from predwatch.cli.main import main

_QUEUE_DEFAULT = "sqlite:///.predwatch/queue.db"


def _backend_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--backend", type=click.Choice(["hf", "openai"]), default="hf",
                     show_default=True, help="Generate in-process with transformers (hf) or "
                     "through an OpenAI-compatible server (vLLM, SGLang, TGI, transformers "
                     "serve)."),
        click.option("--device", default=None,
                     help="hf: where to load each checkpoint [default: cuda when available]."),
        click.option("--openai-url", default=None, metavar="URL",
                     help="openai: the server, e.g. http://127.0.0.1:8000."),
        click.option("--openai-model", default="{path}", show_default=True,
                     help="openai: model name sent to the server; {path}, {name} and {step} "
                     "name the checkpoint (transformers serve loads {path}; vLLM: the LoRA "
                     "adapter's name)."),
        click.option("--openai-key", envvar="PREDWATCH_OPENAI_API_KEY", default=None,
                     help="openai: bearer token [default: $PREDWATCH_OPENAI_API_KEY]."),
        click.option("--lease", type=click.FloatRange(5), default=120.0, show_default=True,
                     help="Seconds a claimed job stays leased without a heartbeat."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _backend(backend: str, device: str | None, openai_url: str | None, openai_model: str,
             openai_key: str | None) -> Any:
    from predwatch.recording.worker import Backend

    if backend == "openai" and not openai_url:
        raise click.UsageError("--backend openai needs --openai-url")
    return Backend(name=backend, device=device, base_url=openai_url, model=openai_model,
                   api_key=openai_key)


@main.command()
@click.argument("output_dir", type=click.Path(file_okay=False))
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Predictions config (JSON): prompts (samples_path or a set), generation, "
              "metrics, validators.")
@db_option
@click.option("--server", default=None, metavar="URL",
              help="Send rows to a predwatch server (the queue stays in --queue).")
@click.option("--api-key", envvar="PREDWATCH_API_KEY", default=None,
              help="API key for --server [default: $PREDWATCH_API_KEY].")
@click.option("--token", envvar="PREDWATCH_RUN_TOKEN", default=None,
              help="Run write token for --server [default: $PREDWATCH_RUN_TOKEN].")
@click.option("--queue", default=None, metavar="URL",
              help=f"Job queue database with --server [default: {_QUEUE_DEFAULT}].")
@click.option("--run", "run_id", default=None,
              help="Run id [default: derived from OUTPUT_DIR, so a restart continues it].")
@click.option("--run-name", default=None, help="Run name [default: OUTPUT_DIR's name].")
@click.option("--base-model", default=None, metavar="PATH",
              help="Base model of adapter checkpoints [default: the adapter's own record].")
@click.option("--tokenizer", default=None, metavar="PATH",
              help="Tokenizer folder when checkpoints have none.")
@click.option("--once", is_flag=True, help="Record what is there now and exit.")
@click.option("--no-work", is_flag=True,
              help="Only queue jobs; `predwatch worker` processes record them.")
@click.option("--settle", type=click.FloatRange(0), default=5.0, show_default=True,
              help="Seconds a checkpoint must stay unchanged before it is read.")
@click.option("--poll", type=click.FloatRange(0.1), default=10.0, show_default=True,
              help="Seconds between scans.")
@click.option("--final-step", type=int, default=None,
              help="Step of a final save in OUTPUT_DIR that has no trainer_state.json.")
@_backend_options
def watch(output_dir: str, config_path: str | None, db: str | None, server: str | None,
          api_key: str | None, token: str | None, queue: str | None, run_id: str | None,
          run_name: str | None, base_model: str | None, tokenizer: str | None, once: bool,
          no_work: bool, settle: float, poll: float, final_step: int | None, backend: str,
          device: str | None, openai_url: str | None, openai_model: str,
          openai_key: str | None, lease: float) -> None:
    """Record every checkpoint a training job saves in OUTPUT_DIR, beside it.

    Works for any framework that saves Hugging Face checkpoints (checkpoint-N/, step-N/ or a
    final save). Each complete checkpoint is queued once at its step and recorded; a
    checkpoint still being written is waited for. Restarting continues the same run. Exits 1
    when a job failed (--once) so scripts notice.
    """
    from pathlib import Path

    from predwatch.config import PredictionsConfig
    from predwatch.recording.watcher import Watcher, watch_run_id
    from predwatch.recording.worker import Worker
    from predwatch.records import Run

    chosen = _backend(backend, device, openai_url, openai_model, openai_key)
    with cli_errors():
        config = (PredictionsConfig.from_file(config_path) if config_path
                  else PredictionsConfig())
        if config.source != "set" and not config.samples_path:
            raise click.UsageError("--config must name the prompts: samples_path (a JSON or "
                                   "JSON Lines file) or source \"set\" with a set")
        if not Path(output_dir).is_dir():
            raise click.UsageError(f"{output_dir}: no such directory")
        queue_url = (queue or _QUEUE_DEFAULT) if server else resolve_db_url(db)
        sink = _server_sink(server, token, api_key) if server else None
        run = Run(id=run_id or watch_run_id(output_dir),
                  name=run_name or Path(output_dir).resolve().name, base_model=base_model,
                  config={"predictions": config.model_dump(mode="json"),
                          "watch": {"output_dir": str(Path(output_dir).resolve()),
                                    "backend": backend}})
        from predwatch.storage import open_store

        store = open_store(queue_url)
        try:
            progress = _Progress()
            worker = None if no_work else Worker(store, chosen, lease_s=lease, sink=sink,
                                                 on_job=progress.finished)
            watcher = Watcher(store, output_dir, run, config, base_model=base_model,
                              tokenizer=tokenizer, worker=worker, settle_s=settle,
                              final_step=final_step, on_event=progress.event)
            watcher.start()
            click.echo(f"predwatch: watching {output_dir} for run {watcher.run.id}"
                       f"{' (once)' if once else ''}", err=True)
            with progress:
                if once:
                    report = watcher.run_once()
                else:
                    try:
                        watcher.follow(poll_s=poll)
                    except KeyboardInterrupt:
                        report = None
                    else:  # pragma: no cover - follow() returns only when stopped
                        report = None
            counts = store.job_counts(watcher.run.id)
        finally:
            store.close()
            if sink is not None:
                sink.close(timeout=30)
    if once and report is not None:
        for folder, why in sorted(report.waiting.items()):
            click.echo(f"not recorded: {folder}: {why}", err=True)
        for folder in report.deleted:
            click.echo(f"deleted before it was recorded: {folder}", err=True)
    click.echo(_counts_line(watcher.run.id, counts))
    if once and counts["failed"]:
        raise SystemExit(1)


@main.command()
@db_option
@click.option("--once", is_flag=True, help="Process what is queued now and exit.")
@click.option("--poll", type=click.FloatRange(0.1), default=5.0, show_default=True,
              help="Seconds between looks at an empty queue.")
@click.option("--run", "run_id", default=None, help="Only this run's jobs (with --once).")
@_backend_options
def worker(db: str | None, once: bool, poll: float, run_id: str | None, backend: str,
           device: str | None, openai_url: str | None, openai_model: str,
           openai_key: str | None, lease: float) -> None:
    """Serve the checkpoint job queue of a database: claim, record, repeat.

    Many workers (on many machines, on PostgreSQL) share one queue; a worker that dies
    returns its job to the queue when its lease runs out.
    """
    from predwatch.recording.worker import Worker

    chosen = _backend(backend, device, openai_url, openai_model, openai_key)
    with cli_errors(), store_for(db) as store:
        serving = Worker(store, chosen, lease_s=lease)
        click.echo(f"predwatch: worker {serving.name} serving {store.url}", err=True)
        if once:
            done = serving.drain(run_id=run_id)
            click.echo(f"processed {done} job(s)")
            return
        stop = threading.Event()
        try:
            serving.serve(poll_s=poll, stop=stop)
        except KeyboardInterrupt:
            stop.set()


@main.group()
def jobs() -> None:
    """The checkpoint job queue: what is pending, running, done and failed."""


@jobs.command("list")
@db_option
@click.option("--run", "run_id", default=None, help="Only this run's jobs.")
@click.option("--status", type=click.Choice(["pending", "running", "done", "failed"]),
              default=None, help="Only jobs in this state.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def jobs_list(db: str | None, run_id: str | None, status: str | None, as_json: bool) -> None:
    """Jobs oldest first, with their errors, and the counts per state."""
    import json

    with cli_errors(), store_for(db) as store:
        found = store.list_jobs(run_id=run_id, status=status)
        counts = store.job_counts(run_id)
    if as_json:
        click.echo(json.dumps({"jobs": [j.model_dump(mode="json") for j in found],
                               "counts": counts}, indent=2))
        return
    from rich.table import Table

    table = Table("run", "step", "status", "attempts", "worker", "checkpoint", "error")
    for j in found:
        table.add_row(j.run_id[:12], str(j.step), j.status, f"{j.attempts}/{j.max_attempts}",
                      j.worker or "", j.path, j.error or "")
    out = console()
    out.print(table)
    out.print(_counts_line(run_id, counts))


def _counts_line(run_id: str | None, counts: dict[str, int]) -> str:
    where = f"run {run_id}" if run_id else "all runs"
    return f"jobs of {where}: " + ", ".join(f"{counts[k]} {k}" for k in
                                           ("pending", "running", "done", "failed"))


def _server_sink(server: str, token: str | None, api_key: str | None) -> Any:
    from predwatch.config import RECORDER_SETTINGS, Settings
    from predwatch.delivery import open_sink

    settings = Settings.from_env(only=RECORDER_SETTINGS, server_url=server, run_token=token)
    if api_key:
        settings = settings.model_copy(update={"api_key": api_key})
    return open_sink(settings)


class _Progress:
    """A rich progress bar over the queued jobs of this watcher (stderr)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                             MofNCompleteColumn(), console=Console(stderr=True), transient=False)
        self._task = self._bar.add_task("checkpoints recorded", total=0)

    def __enter__(self) -> _Progress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def event(self, kind: str, data: Any) -> None:
        if kind == "queued":
            self._bar.update(self._task, total=(self._bar.tasks[0].total or 0) + 1)
        elif kind == "deleted":
            self._bar.console.print(f"[yellow]deleted before it was recorded: {data}")

    def finished(self, job: Any) -> None:
        if job.status in ("done", "failed"):
            self._bar.advance(self._task)
        if job.status != "done":
            self._bar.console.print(f"[red]step {job.step}: {job.status}: {job.error}")
