"""Helpers for tests that need a real server process (predwatch's own and users' CI).

```python
from predwatch.testing import start_server
with start_server("sqlite:////tmp/x.db") as server:
    httpx.get(server.url + "/api/health")
```
The server is ``predwatch serve`` in a subprocess on a free port; its output goes to a log file
(``handle.log_path``) so a chatty server can never block on a full pipe.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from typing_extensions import Self

CLI = "from predwatch.cli import main; main(prog_name='predwatch')"


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def predwatch_command(*args: str) -> list[str]:
    """The argv that runs ``predwatch ARGS...`` with this interpreter."""
    return [sys.executable, "-c", CLI, *args]


@dataclass
class ServerHandle:
    """A running ``predwatch serve`` process."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int
    _stopped: bool = field(default=False, repr=False)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 10.0, *, keep_log: bool = False) -> None:
        """Terminate (SIGTERM, then SIGKILL after ``timeout``), wait, and remove the log file
        (``keep_log=True`` keeps it for a post-mortem)."""
        if not self._stopped and self.process.poll() is None:
            self._stopped = True
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._stopped = True
        if not keep_log:
            self.log_path.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL at once (a crash, for fault injection)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self._stopped = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(
    db_url: str,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    *,
    args: Sequence[str] = (),
    host: str = "127.0.0.1",
    ready_timeout: float = 60.0,
) -> ServerHandle:
    """Start ``predwatch serve --db DB_URL`` on ``port`` (default: a free one) and wait until
    ``/api/health`` answers. ``env`` adds environment variables; ``args`` adds CLI options
    (e.g. ``["--workers", "2"]``). Raises ``RuntimeError`` with the server's log if it exits or
    does not become ready in time."""
    port = port or free_port()
    fd, name = tempfile.mkstemp(prefix="predwatch-server-", suffix=".log")
    log_path = Path(name)
    child_env = {**os.environ, **(env or {})}
    with os.fdopen(fd, "wb") as log_file:
        process = subprocess.Popen(
            predwatch_command("serve", "--db", db_url, "--host", host, "--port", str(port),
                              *args),
            stdout=log_file, stderr=subprocess.STDOUT, env=child_env,
        )
    handle = ServerHandle(url=f"http://{host}:{port}", process=process, log_path=log_path,
                          port=port)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"predwatch serve exited with {process.returncode}:\n{handle.log()}")
        try:
            if httpx.get(handle.url + "/api/health", timeout=1.0).status_code == 200:
                return handle
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    handle.stop()
    raise RuntimeError(f"predwatch serve did not become ready in {ready_timeout}s:\n{handle.log()}")


def create_postgres_database(admin_url: str, name: str) -> str:
    """Create an empty PostgreSQL database ``name`` next to ``admin_url``; returns its URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    admin = make_url(admin_url)
    with psycopg.connect(host=admin.host, port=admin.port or 5432, user=admin.username,
                         dbname=admin.database, password=admin.password,
                         autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin.set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(admin_url: str, name: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    admin = make_url(admin_url)
    with psycopg.connect(host=admin.host, port=admin.port or 5432, user=admin.username,
                         dbname=admin.database, password=admin.password,
                         autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
