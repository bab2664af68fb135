"""``predwatch replay``: deliver the batches a sink left in its spool.

Each batch goes to the explicit destination (``--db`` or ``--server``) or, without one, to where
it was headed when it was spooled (a server URL, or a SQLite URL; a PostgreSQL URL is stored
without its password, so it needs ``--db``). A delivered batch's file is removed; a batch that
fails stays, and the report says why.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from predwatch.delivery.http import BatchRejected
from predwatch.delivery.sinks import Batch, Spool
from predwatch.errors import ConfigError, PredwatchError
from predwatch.records import Run


@dataclass
class ReplayResult:
    batches: int = 0  # batches delivered (files removed)
    rows: int = 0  # rows in delivered batches
    inserted: int = 0  # rows newly stored (the others were already there)
    pending: int = 0  # batches left in the spool
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"replayed {self.batches} batch(es): {self.rows} rows, {self.inserted} newly "
                f"stored, {self.rows - self.inserted} already present; {self.pending} batch(es) "
                "still in the spool")


class _Destinations:
    """Stores and HTTP sinks, opened once per destination (and per run for HTTP)."""

    def __init__(self, spool_dir: str, token: str | None, api_key: str | None,
                 timeout: float) -> None:
        self.spool_dir = spool_dir
        self.token, self.api_key, self.timeout = token, api_key, timeout
        self._stores: dict[str, Any] = {}
        self._sinks: dict[tuple[str, str], Any] = {}

    def deliver(self, target: str, batch: Batch, *, explicit: bool) -> int:
        if target.startswith(("http://", "https://")):
            sink = self._sink(target, batch.run_id)
            try:
                return int(sink.deliver(batch))
            except BatchRejected as exc:
                # The token given is another run's: get this run's own with the API key.
                if exc.status not in (401, 403, 404) or not self.api_key or batch.provisional:
                    raise
                sink.issue_token(batch.run_id)
                return int(sink.deliver(batch))
        if "***" in target:
            raise ConfigError(f"batch is for {target}, whose password is not kept in the "
                              "spool; pass --db URL")
        if target not in self._stores:
            from predwatch.storage import open_store

            if not explicit:
                _check_exists(target)
            self._stores[target] = open_store(target)
        return int(self._stores[target].write_eval_point(batch.point, batch.predictions))

    def _sink(self, server: str, run_id: str) -> Any:
        from predwatch.delivery.http import HttpSink

        key = (server, run_id)
        if key not in self._sinks:
            sink = HttpSink(server, token=self.token, api_key=self.api_key,
                            spool_dir=self.spool_dir, total_timeout=self.timeout)
            if sink.token is None:
                # A token for the run, or the run itself if the job never reached the server.
                sink._open(Run(id=run_id))
            self._sinks[key] = sink
        return self._sinks[key]

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
        for sink in self._sinks.values():
            sink.disconnect()


def _check_exists(url: str) -> None:
    """A spooled SQLite target must still exist: replaying into a new empty file (e.g. a
    relative path resolved from another directory) would hide the rows."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return
    if database.startswith("file:"):
        return
    if not os.path.exists(os.path.expanduser(database)):
        raise ConfigError(f"the batch's database {database} does not exist; run replay where "
                          "training ran, or pass --db URL")


def replay_spool(spool_dir: str | os.PathLike[str], *, db_url: str | None = None,
                 server_url: str | None = None, token: str | None = None,
                 api_key: str | None = None, timeout: float = 60.0) -> ReplayResult:
    """Deliver every batch in ``spool_dir``, oldest first; see the module docstring."""
    if db_url and server_url:
        raise ConfigError("give --db or --server, not both")
    spool = Spool(spool_dir)
    result = ReplayResult()
    where = _Destinations(str(spool_dir), token, api_key, timeout)
    try:
        for path, batch in spool.items():
            target = server_url or db_url or batch.target
            if not target:
                result.problems.append(f"{path.name}: no destination recorded; pass --db or "
                                       "--server")
                continue
            try:
                inserted = where.deliver(target, batch, explicit=target != batch.target)
            except PredwatchError as exc:
                result.problems.append(f"{path.name}: {exc.message}")
                continue
            except Exception as exc:  # noqa: BLE001 - a dead database...: report, keep the file
                result.problems.append(f"{path.name}: {type(exc).__name__}: {exc}")
                continue
            spool.remove(path)
            result.batches += 1
            result.rows += len(batch.predictions)
            result.inserted += inserted
    finally:
        where.close()
    result.pending = len(spool)
    return result
