"""``HttpSink``: deliver evaluation points to a predwatch server's ingest API, never losing one.

Spool first: ``submit`` writes the batch to the on-disk spool (fsync'ed) before it returns, so a
``kill -9`` at any moment leaves every submitted row on disk; the file is removed only after the
server confirmed the batch. The writer thread posts each batch (in chunks of ``max_rows``; a 413
halves the chunk), retrying connection errors, timeouts, 408, 429 and 5xx with jittered
exponential backoff that honours ``Retry-After``, within ``total_timeout`` per batch. Other 4xx
answers are not retried: the batch stays in the spool and the reason is logged once. Spooled
batches go out at the next successful round, at close (bounded wait, then a loud count of what
is still pending) and with ``predwatch replay``. The server skips rows it already has, so a batch
sent twice is stored once.
"""

from __future__ import annotations

import email.utils
import gzip
import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from typing import Any

import httpx
from pydantic_core import to_json

from predwatch.delivery.sinks import BackgroundSink, Batch
from predwatch.errors import DeliveryError
from predwatch.records import EvalPoint, Prediction, Run

log = logging.getLogger(__name__)

INGEST_PATH = "/api/training/local/predictions"
GZIP_ABOVE = 64 * 1024  # bytes; smaller bodies are not worth compressing
OPEN_TIMEOUT_S = 30.0  # bound on open_run/finish_run retries (the training loop waits for them)


class ServerUnavailable(DeliveryError):
    """The server could not be reached (or kept failing) until the deadline."""


class BatchRejected(DeliveryError):
    """The server refused a request with a 4xx that retrying cannot fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}", detail={"status": status})
        self.status = status


class HttpSink(BackgroundSink):
    """Sends a recorder's rows to ``server_url`` with a durable spool.

    Args:
        server_url: the predwatch server, e.g. ``http://predwatch.internal:8000``.
        token: the run's write token; without one, ``open_run`` creates a run through the API
            (an open loopback server, or ``api_key``) and keeps the token it is given.
        spool_dir: where undelivered batches wait.
        total_timeout: seconds one batch may spend retrying before it is left in the spool.
        api_key: a read API key, used only to create a run (default ``PREDWATCH_API_KEY``).
        request_timeout: seconds one HTTP request may take.
        backoff_base, backoff_max: first and longest wait between retries (seconds).
        max_rows: rows per request.
    """

    def __init__(
        self,
        server_url: str,
        *,
        token: str | None = None,
        spool_dir: str | os.PathLike[str] = ".predwatch/spool",
        total_timeout: float = 60.0,
        api_key: str | None = None,
        request_timeout: float = 30.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        max_rows: int = 1000,
    ) -> None:
        super().__init__(spool_dir)
        self.server_url = server_url.rstrip("/")
        self.target = self.server_url
        self.token = token
        if api_key is None:
            from predwatch.config import Settings

            api_key = Settings.from_env(only=("api_key",)).api_key
        self.api_key = api_key
        self.total_timeout = total_timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_rows = max(1, max_rows)
        self.run_id: str | None = None  # the token's run, once known
        self.request_timeout = request_timeout
        self._client = httpx.Client(base_url=self.server_url, timeout=request_timeout)
        self._stop = threading.Event()  # set by close(): retries end, batches stay spooled
        self._provisional: Run | None = None  # the run recorded into while the server was down

    # -- Sink ----------------------------------------------------------------------------------
    def open_run(self, run: Run) -> Run:
        """The run rows go to: the token's run, or a new run created through the API.

        When the server cannot be reached, recording is not held up: ``run`` (the recorder's
        own id) is used provisionally, batches are spooled under it, and the first delivery
        that reaches the server asks it again and sends them to the token's run (or creates
        the run with this id). A server that answers and refuses still raises.
        """
        try:
            return self._open(run)
        except ServerUnavailable as exc:
            log.warning(
                "predwatch: %s cannot be reached (%s); recording goes on into the spool as run "
                "%s, delivered to the server's run once it answers", self.server_url, exc, run.id)
            self._provisional = run
            return run

    def _open(self, run: Run) -> Run:
        deadline = time.monotonic() + min(self.total_timeout, OPEN_TIMEOUT_S)
        if self.token is None:
            body = {k: v for k, v in run.model_dump(mode="json").items()
                    if k in ("id", "name", "model_name", "base_model", "config")}
            try:
                created = self._call("POST", "/api/runs", deadline, json=body, key=True).json()
                self.token = created["token"]
            except BatchRejected as exc:
                if exc.status != 409:
                    raise
                # The run exists (a resumed job): get a new write token for it.
                path = f"/api/runs/{run.id}/tokens"
                self.token = self._call("POST", path, deadline, key=True).json()["token"]
        who = self._call("GET", "/api/whoami", deadline).json()
        if not who.get("run"):
            raise DeliveryError(f"{self.server_url} did not accept the token as a run write token")
        stored = Run.model_validate({k: who["run"][k] for k in Run.model_fields if k in who["run"]})
        self.run_id = stored.id
        self._known_mine.clear()  # which spooled batches are this run's is known only now
        return stored

    def issue_token(self, run_id: str) -> str:
        """A new write token for ``run_id``, issued with the API key (``predwatch replay`` uses
        it for spooled batches of runs whose token it was not given); becomes this sink's."""
        deadline = time.monotonic() + min(self.total_timeout, OPEN_TIMEOUT_S)
        self.token = self._call("POST", f"/api/runs/{run_id}/tokens", deadline, key=True
                                ).json()["token"]
        return self.token

    def disconnect(self) -> None:
        """Close the HTTP connections without flushing (``close`` does both)."""
        self._client.close()

    def finish_run(self, run_id: str, status: str) -> None:
        if self._provisional is not None and run_id == self._provisional.id:
            run_id = self._confirm()
        deadline = time.monotonic() + min(self.total_timeout, OPEN_TIMEOUT_S)
        self._call("POST", f"/api/runs/{run_id}/finish", deadline, json={"status": status})

    def close(self, timeout: float | None = None) -> int:
        """Deliver what it can within ``timeout`` (default ``total_timeout``), stop, and say
        loudly what is still pending."""
        try:
            return super().close(self.total_timeout if timeout is None else timeout)
        finally:
            self.disconnect()

    def _stopping(self) -> None:
        self._stop.set()  # retries end; their batches stay in the spool

    def _replay_hint(self) -> str:
        return f"{super()._replay_hint()} --server {self.server_url}"

    def _is_permanent(self, exc: Exception) -> bool:
        return isinstance(exc, BatchRejected)

    # -- delivery ------------------------------------------------------------------------------
    def deliver(self, batch: Batch) -> int:
        """Post one batch (retrying within ``total_timeout``); returns rows newly stored."""
        if batch.provisional:
            batch = self._adopt(batch, self._confirm(batch.run_id))
        deadline = time.monotonic() + self.total_timeout
        rows = batch.predictions
        chunks = [rows[i:i + self.max_rows] for i in range(0, len(rows), self.max_rows)] or [[]]
        return sum(self._post(batch, chunk, deadline) for chunk in chunks)

    def _confirm(self, run_id: str | None = None) -> str:
        """The id of the run this sink writes to, asking the server if it is not known yet
        (after a provisional start, or in ``predwatch replay``); raises while it is down."""
        if self.run_id is None:
            self._open(self._provisional or Run(id=run_id or ""))
        assert self.run_id is not None
        return self.run_id

    @staticmethod
    def _adopt(batch: Batch, run_id: str) -> Batch:
        """A provisional batch as rows of ``run_id`` (the token's run)."""
        if batch.run_id == run_id:
            return batch
        change = {"run_id": run_id}
        return Batch(run_id=run_id, point=batch.point.model_copy(update=change),
                     predictions=[p.model_copy(update=change) for p in batch.predictions],
                     batch_id=batch.batch_id, target=batch.target)

    def _post(self, batch: Batch, rows: list[Prediction], deadline: float) -> int:
        body = to_json({"job_id": batch.run_id, "eval_point": batch.point, "predictions": rows},
                       inf_nan_mode="null")
        headers = {"Content-Type": "application/json"}
        if len(body) > GZIP_ABOVE:
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        try:
            answer = self._call("POST", INGEST_PATH, deadline, content=body, headers=headers)
        except BatchRejected as exc:
            if exc.status != 413 or len(rows) < 2:
                raise
            half = len(rows) // 2  # too large for the server's limits: send it in halves
            first = self._post(batch, rows[:half], deadline)
            return first + self._post(batch, rows[half:], deadline)
        return int(answer.json().get("inserted", 0))

    def _call(self, method: str, path: str, deadline: float, *, key: bool = False,
              headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        """One request, retried on connection errors, timeouts, 408, 429 and 5xx."""
        headers = dict(headers or {})
        secret = self.api_key if key else self.token
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
        attempt = 0
        while True:
            if self._stop.is_set():
                raise ServerUnavailable("the sink is closing; the batch stays in the spool")
            end = min(deadline, self._cap) if self._cap is not None else deadline
            # No request may outlive the deadline (a stalled server must not stall a close).
            timeout = max(0.1, min(self.request_timeout, end - time.monotonic()))
            try:
                response = self._client.request(method, path, headers=headers, timeout=timeout,
                                                **kwargs)
            except httpx.TransportError as exc:
                problem, wait = f"{type(exc).__name__}: {exc}", self._backoff(attempt)
            else:
                status = response.status_code
                if status < 300:
                    return response
                if status < 400:  # not followed: a redirect means server_url is not the API's
                    where = response.headers.get("location", "?")
                    raise BatchRejected(status, f"redirected to {where}; set the server URL "
                                                "to where the predwatch API answers")
                if status not in (408, 429) and status < 500:
                    raise BatchRejected(status, _message(response))
                problem = f"HTTP {status}: {_message(response)}"
                asked = retry_after(response)
                wait = self._backoff(attempt) if asked is None else asked
            attempt += 1
            if time.monotonic() + wait > end:
                raise ServerUnavailable(f"{problem} (gave up after {attempt} attempt(s))")
            log.debug("predwatch: %s %s: %s; retrying in %.2fs", method, path, problem, wait)
            if self._stop.wait(wait):
                raise ServerUnavailable("the sink is closing; the batch stays in the spool")

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: half fixed, half random, so retries spread out."""
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** attempt))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    # -- the spool ---------------------------------------------------------------------------
    def _batch(self, point: EvalPoint, predictions: Sequence[Prediction]) -> Batch:
        batch = super()._batch(point, predictions)
        batch.provisional = (self._provisional is not None
                             and batch.run_id == self._provisional.id)
        return batch

    def _mine(self, batch: Batch) -> bool:
        """Spooled batches this sink sends: same server, same run (another job's batches in a
        shared spool directory need that job's token)."""
        if batch.target not in (None, self.target):
            return False
        if self._provisional is not None and batch.provisional:
            return batch.run_id == self._provisional.id
        return self.run_id is None or batch.run_id == self.run_id


def retry_after(response: httpx.Response) -> float | None:
    """The wait a ``Retry-After`` header asks for (seconds or an HTTP date), if any."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    return str(body.get("message") or body) if isinstance(body, dict) else str(body)[:200]
