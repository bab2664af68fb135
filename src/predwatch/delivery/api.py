"""The API destination: rows go to a predwatch server's ingest API, through ``predwatch.client``.

``open_run`` (on the delivery thread) learns which run the write token writes to, or creates the
run through the API (an open loopback server, or an API key) and keeps the token it is given.
Each batch is posted in chunks of ``max_rows`` (a 413 halves the chunk); the client retries
connection errors, timeouts, 408, 429 and 5xx within the deadline the worker gives. Other 4xx
answers are permanent: the batch stays in the spool with its reason. The server skips rows it
already has, so a batch sent twice is stored once.
"""

from __future__ import annotations

import gzip
import time

from predwatch.client import ApiClient, status_of
from predwatch.delivery.spool import Batch, Owner, wire_body
from predwatch.errors import Conflict, DeliveryError, PayloadTooLarge, PredwatchError
from predwatch.records import Prediction, Run

INGEST_PATH = "/api/training/local/predictions"
GZIP_ABOVE = 64 * 1024  # bytes; smaller bodies are not worth compressing
_RUN_FIELDS = ("id", "name", "model_name", "base_model", "config")


class ApiDestination:
    """Delivers batches to the server at ``client.url``.

    Args:
        client: the API client (its ``token`` is the run's write token; without one,
            ``open_run`` creates the run, with its ``api_key`` when the server wants one).
        max_rows: rows per request.
    """

    def __init__(self, client: ApiClient, *, max_rows: int = 1000) -> None:
        self.client = client
        self.target = client.url
        self.max_rows = max(1, max_rows)
        self.run_id: str | None = None  # the token's run, once the server said

    @property
    def token(self) -> str | None:
        return self.client.token

    def open_run(self, run: Run) -> Run:
        """The run rows go to: the token's run, or ``run`` created through the API."""
        deadline = time.monotonic() + self.client.total_timeout
        if self.client.token is None:
            body = {k: v for k, v in run.model_dump(mode="json").items() if k in _RUN_FIELDS}
            try:
                created = self.client.call("POST", "/api/runs", auth="key", json=body,
                                           deadline=deadline)
                self.client.token = str(created["token"])
            except Conflict:
                # The run exists (a resumed job, or an earlier open whose answer was lost).
                self.issue_token(run.id, deadline)
        who = self.client.call("GET", "/api/whoami", auth="token", deadline=deadline)
        found = who.get("run") if isinstance(who, dict) else None
        if not found:
            raise DeliveryError(f"{self.target} did not accept the token as a run write token")
        stored = Run.model_validate({k: found[k] for k in Run.model_fields if k in found})
        self.run_id = stored.id
        return stored

    def issue_token(self, run_id: str, deadline: float | None = None) -> str:
        """A new write token for ``run_id``, issued with the API key; becomes this client's."""
        answer = self.client.call("POST", f"/api/runs/{run_id}/tokens", auth="key",
                                  deadline=deadline)
        self.client.token = str(answer["token"])
        self.run_id = None
        return self.client.token

    def deliver(self, batch: Batch, deadline: float) -> int:
        """Post one batch (in chunks); returns rows newly stored."""
        rows = batch.predictions
        chunks = [rows[i:i + self.max_rows] for i in range(0, len(rows), self.max_rows)] or [[]]
        return sum(self._post(batch, chunk, deadline) for chunk in chunks)

    def _post(self, batch: Batch, rows: list[Prediction], deadline: float) -> int:
        body = wire_body(batch.run_id, batch.point, rows)
        headers = {"Content-Type": "application/json"}
        if len(body) > GZIP_ABOVE:
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        try:
            answer = self.client.call("POST", INGEST_PATH, auth="token", content=body,
                                      headers=headers, deadline=deadline)
        except PayloadTooLarge:
            if len(rows) < 2:
                raise
            half = len(rows) // 2  # too large for the server's limits: send it in halves
            return self._post(batch, rows[:half], deadline) + self._post(batch, rows[half:],
                                                                        deadline)
        return int(answer.get("inserted", 0)) if isinstance(answer, dict) else 0

    def finish_run(self, run_id: str, status: str, deadline: float) -> None:
        self.client.call("POST", f"/api/runs/{run_id}/finish", auth="token",
                         json={"status": status}, deadline=deadline)

    def is_permanent(self, exc: Exception) -> bool:
        """A refusal (4xx, a redirect) fails the same way every time; being unreachable not."""
        return isinstance(exc, PredwatchError) and (
            status_of(exc) is not None or not isinstance(exc, DeliveryError))

    def owns(self, owner: Owner, runs: set[str]) -> bool:
        """Same server and one of this job's runs: another job's batches in a shared spool
        directory need that job's token (and a provisional one, that job's run)."""
        if owner.target not in (None, self.target):
            return False
        return owner.run_id in runs if runs else not owner.provisional

    def cancel(self) -> None:
        self.client.cancel()

    def close(self) -> None:
        self.client.close()

    def replay_hint(self) -> str:
        return f" --server {self.target}"
