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

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from typing_extensions import Self

INGEST_PATH = "/api/training/local/predictions"
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


class TcpProxy:
    """A TCP proxy on 127.0.0.1 in front of ``upstream`` (``host:port``) that a test can cut
    and restore: a database or server that goes away and comes back (a restart) without
    touching the real one.

    ``cut()`` stops listening (new connections are refused) and closes every open connection;
    ``restore()`` listens again on the same port. ``stall()`` keeps accepting connections but
    forwards nothing until ``restore()`` (a hung host). ``url_for(url)`` is ``url`` with its
    host and port replaced by the proxy's.
    """

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host or "127.0.0.1", int(port))
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._stalled = threading.Event()
        self._listener: socket.socket | None = None
        self.port = free_port()
        self.restore()

    def url_for(self, url: str) -> str:
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(url)
        auth = parts.netloc.rpartition("@")[0]
        netloc = f"{auth + '@' if auth else ''}127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def restore(self) -> None:
        """Listen (again) and forward."""
        self._stalled.clear()
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(64)
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stall(self) -> None:
        """Accept connections but forward nothing (until ``restore``)."""
        self._stalled.set()

    def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if listener is not None:
            _close(listener)
        for conn in conns:
            _close(conn)

    def close(self) -> None:
        self.cut()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    _close(client)
                    _close(upstream)
                    return
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                while self._stalled.is_set() and dst.fileno() != -1:
                    time.sleep(0.05)  # a hung host: hold the bytes until restore() or cut()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _close(src)
            _close(dst)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class FaultProxy:
    """An HTTP/1.1 proxy (asyncio, in a thread) in front of a predwatch server that injects
    scripted faults on ingest requests (``INGEST_PATH``).

    ``faults`` is consumed one per ingest request: ``drop``, ``500``, ``302``, ``429:SECONDS``,
    ``stall:SECONDS``, ``forward-then-drop`` (the server stored it, the answer is lost),
    ``pass``; when empty, ``mode`` applies. ``down = True`` drops every request on every route
    (unreachable); ``stalled = True`` holds every request until it is set back to False.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.faults: deque[str] = deque()
        self.mode = "pass"
        self.ingest_times: list[float] = []
        self.down = False
        self.stalled = False
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = self._run(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        self.client: httpx.AsyncClient = self._run(self._make_client())

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _make_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.upstream, timeout=30)

    def close(self) -> None:
        self._run(self._shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    async def _shutdown(self) -> None:
        """Stop listening, end stalled handlers and the upstream client before the loop stops
        (all in the loop's own thread: asyncio servers are not thread-safe)."""
        self.server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.client.aclose()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                method, path, _ = head[0].split(" ", 2)
                headers = [tuple(x.strip() for x in line.split(":", 1))
                           for line in head[1:] if line]
                length = int(next((v for k, v in headers if k.lower() == "content-length"), 0))
                body = await reader.readexactly(length)
                fault = "pass"
                while self.stalled:
                    await asyncio.sleep(0.05)
                if self.down:  # the whole server is unreachable, every route
                    return
                if method == "POST" and path == INGEST_PATH:
                    self.ingest_times.append(time.monotonic())
                    fault = self.faults.popleft() if self.faults else self.mode
                if fault == "drop":
                    return
                if fault.startswith("stall:"):
                    await asyncio.sleep(float(fault.split(":")[1]))
                    return
                if fault == "500":
                    await self._send(writer, 500, b'{"error":"x","message":"injected"}', {})
                    continue
                if fault == "302":
                    await self._send(writer, 302, b"", {"Location": "https://elsewhere/login"})
                    continue
                if fault.startswith("429:"):
                    await self._send(writer, 429, b'{"error":"x","message":"slow down"}',
                                     {"Retry-After": fault.split(":")[1]})
                    continue
                skip = {"host", "content-length", "connection"}
                answer = await self.client.request(
                    method, path, content=body,
                    headers=[(k, v) for k, v in headers if k.lower() not in skip])
                if fault == "forward-then-drop":
                    return
                await self._send(writer, answer.status_code, answer.content,
                                 {"Content-Type": answer.headers.get("content-type", "text/plain")})
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, status: int, body: bytes,
                    headers: dict[str, str]) -> None:
        lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}",
                 *(f"{k}: {v}" for k, v in headers.items())]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()
