"""The lake: a DuckLake (a PostgreSQL catalog plus Parquet data files) that every node writes and
any node reads, through DuckDB.

``Lake`` opens two in-memory DuckDB instances, each with the lake ATTACHed as ``lake`` and
``USE``d: one for the writes of this process (``in_turn``), one whose cursors the readers get
(``reader()``), so the query layer's SQL runs on the lake unchanged. The DuckLake and PostgreSQL
extensions are loaded by path from the installed wheels (``duckdb_extension_ducklake``,
``duckdb_extension_postgres``), never downloaded; the PostgreSQL binary is named
``postgres.duckdb_extension`` but its entry point is ``postgres_scanner``'s, so it is loaded
through a symlink of that name in a private temporary directory. After the ATTACH both instances
are locked down: ``allowed_directories`` is the lake's data path, then no external access and no
configuration changes. DuckLake reads and writes its data files and PostgreSQL under that lock
(measured with 1.5.5), so the read-only SQL endpoint reaches the lake and nothing else.

**The turn.** DuckLake has snapshot isolation and optimistic concurrency: two transactions that
append to the same table both commit. The store's rollups need more (keys are allocated as
max(key) + 1, a row must not be shipped twice), so every lake write transaction begins with
``UPDATE lake_turn SET n = n + 1``: of two concurrent ones, the second to COMMIT fails with
"Transaction conflict" and runs again from a fresh snapshot. All lake writes of all nodes are
thus serialized; ``in_turn`` retries conflicts with jittered backoff (``TURN_ATTEMPTS``,
counted in ``Stats.lake_conflicts``). So that writers do not do their work only to lose it at
COMMIT (two nodes shipping back to back lost most ships so, measured), each first queues in
PostgreSQL: a ``LOCK TABLE`` on the catalog database, through an attachment of its own
(``turn_lock``, the writer's instance only), held until the transaction ends and taken before
DuckLake reads its snapshot (``_wait_for_turn``). The lock only makes conflicts rare; the turn
row is what guarantees the order.

**A lost catalog connection.** The PostgreSQL extension opens new connections on its own after
the server restarts (measured: the first statement after a restart succeeds). Should the lake
connection fail otherwise, ``in_turn`` opens both instances again (``reattach``, counted in
``Stats.lake_reattaches``) and retries a few times; a COMMIT that failed that way may or may
not have committed, so the work must be safe to run again (the shipper's is: its rows are
deduplicated against the lake's ``requests``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import random
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar, cast

import duckdb

from user_metrics.errors import Unavailable
from user_metrics.stats import Stats
from user_metrics.store import lake_schema
from user_metrics.store.readers import Reader, Readers
from user_metrics.store.writer_connection import first_line

log = logging.getLogger(__name__)
T = TypeVar("T")

# Conflicts a lake write transaction retries before giving up (the caller tries again later),
# and the most it sleeps between two (jittered, doubling from TURN_PAUSE_S).
TURN_ATTEMPTS = 40
TURN_PAUSE_S = 0.01
TURN_MAX_PAUSE_S = 1.0
# Times a transaction whose catalog connection failed is retried (pausing 0.2 s, doubling; from
# the second on after opening the connection again), before the caller is told Unavailable.
REATTACH_ATTEMPTS = 4
# How long a lake writer queues for the turn in PostgreSQL before its transaction is retried.
TURN_WAIT_S = 30
# What lake writers queue on in PostgreSQL: see _wait_for_turn.
_TURN_LOCK_SQL = (
    f"SET LOCAL lock_timeout = '{TURN_WAIT_S}s'",
    "LOCK TABLE ducklake_metadata IN SHARE UPDATE EXCLUSIVE MODE",
)
# ATTACHes tried while another node creates a new lake's catalog tables (pausing 0.1-0.3 s, doubling).
INIT_ATTEMPTS = 5
# How often ``health`` asks the catalog itself (in between, it answers what it last learned).
HEALTH_PROBE_S = 5.0
# A lost or failing catalog connection (PostgreSQL down or restarting: IOException "Unable to
# connect to Postgres"), or a COMMIT that failed on it: retried. Anything else is the SQL's own
# error and is raised at once.
_CONNECTION_ERRORS = (
    duckdb.IOException,
    duckdb.TransactionException,
    duckdb.ConnectionException,
    duckdb.FatalException,
)
_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)|(://[^:/@\s]*:)([^@\s]*)(@)", re.IGNORECASE)


def redact(catalog: str) -> str:
    """The catalog string with any password hidden, for logs and messages."""
    return _PASSWORD.sub(lambda m: f"{m[1]}***" if m[1] else f"{m[3]}***{m[5]}", catalog)


def extension_paths() -> tuple[str, str]:
    """The DuckLake and PostgreSQL extension binaries of the installed wheels for this DuckDB."""
    found = []
    for package, name in (
        ("duckdb_extension_ducklake", "ducklake"),
        ("duckdb_extension_postgres", "postgres"),
    ):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise Unavailable(f"lake mode needs the {package.replace('_', '-')} package (pip install it)")
        path = Path(list(spec.submodule_search_locations)[0]) / "extensions" / f"v{duckdb.__version__}"
        binary = path / f"{name}.duckdb_extension"
        if not binary.exists():
            raise Unavailable(f"{binary} is missing: {package} must match duckdb {duckdb.__version__}")
        found.append(str(binary))
    return found[0], found[1]


class _Initializing(Exception):
    """Another node is creating DuckLake's catalog tables right now (its ATTACH on a new lake)."""


def is_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` is DuckLake's optimistic-concurrency failure (retry from a fresh snapshot)."""
    return isinstance(exc, duckdb.TransactionException) and "conflict" in str(exc).lower()


class _LakeReaders(Readers):
    """``Readers`` whose cursors read the lake (``USE lake``: a cursor starts in ``memory``).

    DuckDB invalidates an instance after an internal error (1.5.5 raised one, "Attempted to
    access index 0 within vector of size 0", now and then in the query tests, lake or not):
    every later statement fails. So when a new reader finds its instance invalidated (or
    closed), the readers' instance is opened again (``reopen``) and the reader made anew, once."""

    def __init__(self, root: duckdb.DuckDBPyConnection, stats: Stats, reopen: Callable[[], None]) -> None:
        super().__init__(root, stats)
        self._reopen = reopen

    def open(self) -> Reader:
        for attempt in range(2):
            reader: Reader | None = None
            try:
                reader = super().open()
                reader.execute("USE lake")
                return reader
            except duckdb.Error as exc:
                if reader is not None:
                    reader.close()
                if isinstance(exc, (duckdb.FatalException, duckdb.ConnectionException)) and not attempt:
                    with contextlib.suppress(Unavailable, duckdb.Error):
                        self._reopen()
                    continue
                raise Unavailable(f"the lake cannot be read: {redact(first_line(exc))}") from exc
        raise AssertionError("unreachable")


class Lake:
    """One process's connections to the lake: a writer's (``in_turn``) and the readers'."""

    def __init__(
        self,
        catalog: str,
        data_path: str | None,
        stats: Stats,
        *,
        memory_limit_mib: int,
        max_dimension_values: int,
        create: bool = True,
    ) -> None:
        self.catalog = catalog
        self.max_dimension_values = max_dimension_values
        self._stats = stats
        self._memory_limit_mib = memory_limit_mib
        self._extensions = extension_paths()
        self._private = tempfile.mkdtemp(prefix="um-lake-ext-")
        os.symlink(self._extensions[1], os.path.join(self._private, "postgres_scanner.duckdb_extension"))
        self._turn_lock = threading.Lock()
        self._turn_lock_works = True  # until PostgreSQL's lock fails (_wait_for_turn)
        self._health_lock = threading.Lock()
        self._last_probe = 0.0
        self.failure: str | None = None
        self.data_path = data_path or ""
        try:
            self._con = self._open(data_path, writer=True)
            self.data_path = self._data_path(self._con)
            if create:
                self._ensure_schema()
            self._lock_down(self._con)
            readers_root = self._open(None)
            self._lock_down(readers_root)
        except BaseException:
            with contextlib.suppress(duckdb.Error, AttributeError):
                self._con.close()
            shutil.rmtree(self._private, ignore_errors=True)
            raise
        self._readers_root = readers_root
        self._reopen_lock = threading.Lock()
        self.readers: Readers = _LakeReaders(readers_root.cursor(), stats, self._reopen_readers)

    # ---- connections --------------------------------------------------------------------------

    def _open(self, data_path: str | None, writer: bool = False) -> duckdb.DuckDBPyConnection:
        """A new in-memory DuckDB with the lake attached and used (not locked down yet).

        Nodes that start together on a new lake race to create DuckLake's own catalog tables;
        the losers' ATTACH fails ("Failed to initialize DuckLake", a duplicate table) and is
        tried again (``INIT_ATTEMPTS``), by which time the catalog exists."""
        for attempt in range(INIT_ATTEMPTS):
            try:
                return self._open_once(data_path, writer)
            except _Initializing:
                time.sleep(random.uniform(0.1, 0.3) * 2**attempt)
        return self._open_once(data_path, writer)

    def _open_once(self, data_path: str | None, writer: bool) -> duckdb.DuckDBPyConnection:
        config: dict[str, str | bool | int | float | list[str]] = {
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        }
        if self._memory_limit_mib:
            config["memory_limit"] = f"{self._memory_limit_mib}MiB"
        con = duckdb.connect(":memory:", config=config)
        try:
            con.execute(f"LOAD '{_quoted(self._extensions[0])}'")
            con.execute(f"LOAD '{_quoted(os.path.join(self._private, 'postgres_scanner.duckdb_extension'))}'")
        except duckdb.Error as exc:
            con.close()
            raise Unavailable(f"the DuckLake extensions cannot be loaded: {first_line(exc)}") from exc
        options = f" (DATA_PATH '{_quoted(data_path)}')" if data_path else ""
        try:
            if writer:  # the catalog database itself, for the turn's lock (_wait_for_turn)
                con.execute(f"ATTACH '{_quoted(self.catalog)}' AS turn_lock (TYPE postgres)")
            con.execute(f"ATTACH '{_quoted('ducklake:postgres:' + self.catalog)}' AS lake{options}")
            con.execute("USE lake")
        except duckdb.Error as exc:
            con.close()
            if "Failed to initialize DuckLake" in str(exc):
                raise _Initializing(str(exc)) from exc
            message = redact(first_line(exc).replace(self.catalog, redact(self.catalog)))
            raise Unavailable(f"the lake at {redact(self.catalog)} cannot be attached: {message}") from exc
        return con

    def _data_path(self, con: duckdb.DuckDBPyConnection) -> str:
        rows = con.execute("SELECT value FROM lake.options() WHERE option_name = 'data_path'").fetchall()
        if not rows or not rows[0][0]:
            raise Unavailable(f"the lake at {redact(self.catalog)} has no data path: give one (lake_data)")
        return str(rows[0][0])

    def _lock_down(self, con: duckdb.DuckDBPyConnection) -> None:
        """No file but the lake's data files, no network but the catalog's, no configuration changes."""
        con.execute("SET allowed_directories = $dirs", {"dirs": [self.data_path]})
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")

    def _ensure_schema(self) -> None:
        if lake_schema.current(self._con):
            return
        log.info("creating the lake's tables in %s", redact(self.catalog))
        self.transaction(lake_schema.create, turn=False)

    def reattach(self, why: BaseException) -> None:
        """Open both instances again (the catalog connection failed); the readers' open cursors fail."""
        log.warning("reattaching the lake after %s", redact(first_line(why)))
        self._stats.add(lake_reattaches=1)
        con = self._open(None, writer=True)
        self._lock_down(con)
        readers_root = self._open(None)
        self._lock_down(readers_root)
        old = (self._con, self._readers_root)
        self._con, self._readers_root = con, readers_root
        self.readers.replace_root(readers_root.cursor())
        for stale in old:
            with contextlib.suppress(duckdb.Error):
                stale.close()

    def _reopen_readers(self) -> None:
        """Open the readers' instance again (the old one was invalidated); its cursors fail."""
        with self._reopen_lock:
            log.warning("reopening the lake's readers: DuckDB invalidated their instance")
            self._stats.add(lake_reattaches=1)
            root = self._open(None)
            self._lock_down(root)
            old, self._readers_root = self._readers_root, root
            self.readers.replace_root(root.cursor())
            with contextlib.suppress(duckdb.Error):
                old.close()

    # ---- the API ------------------------------------------------------------------------------

    def reader(self) -> duckdb.DuckDBPyConnection:
        """A new reader cursor over the lake (close it when done): a ``readers.Reader``."""
        return cast(duckdb.DuckDBPyConnection, self.readers.open())

    def in_turn(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """``work`` in one lake write transaction that holds the turn: committed, or raised.

        Conflicts are retried from a fresh snapshot (``TURN_ATTEMPTS``), a lost connection after
        reattaching (``REATTACH_ATTEMPTS``); then ``Unavailable``. ``work`` may run more than once
        and must be safe to (a COMMIT that failed on the connection may have committed)."""
        return self.transaction(work, turn=True)

    def transaction(self, work: Callable[[duckdb.DuckDBPyConnection], T], *, turn: bool) -> T:
        """``work`` in one lake transaction, retried as ``in_turn`` says; without the turn
        (``turn=False``) for what DuckLake wants alone in its transaction: its maintenance calls
        ("Transactions can either make changes OR perform compaction - not both")."""
        conflicts = failures = 0
        with self._turn_lock:
            while True:
                try:
                    result = self._once(work, turn)
                except _CONNECTION_ERRORS as exc:
                    if is_conflict(exc):
                        conflicts += 1
                        self._stats.add(lake_conflicts=1)
                        if conflicts >= TURN_ATTEMPTS:
                            raise Unavailable(f"the lake stayed busy ({conflicts} conflicts); retry") from exc
                        time.sleep(random.uniform(0, min(TURN_MAX_PAUSE_S, TURN_PAUSE_S * 2**conflicts)))
                        continue
                    failures += 1
                    self.failure = f"the lake's catalog failed: {redact(first_line(exc))}"
                    log.warning("%s (attempt %d)", self.failure, failures)
                    if failures > REATTACH_ATTEMPTS:
                        raise Unavailable(self.failure) from exc
                    time.sleep(0.1 * 2**failures)
                    if failures > 1:
                        with contextlib.suppress(Unavailable, duckdb.Error):
                            self.reattach(exc)
                    continue
                self._stats.add(lake_commits=1)
                self.failure = None
                return result

    def _once(self, work: Callable[[duckdb.DuckDBPyConnection], T], turn: bool) -> T:
        con = self._con
        con.execute("USE memory" if turn else "USE lake")  # with the turn, the lock first: _wait_for_turn
        con.execute("BEGIN")
        try:
            if turn:
                self._wait_for_turn(con)
                con.execute("USE lake")
                con.execute("UPDATE lake_turn SET n = n + 1")
            result = work(con)
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise
        return result

    def _wait_for_turn(self, con: duckdb.DuckDBPyConnection) -> None:
        """Queue for the turn in PostgreSQL, so as not to do the work only to lose at COMMIT.

        ``LOCK TABLE ducklake_metadata IN SHARE UPDATE EXCLUSIVE MODE`` (a mode that conflicts
        with itself only: DuckLake's own reads and writes never wait for it) on the catalog
        database, in this transaction's PostgreSQL transaction of the ``turn_lock``
        attachment, held until the transaction ends. It must come before DuckLake reads its
        snapshot: DuckLake's PostgreSQL transactions are REPEATABLE READ, and a snapshot taken
        before the wait would be stale after it (a conflict all the same). So the connection
        is in ``memory`` when the transaction begins (``_once``), and ``USE lake`` follows the
        lock. Bounded by PostgreSQL's ``lock_timeout`` (``TURN_WAIT_S``); should the lock fail
        for any reason but the connection, conflicts alone serialize the writers."""
        if not self._turn_lock_works:
            return
        try:
            for statement in _TURN_LOCK_SQL:
                con.execute(f"CALL postgres_execute('turn_lock', '{_quoted(statement)}')")
        except duckdb.IOException:
            raise  # the catalog is unreachable, or the wait timed out: retried by transaction()
        except duckdb.Error as exc:
            self._turn_lock_works = False
            log.warning("cannot queue for the lake's turn in PostgreSQL (%s); relying on conflicts", exc)

    def health(self) -> str | None:
        """None when the lake answers; else why not (asks the catalog at most every HEALTH_PROBE_S)."""
        recent = time.monotonic() - self._last_probe < HEALTH_PROBE_S
        if recent or not self._health_lock.acquire(blocking=False):
            return self.failure
        try:
            self._last_probe = time.monotonic()
            with self.reader() as reader:
                reader.execute("SELECT n FROM lake_turn").fetchall()
        except (duckdb.Error, Unavailable) as exc:
            self.failure = f"the lake cannot be read: {redact(first_line(exc))}"
        else:
            self.failure = None
        finally:
            self._health_lock.release()
        return self.failure

    def close(self) -> None:
        try:
            self.readers.close()
        finally:
            for con in (self._readers_root, self._con):
                with contextlib.suppress(duckdb.Error):
                    con.close()
            shutil.rmtree(self._private, ignore_errors=True)


def _quoted(text: str) -> str:
    """``text`` inside a single-quoted SQL string literal."""
    return text.replace("'", "''")
