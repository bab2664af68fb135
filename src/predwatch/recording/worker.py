"""Checkpoint jobs: what one carries, and the worker that records them off the training path.

A job (``Store.enqueue_job``) names a run, a step and a checkpoint folder; its payload carries
what the recording needs: the ``PredictionsConfig``, the run's samples when they were chosen in
the training process (else the config's own source is read again, reproducibly), the base model
of an adapter and facts from ``trainer_state.json``. ``Worker`` claims a job, loads the
checkpoint (or points an OpenAI-compatible server at it), records the evaluation point into the
store through the ordinary ``Recorder`` and marks the job done, heartbeating its lease meanwhile.
A failure returns the job to the queue (bounded attempts); a checkpoint deleted before it was
recorded (``save_total_limit``) fails its job at once, with that reason.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from predwatch.config import PredictionsConfig
from predwatch.delivery.base import Sink
from predwatch.errors import ConfigError, DataError, NotFound
from predwatch.recording.checkpoints import weights_hash
from predwatch.recording.recorder import Recorder
from predwatch.records import EvalPoint, Prediction, Run, Sample, Trigger
from predwatch.storage.base import Store

if TYPE_CHECKING:  # the queue's SQL is imported by the store that runs it
    from predwatch.storage.jobs import Job

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backend:
    """How a worker generates: ``hf`` (in-process transformers) or ``openai`` (a server).

    ``model`` is the model name sent to an OpenAI-compatible server, formatted with ``{path}``
    (the checkpoint folder), ``{name}`` (its base name) and ``{step}``: ``transformers serve``
    loads ``{path}``; vLLM serves a LoRA adapter under the name it was loaded with.
    """

    name: str = "hf"
    device: str | None = None
    base_url: str | None = None
    model: str = "{path}"
    api_key: str | None = None
    timeout: float = 120.0


class CheckpointGone(DataError):
    """The checkpoint folder disappeared before it was recorded."""


def job_payload(
    config: PredictionsConfig,
    *,
    samples: Sequence[Sample] | None = None,
    base_model: str | None = None,
    tokenizer: str | None = None,
    facts: Mapping[str, Any] | None = None,
    run: Run | None = None,
) -> dict[str, Any]:
    """The JSON a job carries (see the module docstring)."""
    return {
        "config": config.model_dump(mode="json"),
        "samples": [s.model_dump(mode="json") for s in samples] if samples else None,
        "base_model": base_model,
        "tokenizer": tokenizer,
        "facts": dict(facts or {}),
        "run": run.model_dump(mode="json", include={"name", "model_name", "base_model"})
        if run else {},
    }


class _StoreWriter:
    """A synchronous sink: a job is done only once its rows are stored (the worker is off the
    training path, so there is nothing to hide the write from)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.error: BaseException | None = None
        self._run_id: str | None = None

    @property
    def run_id(self) -> str | None:
        return self._run_id

    def open_run(self, run: Run) -> Run:
        stored = self.store.ensure_run(run)
        self._run_id = stored.id
        return stored

    def submit(self, point: EvalPoint, predictions: Sequence[Prediction]) -> None:
        try:
            self.store.write_eval_point(point, predictions)
        except BaseException as exc:
            self.error = exc
            raise

    def flush(self, timeout: float | None = None, *, retry: bool = False) -> int:
        return 0  # every point was stored before submit returned

    def finish_run(self, run_id: str, status: str) -> None:
        self.store.finish_run(run_id, status=status)

    def close(self, timeout: float | None = None) -> int:
        return 0


class _Described:
    """A generator whose ``describe()`` adds the checkpoint's identity and the backend, and
    which keeps the exception it raised (the recorder logs it; the job records it)."""

    def __init__(self, inner: Any, facts: dict[str, Any]) -> None:
        self.inner = inner
        self.facts = facts
        self.error: BaseException | None = None

    def generate(self, samples: Sequence[Sample], params: Mapping[str, Any]) -> list[Any]:
        try:
            return list(self.inner.generate(samples, params))
        except BaseException as exc:
            self.error = exc
            raise

    def describe(self) -> dict[str, Any]:
        described = dict(self.inner.describe())
        if not described.get("model_revision"):
            described["model_revision"] = self.facts.get("checkpoint_hash")
        return {**described, **self.facts}


def make_generator(backend: Backend, path: Path, payload: Mapping[str, Any], step: int) -> Any:
    """The generator for one checkpoint on ``backend``."""
    if backend.name == "openai":
        from predwatch.generation.openai import OpenAIGenerator

        if not backend.base_url:
            raise DataError("the openai backend needs a server URL (--openai-url)")
        model = backend.model.format(path=str(path), name=path.name, step=step)
        return OpenAIGenerator(backend.base_url, model, api_key=backend.api_key,
                               timeout=backend.timeout)
    if backend.name != "hf":
        raise DataError(f"unknown generation backend {backend.name!r}: use 'hf' or 'openai'")
    from predwatch.generation.hf import HFGenerator
    from predwatch.recording.checkpoints import load_model

    model, tokenizer = load_model(path, base_model=payload.get("base_model"),
                                  tokenizer=payload.get("tokenizer"), device=backend.device)
    return HFGenerator(model, tokenizer)


def record_job(store: Store, job: Job, backend: Backend, *, sink: Sink | None = None) -> None:
    """Record one job's checkpoint into ``store`` (or ``sink``); raises on failure."""
    path = Path(job.path)
    if not path.is_dir():
        raise CheckpointGone(
            f"{path} was deleted before it was recorded (save_total_limit?); step {job.step} "
            "has no answers"
        )
    payload = job.payload
    # When to record was the training side's business (its step_interval may sit below this
    # machine's PREDWATCH_MIN_STEP_INTERVAL): the job's step is given.
    given = {k: v for k, v in (payload.get("config") or {}).items()
             if k not in ("sample_frequency", "step_interval")}
    config = PredictionsConfig.from_dict(given)
    samples = [Sample(**s) for s in payload.get("samples") or []] or None
    writer = sink or _StoreWriter(store)
    run = payload.get("run") or {}
    recorder = Recorder(config, samples=samples, sink=writer, run_id=job.run_id,
                        run_name=run.get("name"), model_name=run.get("model_name"),
                        base_model=run.get("base_model") or payload.get("base_model"))
    recorder.start(block=True)  # (off the training path: waits for a stored set)
    try:
        digest = weights_hash(path)
        inner = make_generator(backend, path, payload, job.step)
    except (FileNotFoundError, DataError) as exc:
        if not path.is_dir():
            raise CheckpointGone(f"{path} was deleted while it was being loaded") from None
        raise DataError(str(exc)) from None
    generator = _Described(inner, {"backend": backend.name, "checkpoint_hash": digest})
    # The recorder's "share of training time" warning is about inline recording: here the
    # answers cost the training job nothing.
    estimate_log = logging.getLogger("predwatch.recording.estimate")
    estimate_log.addFilter(_no_budget_warning)
    try:
        summary = recorder.record(
            generator=generator, step=job.step, epoch=job.epoch, trigger=Trigger.CHECKPOINT,
            checkpoint=str(path),
            extra_card={"trainer_state": payload.get("facts") or {}, "job_id": job.id,
                        "checkpoint_hash": digest, "backend": backend.name},
        )
    finally:
        estimate_log.removeFilter(_no_budget_warning)
    close = getattr(inner, "close", None)
    if close is not None:
        close()
    problem = generator.error or getattr(writer, "error", None)
    if summary is None or problem is not None:
        raise RuntimeError(
            f"{type(problem).__name__}: {problem}" if problem is not None
            else "recording failed (the worker's log has the traceback)"
        )
    if sink is not None and sink.flush(300.0):
        raise RuntimeError("rows are still in the spool (the server did not take them)")


def _no_budget_warning(record: logging.LogRecord) -> bool:
    return "of the training time" not in record.getMessage()


class Worker:
    """Serves the job queue of a store: claim, record, finish; heartbeats in a thread."""

    def __init__(
        self,
        store: Store,
        backend: Backend | None = None,
        *,
        name: str | None = None,
        lease_s: float = 120.0,
        sink: Sink | None = None,
        on_job: Callable[[Any], None] | None = None,
    ) -> None:
        self.store = store
        self.backend = backend or Backend()
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease_s = lease_s
        self.sink = sink
        self.on_job = on_job  # called after each job (progress bars)

    def run_one(self, *, run_id: str | None = None) -> Any:
        """Claim and process one job; returns the finished job, or None when none was ready."""
        job = self.store.claim_job(self.name, lease_s=self.lease_s, run_id=run_id)
        if job is None:
            return None
        log.info("predwatch: worker %s records %s (run %s, step %s, attempt %d/%d)",
                 self.name, job.path, job.run_id, job.step, job.attempts, job.max_attempts)
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job.id, stop), daemon=True,
                                name="predwatch-heartbeat")
        beat.start()
        error, retry = None, True
        try:
            record_job(self.store, job, self.backend, sink=self.sink)
        except CheckpointGone as exc:
            error, retry = str(exc), False
        except ConfigError as exc:  # the same config fails the same way every time
            error, retry = f"ConfigError: {exc}", False
        except Exception as exc:  # the job records why; the worker goes on with the next one
            error = f"{type(exc).__name__}: {exc}"
        finally:
            stop.set()
            beat.join()
        try:
            finished = self.store.finish_job(job.id, self.name, error=error, retry=retry)
        except NotFound:
            # Deleted with its run while it was being recorded (``delete_run``).
            log.warning("predwatch: job %s (run %s, step %s) was deleted while worker %s "
                        "recorded it; nothing to mark", job.id, job.run_id, job.step, self.name)
            return job
        if error is not None:
            log.error("predwatch: job %s (step %s, %s) failed: %s; now %s", job.id, job.step,
                      job.path, error, finished.status)
        if self.on_job is not None:
            self.on_job(finished)
        return finished

    def drain(self, *, run_id: str | None = None) -> int:
        """Process jobs until none is claimable; returns how many were processed."""
        count = 0
        while self.run_one(run_id=run_id) is not None:
            count += 1
        return count

    def serve(self, *, poll_s: float = 2.0, stop: threading.Event | None = None) -> None:
        """Process jobs until ``stop`` is set, polling the queue when it is empty."""
        stop = stop or threading.Event()
        while not stop.is_set():
            if self.run_one() is None:
                stop.wait(poll_s)

    def _heartbeat(self, job_id: str, stop: threading.Event) -> None:
        while not stop.wait(self.lease_s / 3):
            try:
                if not self.store.heartbeat_job(job_id, self.name, lease_s=self.lease_s):
                    log.warning("predwatch: worker %s lost the lease of job %s", self.name,
                                job_id)
                    return
            except Exception as exc:  # a database blip: the next beat may succeed
                log.warning("predwatch: heartbeat of job %s failed: %s", job_id, exc)

