"""``predwatch replay``: deliver the batches a sink left in its spool.

Each batch goes to the explicit destination (``--db`` or ``--server``) or, without one, to where
it was headed when it was spooled (a server URL, or a SQLite URL; a PostgreSQL URL is stored
without its password, so it needs ``--db``). It uses the destinations the live worker uses: a
provisional batch (recorded before the destination confirmed its run) goes to the run the token
writes to, or to a run created with its id. A run's finish (spooled when training ended while
the destination was down) is delivered after the batches and marks the run finished or failed.
A delivered batch's file is removed; a batch that fails stays, and the report says why.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from predwatch.client import ApiClient
from predwatch.delivery.api import ApiDestination
from predwatch.delivery.base import Destination, send
from predwatch.delivery.spool import Entry, Finish, Spool
from predwatch.delivery.store import StoreDestination
from predwatch.errors import AuthError, ConfigError, Forbidden, NotFound, PredwatchError
from predwatch.records import Run


@dataclass
class ReplayResult:
    batches: int = 0  # batches delivered (files removed)
    rows: int = 0  # rows in delivered batches
    inserted: int = 0  # rows newly stored (the others were already there)
    pending: int = 0  # batches left in the spool
    finished: list[str] = field(default_factory=list)  # "run-id status" for each finish sent
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        ended = f"; marked {', '.join(self.finished)}" if self.finished else ""
        return (f"replayed {self.batches} batch(es): {self.rows} rows, {self.inserted} newly "
                f"stored, {self.rows - self.inserted} already present{ended}; {self.pending} "
                "batch(es) still in the spool")


class _Destinations:
    """Destinations opened once each (an API destination once per run: a token is per run)."""

    def __init__(self, token: str | None, api_key: str | None, timeout: float) -> None:
        self.token, self.api_key, self.timeout = token, api_key, timeout
        self._open: dict[tuple[str, str], Destination] = {}
        self._runs: dict[tuple[str, str], str] = {}  # (target, batch run) -> confirmed run

    def deliver(self, target: str, batch: Entry, *, explicit: bool) -> int:
        deadline = time.monotonic() + self.timeout
        if not target.startswith(("http://", "https://")):
            return send(self._store(target, explicit=explicit), batch, deadline)
        key = (target, batch.run_id)
        api = self._api(target, batch.run_id)
        if (api.token is None or batch.provisional) and key not in self._runs:
            # Which run the token writes to (or the run itself, if the job never reached it).
            self._runs[key] = api.open_run(Run(id=batch.run_id)).id
        if batch.provisional:
            return send(api, batch.adopt(self._runs[key]), deadline)
        try:
            return send(api, batch, deadline)
        except (AuthError, Forbidden, NotFound):
            # The token given is another run's: get this run's own with the API key.
            if not self.api_key:
                raise
            api.issue_token(batch.run_id, deadline)
            return send(api, batch, deadline)

    def confirmed(self, target: str, entry: Entry) -> str:
        """The run ``entry`` went to (a provisional one's is the token's run)."""
        return self._runs.get((target, entry.run_id), entry.run_id) if entry.provisional \
            else entry.run_id

    def _store(self, target: str, *, explicit: bool) -> Destination:
        if "***" in target:
            raise ConfigError(f"batch is for {target}, whose password is not kept in the "
                              "spool; pass --db URL")
        key = (target, "")
        if key not in self._open:
            if not explicit:
                _check_exists(target)
            self._open[key] = StoreDestination(target)
        return self._open[key]

    def _api(self, server: str, run_id: str) -> ApiDestination:
        key = (server, run_id)
        if key not in self._open:
            client = ApiClient(server, token=self.token, api_key=self.api_key,
                               total_timeout=self.timeout)
            self._open[key] = ApiDestination(client)
        found = self._open[key]
        assert isinstance(found, ApiDestination)
        return found

    def close(self) -> None:
        for destination in self._open.values():
            destination.close()


def _check_exists(url: str) -> None:
    """A spooled SQLite target's directory must still exist: replaying into a new file
    elsewhere (a moved or deleted project) would hide the rows. The file itself may be missing:
    a job that ended before its delivery thread first opened the database never created it."""
    from predwatch.storage.engine import sqlite_file

    try:
        path = sqlite_file(url)
    except ConfigError:
        return
    if path is not None and not path.parent.is_dir():
        raise ConfigError(f"the batch's database {path} does not exist (nor its directory); "
                          "run replay where training ran, or pass --db URL")


def replay_spool(spool_dir: str | os.PathLike[str], *, db_url: str | None = None,
                 server_url: str | None = None, token: str | None = None,
                 api_key: str | None = None, timeout: float = 60.0) -> ReplayResult:
    """Deliver every batch in ``spool_dir``, oldest first; see the module docstring."""
    if db_url and server_url:
        raise ConfigError("give --db or --server, not both")
    spool = Spool(spool_dir)
    result = ReplayResult()
    where = _Destinations(token, api_key, timeout)
    failed: set[tuple[str, str]] = set()  # (target, run) with a batch left: not finished yet
    try:
        for path, batch in spool.items():  # the finishes come after every batch
            target = server_url or db_url or batch.target
            if not target:
                result.problems.append(f"{path.name}: no destination recorded; pass --db or "
                                       "--server")
                continue
            if isinstance(batch, Finish) and (target, batch.run_id) in failed:
                result.problems.append(f"{path.name}: run {batch.run_id} is not marked "
                                       f"{batch.status} while its batches are in the spool")
                continue
            try:
                inserted = where.deliver(target, batch, explicit=target != batch.target)
            except Exception as exc:  # noqa: BLE001 - a dead database...: report, keep the file
                failed.add((target, batch.run_id))
                message = exc.message if isinstance(exc, PredwatchError) else \
                    f"{type(exc).__name__}: {exc}"
                result.problems.append(f"{path.name}: {message}")
                continue
            spool.remove(path)
            if isinstance(batch, Finish):
                run = where.confirmed(target, batch)
                result.finished.append(f"run {run} {batch.status}")
                continue
            result.batches += 1
            result.rows += len(batch.predictions)
            result.inserted += inserted
    finally:
        where.close()
    result.pending = len(spool)
    return result
