"""WAL checkpoints of a SQLite file, on a thread of their own instead of inside a write.

In WAL mode a commit appends pages to ``<db>-wal``; a *checkpoint* copies them back into the
database file and syncs it. By default SQLite runs one inside whichever commit takes the WAL past
1,000 pages, so one write in eight of a 1,000-row ingest paid for everyone's: measured on this
project's ingest bench, a commit took 10 ms at the median and 50-65 ms when it checkpointed,
about 40% of all the time spent writing.

``WalCheckpointer`` moves that work off the write path. A write calls ``wrote()`` after it
commits (a flag set, no I/O); a daemon thread then runs ``PRAGMA wal_checkpoint(PASSIVE)`` on its
own connection, at most every ``interval`` seconds. A passive checkpoint takes no lock that
writers or readers wait for: it copies what no reader still needs and leaves the rest for the
next round. SQLite releases the GIL while it copies and syncs, so the writer keeps running.

The write connections keep SQLite's automatic checkpoint, raised to ``FALLBACK_PAGES``: if this
thread falls behind (or a process has none), the WAL stays bounded as before, only larger. The
thread ends after ``idle_exit`` seconds without writes (a store that is never closed leaves
nothing running) and starts again on the next write. It never raises: a failed checkpoint is
logged once and retried on the next round; SQLite's fallback covers it meanwhile.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

# The write connections' wal_autocheckpoint (pages; 16 KiB each): the bound on the WAL when
# the checkpoint thread lags, 4x SQLite's default of 1,000.
FALLBACK_PAGES = 4000


class WalCheckpointer:
    """Checkpoints the WAL of one SQLite file on a background thread (see the module notes)."""

    def __init__(self, path: Path, *, interval: float = 0.2, idle_exit: float = 30.0) -> None:
        self.path = path
        self.interval = interval
        self.idle_exit = idle_exit
        self.checkpoints = 0  # rounds run (for tests and diagnostics)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._warned = False

    def wrote(self) -> None:
        """A write transaction committed: checkpoint soon. Cheap; never blocks on I/O."""
        self._wake.set()
        thread = self._thread
        # A thread that is just ending (idle) still counts as alive here: then the flag waits
        # for the next write's new thread, and SQLite's fallback bounds the WAL meanwhile.
        if thread is None or not thread.is_alive():
            with self._lock:
                if self._stop.is_set():
                    return
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(
                        target=self._run, name=f"predwatch-wal-checkpoint:{self.path.name}",
                        daemon=True,
                    )
                    self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread (after a round in progress). SQLite checkpoints the WAL itself when
        the file's last connection closes, so nothing is left behind."""
        with self._lock:
            self._stop.set()
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while not self._stop.is_set():
                if not self._wake.wait(self.idle_exit):
                    return  # idle: the next write starts a new thread
                if self._stop.is_set():
                    return
                self._wake.clear()
                if conn is None:
                    conn = self._connect()
                    if conn is None:
                        self._stop.wait(self.interval)
                        continue
                self._checkpoint(conn)
                # Writes in the meantime gather in the WAL: one copy per interval, not per commit.
                self._stop.wait(self.interval)
        finally:
            if conn is not None:
                conn.close()

    def _connect(self) -> sqlite3.Connection | None:
        try:
            # No busy wait: a passive checkpoint never waits for a lock anyway.
            return sqlite3.connect(self.path, isolation_level=None, timeout=0)
        except sqlite3.Error as exc:
            self._warn(exc)
            return None

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.checkpoints += 1
        except sqlite3.Error as exc:  # e.g. another process checkpointing this file right now
            self._warn(exc)

    def _warn(self, exc: BaseException) -> None:
        if not self._warned:
            self._warned = True
            logger.warning("WAL checkpoint of %s failed (%s); SQLite's automatic checkpoint "
                           "covers it meanwhile (logged once)", self.path, exc)
