"""``Watcher``: turn the checkpoints a training job saves into recorded evaluation points.

Each scan lists the checkpoints of an output directory (``checkpoints.find_checkpoints``). One
whose files are complete and unchanged for ``settle_s`` seconds is queued once as a job at its
step; steps the run already has an evaluation point for (recorded earlier, by a previous watcher
or by the callback) are not queued again, so a restarted watcher goes on where it stopped. With
``work=True`` (the default) the watcher's own ``Worker`` records the queued jobs in-process;
otherwise ``predwatch worker`` processes elsewhere do.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from predwatch.config import PredictionsConfig
from predwatch.recording.checkpoints import (
    TRAINER_STATE,
    Checkpoint,
    find_checkpoints,
    snapshot,
    step_of,
)
from predwatch.recording.worker import Worker, job_payload
from predwatch.records import Run, Sample
from predwatch.storage.base import Store

log = logging.getLogger(__name__)


def watch_run_id(output_dir: str | Path) -> str:
    """The run id a watcher uses by default: stable per output directory (restarts continue)."""
    resolved = str(Path(output_dir).resolve())
    return hashlib.sha256(f"predwatch-watch:{resolved}".encode()).hexdigest()[:32]


@dataclass
class ScanReport:
    """What one scan found."""

    queued: list[int] = field(default_factory=list)  # steps queued now
    waiting: dict[str, str] = field(default_factory=dict)  # folder -> why not yet
    deleted: list[str] = field(default_factory=list)  # folders gone before they were recorded
    active: list[str] = field(default_factory=list)  # waiting folders that changed just now


class Watcher:
    """Watches ``output_dir`` for checkpoints of ``run`` and queues (and records) each once."""

    def __init__(
        self,
        store: Store,
        output_dir: str | Path,
        run: Run,
        config: PredictionsConfig,
        *,
        samples: Sequence[Sample] | None = None,
        base_model: str | None = None,
        tokenizer: str | None = None,
        worker: Worker | None = None,
        settle_s: float = 2.0,
        final_step: int | None = None,
        on_event: Callable[[str, Any], None] | None = None,
    ) -> None:
        self.store = store
        self.output_dir = Path(output_dir)
        self.run = run
        self.config = config
        self.samples = list(samples) if samples else None
        self.base_model = base_model
        self.tokenizer = tokenizer
        self.worker = worker
        self.settle_s = settle_s
        self.final_step = final_step
        self.on_event = on_event or (lambda kind, data: None)
        self._seen: dict[Path, tuple[Any, float]] = {}  # folder -> (snapshot, since when)
        self._queued: set[int] = set()
        self._reported: set[Path] = set()

    def start(self) -> None:
        """Check the config's prompts (a bad source fails here, before any job) and create
        the run when new."""
        from predwatch.recording.sources import load_samples
        from predwatch.scoring.metrics import resolve_scorers
        from predwatch.scoring.validators import build_validators

        resolve_scorers(self.config.metrics)
        build_validators(self.config.validators.specs())
        load_samples(self.config, self.samples)
        self.run = self.store.ensure_run(self.run)

    def scan(self) -> ScanReport:
        """Queue every settled, complete, not yet recorded checkpoint; report the others."""
        report = ScanReport()
        recorded = {p.step for p in self.store.eval_points(self.run.id)}
        present = find_checkpoints(self.output_dir)
        paths = {c.path for c in present}
        for gone in [p for p in self._seen if p not in paths]:
            del self._seen[gone]
            if step_of(gone) not in self._queued | recorded:
                report.deleted.append(str(gone))
                log.warning("predwatch: %s was deleted before it was recorded "
                            "(save_total_limit?); its step has no answers", gone)
                self.on_event("deleted", str(gone))
        for ckpt in present:
            step = ckpt.step if ckpt.step is not None else self.final_step
            if step is None:
                self._report_once(ckpt, report, f"a final save without {TRAINER_STATE}: its "
                                  "step is unknown (pass --final-step to record it)")
                continue
            if step in self._queued or step in recorded:
                continue
            settled = self._settled(ckpt)
            if not ckpt.complete or not settled:
                report.waiting[str(ckpt.path)] = ckpt.problem or (
                    f"settling ({self.settle_s:g}s unchanged)")
                if not settled:
                    report.active.append(str(ckpt.path))
                continue
            self._enqueue(ckpt, step)
            report.queued.append(step)
        return report

    def run_once(self, *, timeout: float | None = None) -> ScanReport:
        """Queue (and, with a worker, record) what is complete now; checkpoints still being
        written or settling are waited for, up to ``timeout`` seconds (default 300). One that
        stays incomplete without changing (a crashed save) is reported in ``waiting``."""
        deadline = time.monotonic() + (timeout if timeout is not None else 300.0)
        total = ScanReport()
        while True:
            report = self.scan()
            total.queued += report.queued
            total.deleted += report.deleted
            total.waiting = report.waiting
            self._work()
            if not report.active or time.monotonic() > deadline:
                return total
            time.sleep(min(self.settle_s, 0.5))

    def follow(self, *, poll_s: float = 5.0, stop: Callable[[], bool] = lambda: False) -> None:
        """Scan and record until ``stop()`` says so (``watch`` without ``--once``)."""
        while not stop():
            self.scan()
            self._work()
            time.sleep(poll_s)

    # --- internals ----------------------------------------------------------------------------
    def _settled(self, ckpt: Checkpoint) -> bool:
        """Unchanged for ``settle_s`` seconds (first seen now counts as a change)."""
        now = time.monotonic()
        current = snapshot(ckpt.path)
        previous = self._seen.get(ckpt.path)
        if previous is None or previous[0] != current:
            self._seen[ckpt.path] = (current, now)
            return self.settle_s <= 0
        return now - previous[1] >= self.settle_s

    def _enqueue(self, ckpt: Checkpoint, step: int) -> None:
        payload = job_payload(
            self.config, samples=self.samples, base_model=self.base_model,
            tokenizer=self.tokenizer, facts=ckpt.facts, run=self.run,
        )
        job, new = self.store.enqueue_job(self.run.id, step, str(ckpt.path), epoch=ckpt.epoch,
                                          payload=payload)
        self._queued.add(step)
        if new:
            log.info("predwatch: queued %s at step %s", ckpt.path, step)
            self.on_event("queued", job)

    def _work(self) -> None:
        if self.worker is not None:
            self.worker.drain(run_id=self.run.id)

    def _report_once(self, ckpt: Checkpoint, report: ScanReport, problem: str) -> None:
        report.waiting[str(ckpt.path)] = problem
        if ckpt.path not in self._reported:
            self._reported.add(ckpt.path)
            log.warning("predwatch: %s: %s", ckpt.path, problem)
