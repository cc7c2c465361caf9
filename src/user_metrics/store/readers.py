"""The store's readers: cursors the writer knows of, so that reads never stop writes.

Every reader (HTTP API, gRPC queries, SQL, ``/metrics``, the dashboard) reads through a
``Reader``: a DuckDB cursor of the writer's own database, registered with ``Readers`` while it is
open. All cursors of one database share DuckDB's memory limit, and DuckDB has no limit per
connection, so a few memory-hungry reads could leave the writer without the memory to commit,
or even to roll back. Three mechanisms keep the writer's share:

- **The memory guard.** While readers are open, a thread reads DuckDB's own accounting
  (``duckdb_memory()``) every ``GUARD_INTERVAL_S``. When memory that cannot simply be evicted
  (everything but cached table blocks) passes ``READER_SHARE`` of the limit, it interrupts the
  open readers: their queries fail with ``duckdb.InterruptException``, ``Reader.stopped_for``
  says why, and they are counted (``Stats.readers_stopped``).
- **Exclusive sections.** For what must not fail for lack of memory (a checkpoint, the retry of a
  commit that ran out of memory, a rollback), the writer takes ``exclusive()``: new readers wait,
  open ones get a moment to finish, then are interrupted.
- **Shutdown.** ``close()`` refuses new readers.

Readers of one database also share ``shared``, a dict where the query layer keeps what it
caches about the database (``query/whole_days.py``); it is emptied when the database is reopened.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import duckdb

from user_metrics.errors import Unavailable
from user_metrics.stats import Stats

log = logging.getLogger(__name__)

# Readers may hold this share of DuckDB's memory limit; the rest is the writer's.
READER_SHARE = 0.75
GUARD_INTERVAL_S = 0.05
GUARD_ERROR_LOG_S = 10.0  # at most one warning this often while reading the accounting fails
# How long an exclusive section lets open readers finish before interrupting them, and how long
# it then waits for the interrupted ones to close (a query still being planned ignores interrupts).
EXCLUSIVE_GRACE_S = 1.0
EXCLUSIVE_DRAIN_S = 5.0
# How long a new reader waits for an exclusive section to end before it is refused.
OPEN_WAIT_S = 30.0
# Memory DuckDB can give back at once when the writer needs it: cached blocks of stored tables.
_EVICTABLE_TAGS = ("BASE_TABLE", "EXTERNAL_FILE_CACHE")
_PRESSURE_SQL = (
    f"SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory() WHERE tag NOT IN {_EVICTABLE_TAGS!r}"
)
_UNITS = {"bytes": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "kb": 10**3, "mb": 10**6}
_UNITS |= {"gb": 10**9, "tb": 10**12}


def memory_limit_bytes(con: duckdb.DuckDBPyConnection) -> int:
    """DuckDB's memory limit in bytes, as ``current_setting('memory_limit')`` spells it."""
    # fetchall, not fetchone: a result not read to its end keeps its transaction open, and an
    # open transaction stops every checkpoint.
    ((text,),) = con.execute("SELECT current_setting('memory_limit')").fetchall()
    match = re.fullmatch(r"\s*([\d.]+)\s*([A-Za-z]+)\s*", str(text))
    if match is None or match.group(2).lower() not in _UNITS:
        raise ValueError(f"cannot read DuckDB's memory limit {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


class Reader:
    """A DuckDB cursor lent to one reader; behaves as the cursor (``execute``, ``fetchall``, ...).

    ``close()`` (or leaving a ``with`` block) returns it. ``stopped_for`` names why its query was
    interrupted by the store ("memory" or "writer"), None when it was not.
    """

    def __init__(self, cursor: duckdb.DuckDBPyConnection, readers: Readers) -> None:
        self._cursor = cursor
        self._readers = readers
        self._closed = False
        self.stopped_for: str | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)

    @property
    def shared(self) -> dict[str, Any]:
        """What readers of this database share (see the module's docstring)."""
        return self._readers.shared

    def interrupt(self, reason: str | None = None) -> None:
        """Stop the query running on this cursor, if any (``reason`` for ``stopped_for``)."""
        if reason is not None:
            self.stopped_for = reason
        self._cursor.interrupt()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._cursor.close()
            finally:
                self._readers._returned(self)

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class Readers:
    """Lends reader cursors made from ``root`` and guards the writer's share of memory."""

    def __init__(self, root: duckdb.DuckDBPyConnection, stats: Stats) -> None:
        self._root = root  # a connection the writer thread never uses
        self._stats = stats
        self._limit = memory_limit_bytes(root)
        self._open: set[Reader] = set()
        self._exclusive = 0
        self._closed = False
        self._changed = threading.Condition()
        self._guard: threading.Thread | None = None
        self._guard_cursor = root.cursor()
        self._guard_lock = threading.Lock()  # the guard's cursor is used by the guard and the writer
        self.shared: dict[str, Any] = {}

    @property
    def open_count(self) -> int:
        with self._changed:
            return len(self._open)

    def pressure(self) -> int:
        """Bytes of DuckDB's memory that it cannot evict at once (everything but cached tables)."""
        with self._guard_lock:
            ((used,),) = self._guard_cursor.execute(_PRESSURE_SQL).fetchall()
        return int(used)

    def over_share(self) -> bool:
        """Whether readers are open and DuckDB's memory is past their share (the writer's is taken)."""
        if not self.open_count:
            return False
        try:
            return self.pressure() > self._limit * READER_SHARE
        except duckdb.Error:
            return True  # cannot tell: be safe

    def replace_root(self, root: duckdb.DuckDBPyConnection) -> None:
        """Make new readers from ``root`` (the store reopened the database); the old cursors fail."""
        with self._guard_lock:
            with contextlib.suppress(duckdb.Error):
                self._guard_cursor.close()
            self._guard_cursor = root.cursor()
        with self._changed:
            self._root = root
            self.shared.clear()

    def open(self) -> Reader:
        """A new reader; waits while the writer holds an exclusive section (Unavailable if closed)."""
        with self._changed:
            deadline = time.monotonic() + OPEN_WAIT_S
            while self._exclusive and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Unavailable("the store is busy with a checkpoint; retry")
                self._changed.wait(left)
            if self._closed:
                raise Unavailable("the store is shutting down")
            reader = Reader(self._root.cursor(), self)
            self._open.add(reader)
            if self._guard is None or not self._guard.is_alive():
                self._guard = threading.Thread(target=self._watch, name="reader-memory-guard", daemon=True)
                self._guard.start()
            return reader

    def _returned(self, reader: Reader) -> None:
        with self._changed:
            self._open.discard(reader)
            self._changed.notify_all()

    def interrupt_all(self, reason: str, count: bool = True) -> int:
        """Interrupt every open reader's query; returns how many readers were open."""
        with self._changed:
            readers = list(self._open)
        for reader in readers:
            with contextlib.suppress(duckdb.Error):
                reader.interrupt(reason)
        if readers and count:
            self._stats.stopped_readers(reason, len(readers))
        return len(readers)

    @contextlib.contextmanager
    def exclusive(self, grace: float = EXCLUSIVE_GRACE_S) -> Iterator[None]:
        """Hold new readers back and let open ones finish (interrupted after ``grace`` seconds)."""
        with self._changed:
            self._exclusive += 1
            deadline = time.monotonic() + grace
            while self._open and time.monotonic() < deadline:
                self._changed.wait(deadline - time.monotonic())
            busy = bool(self._open)
        if busy:
            self.interrupt_all("writer")
            deadline = time.monotonic() + EXCLUSIVE_DRAIN_S
            while time.monotonic() < deadline:
                with self._changed:
                    if self._open:
                        self._changed.wait(min(0.1, max(0.0, deadline - time.monotonic())))
                    if not self._open:
                        break
                # DuckDB forgets an interrupt that comes between two statements: again, till closed.
                self.interrupt_all("writer", count=False)
        try:
            yield
        finally:
            with self._changed:
                self._exclusive -= 1
                self._changed.notify_all()

    def close(self) -> None:
        """Refuse new readers; open ones may finish."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        if self._guard is not None:
            self._guard.join()
        self._guard_cursor.close()

    def _watch(self) -> None:
        """Interrupt the readers while what DuckDB cannot evict passes READER_SHARE of its limit."""
        budget = self._limit * READER_SHARE
        logged = 0.0
        while True:
            with self._changed:
                if not self._open or self._closed:
                    self._guard = None
                    return
            try:
                used = self.pressure()
            except duckdb.Error as exc:
                # DuckDB may run out of memory reading its own accounting: that is pressure itself.
                # Any other failure (a cursor the store is replacing) passes: the guard keeps going.
                if time.monotonic() - logged >= GUARD_ERROR_LOG_S:
                    logged = time.monotonic()
                    log.warning("reading DuckDB's memory accounting failed (%s); the guard goes on", exc)
                if isinstance(exc, duckdb.OutOfMemoryException):
                    self.interrupt_all("memory")
                    time.sleep(GUARD_INTERVAL_S * 4)
                time.sleep(GUARD_INTERVAL_S)
                continue
            if used > budget:
                log.warning(
                    "readers hold %d MiB of DuckDB's %d MiB; interrupting them to keep the writer's share",
                    used >> 20,
                    self._limit >> 20,
                )
                self.interrupt_all("memory")
                time.sleep(GUARD_INTERVAL_S * 4)  # let the interrupted queries unwind
            time.sleep(GUARD_INTERVAL_S)
