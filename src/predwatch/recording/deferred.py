"""``JobSender``: the training side of ``PredictionsCallback(mode="checkpoint")``.

Nothing is generated in the training process. Each saved checkpoint becomes a job in the
database queue, for ``predwatch worker`` (or ``watch``) to record at its step. Even the set-up
(choosing the prompts, opening the run and the database) and every enqueue happen on one
background thread, so a slow or unreachable database never blocks a training step; failures are
logged once each, with what was not queued, and the run goes on.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Mapping
from typing import Any

from predwatch.recording.recorder import Recorder

log = logging.getLogger(__name__)

_STOP = object()


class JobSender:
    """Queues checkpoint jobs for ``recorder``'s run from a background thread."""

    def __init__(self, recorder: Recorder, *, base_model: str | None = None) -> None:
        self.recorder = recorder
        self.base_model = base_model
        self.queued: list[int] = []  # steps queued (for tests and the end-of-run log)
        self._inbox: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._store: Any = None
        self._failed = False

    def start(self) -> None:
        """Begin set-up on the background thread; returns at once."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="predwatch-jobs", daemon=True)
            self._thread.start()

    def submit(self, step: int, path: str, facts: Mapping[str, Any]) -> None:
        """Queue the checkpoint saved at ``step`` in ``path``; returns at once."""
        self.start()
        self._inbox.put((step, path, dict(facts)))

    def close(self, timeout: float = 60.0) -> None:
        """Send what is waiting (bounded wait), then close the database."""
        if self._thread is None:
            return
        self._inbox.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("predwatch: checkpoint jobs still not queued after %.0fs; giving up on "
                      "them (run `predwatch watch OUTPUT_DIR --once` to record them)", timeout)

    # --- background thread --------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._set_up()
        except Exception:
            self._failed = True
            log.exception("predwatch: could not set up deferred recording; no checkpoint of "
                          "this run will be queued (run `predwatch watch OUTPUT_DIR` instead)")
        while (item := self._inbox.get()) is not _STOP:
            if not self._failed:
                self._send(*item)
        if self._store is not None:
            self._store.close()

    def _set_up(self) -> None:
        from predwatch.storage import open_store

        # Chooses the prompts (waiting for a stored set: this is a thread of its own) and opens
        # the run, as inline recording does.
        self.recorder.start(block=True)
        self._store = open_store(self.recorder.settings.database_url)

    def _send(self, step: int, path: str, facts: dict[str, Any]) -> None:
        from predwatch.recording.worker import job_payload

        run = self.recorder.run
        payload = job_payload(self.recorder.config, samples=self.recorder.samples,
                              base_model=self.base_model or run.base_model, facts=facts, run=run)
        try:
            self._store.enqueue_job(run.id, step, path, epoch=facts.get("epoch"),
                                    payload=payload)
        except Exception:
            log.exception("predwatch: could not queue the checkpoint of step %s (%s); it will "
                          "not be recorded unless `predwatch watch` picks it up", step, path)
            return
        self.queued.append(step)
