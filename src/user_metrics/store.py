"""The store: the ``requests`` table in DuckDB, written by one thread with group commit.

Front-ends hand ``write`` an Arrow table and wait on the returned future; it resolves only after
the transaction holding those rows has committed (DuckDB syncs its WAL on commit). The writer
thread takes everything queued while the previous commit ran and commits it together, so many
small exports share one disk sync.

Each (trace_id, span_id) is stored once. ``span_keys`` holds a 127-bit hash of the pair under a
primary key: the fast path inserts keys and rows in one transaction; a constraint violation (a
retry, a replay) rolls back and takes the slow path, which inserts keys with
``ON CONFLICT DO NOTHING RETURNING`` and stores only the rows whose keys were new. The rows
stored are added to the rollups (``rollups.py``) in the same transaction, so the aggregates are
exactly the sum of the stored rows.

The database is locked down once the schema is ready: no file, network or extension access and
no configuration changes, for this connection and every reader cursor (``reader()``), which is
what makes the read-only SQL endpoint safe.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import duckdb
import pyarrow as pa

from user_metrics import query, rollups
from user_metrics.errors import InvalidInput, Overloaded, Unavailable
from user_metrics.readers import Readers
from user_metrics.stats import Stats

log = logging.getLogger(__name__)

# 2 rollups, 3 hourly per user, 4 append-only, 5 all-time totals, 6 pending,
# 7 requests.cache_added_to_input and requests.price_provider, 8 dims with request and response
# model and bounded values (dim_values)
SCHEMA_VERSION = "8"

REQUESTS_DDL = """
CREATE TABLE IF NOT EXISTS requests (
    trace_id           VARCHAR NOT NULL,
    span_id            VARCHAR NOT NULL,
    parent_span_id     VARCHAR,
    start_time         TIMESTAMPTZ NOT NULL,
    duration_ms        DOUBLE,
    user_id            VARCHAR,
    session_id         VARCHAR,
    service_name       VARCHAR,
    environment        VARCHAR,
    operation          VARCHAR,
    provider           VARCHAR,
    request_model      VARCHAR,
    response_model     VARCHAR,
    input_tokens       BIGINT,
    output_tokens      BIGINT,
    cache_read_tokens  BIGINT,
    cache_write_tokens BIGINT,
    reasoning_tokens   BIGINT,
    cost_usd           DECIMAL(18, 9),
    cost_source        VARCHAR NOT NULL,
    status             VARCHAR NOT NULL,
    error_type         VARCHAR,
    streaming          BOOLEAN,
    properties         MAP(VARCHAR, VARCHAR),
    cache_added_to_input BOOLEAN,
    price_provider     VARCHAR
)
"""
# Columns added to `requests` since schema 1 (an upgrade appends them, as the DDL has them).
ADDED_COLUMNS = (("cache_added_to_input", "BOOLEAN"), ("price_provider", "VARCHAR"))
# `pending` holds rows of `requests` plus these, last.
PENDING_COLUMNS = ("waiting_for", "deadline_us")
OTHER_DDL = (
    "CREATE TABLE IF NOT EXISTS span_keys (k HUGEINT PRIMARY KEY)",
    "CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)",
    # LLM spans without a user id whose ancestors may still arrive: the rows, what they wait for
    # (the first ancestor missing from their request) and until when.
    "CREATE TABLE IF NOT EXISTS pending AS "
    "SELECT *, ''::VARCHAR AS waiting_for, 0::BIGINT AS deadline_us FROM requests WHERE false",
    # Every span's own identity and parent, for a while, so spans of later requests can inherit.
    """CREATE TABLE IF NOT EXISTS span_facts (
    trace_id VARCHAR NOT NULL, span_id VARCHAR NOT NULL, parent_span_id VARCHAR,
    user_id VARCHAR, session_id VARCHAR, properties MAP(VARCHAR, VARCHAR), seen_us BIGINT NOT NULL
)""",
)
# 32 + 16 hex characters, so the concatenation is unambiguous; >> 1 makes md5's 128 bits fit HUGEINT.
SPAN_KEY_SQL = "(md5_number(trace_id || span_id) >> 1)::HUGEINT"


# Errors caused by the rows themselves (a value DuckDB cannot hold), not by the database.
DATA_ERRORS = (duckdb.DataError, pa.ArrowException, UnicodeError, OverflowError)

# DuckDB checkpoints by itself when a commit leaves the WAL over its threshold, and a checkpoint
# that runs out of memory invalidates the whole database. So the writer checkpoints itself: when
# the WAL passes CHECKPOINT_WAL_BYTES and no reader is open, or passes FORCE_CHECKPOINT_WAL_BYTES,
# holding readers back (``Readers.exclusive``) so that the checkpoint has the memory it needs.
CHECKPOINT_WAL_BYTES = 16 * 1024 * 1024
FORCE_CHECKPOINT_WAL_BYTES = 256 * 1024 * 1024
# How often the writer drops attribution facts older than twice the attribution window, and how
# often, while a write is failing, it tries a small write to learn whether it can commit again.
PURGE_FACTS_EVERY_S = 60.0
# Writes of at most this many rows are committed before bigger ones that were queued first.
SMALL_WRITE_ROWS = 1024
PROBE_EVERY_S = 2.0
# Pauses between the writer's retries after running out of memory, readers held back (about 6 s).
MEMORY_RETRY_PAUSES_S = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.0)
T = TypeVar("T")


@dataclass
class _Pending:
    table: pa.Table
    future: Future[int]
    waiting: pa.Table | None = None  # rows for `pending`
    facts: pa.Table | None = None  # rows for `span_facts`


_STOP = object()


class Store:
    """Owns the DuckDB file while the service runs; one writer thread."""

    def __init__(
        self,
        path: str | Path,
        stats: Stats,
        *,
        max_group_rows: int = 200_000,
        max_queue_rows: int = 100_000,
        memory_limit_mib: int = 0,
        compact_after_rows: int = 100_000,
        compact_after_seconds: float = 30.0,
        attribution_window_seconds: float = 30.0,
        max_dimension_values: int = 1000,
    ) -> None:
        self.path = str(path)
        self._max_dimension_values = max_dimension_values
        self._stats = stats
        self._max_group_rows = max_group_rows
        # The write queue is bounded in rows: beyond it, writers are told to come back later.
        self._max_queue_rows = max_queue_rows
        self._queued_rows = 0
        self._queue_lock = threading.Lock()
        self._commit_rows_per_s = 10_000.0  # measured at every commit
        # Rollup rows appended since the last compaction: their hours and users, and how many rows.
        self._dirty = rollups.Touched(set(), set())
        self._rows_since_compaction = 0
        self._last_compaction = time.monotonic()
        self._compact_after_rows = compact_after_rows
        self._compact_after_seconds = compact_after_seconds
        # DuckDB's default buffer pool is 80 % of RAM: it keeps every block it ever read.
        # No checkpoint of DuckDB's own at commit (see CHECKPOINT_WAL_BYTES): none for the WAL's
        # size, nor instead of writing a large commit to the WAL.
        config: dict[str, str | bool | int | float | list[str]] = {
            "checkpoint_threshold": "1TB",
            "auto_checkpoint_skip_wal_threshold": 2**62,
        }
        if memory_limit_mib:
            config["memory_limit"] = f"{memory_limit_mib}MiB"
        self._config = config
        try:
            self._con = duckdb.connect(self.path, config=config)
        except duckdb.Error as exc:
            raise Unavailable(f"cannot open database {self.path}: {exc}") from exc
        self._init_schema()
        _lock_down(self._con)
        self._window_us = int(attribution_window_seconds * 1e6)
        self._has_pending = self._count_pending()
        self._last_purge = time.monotonic()
        # Why the last write failed (None once one succeeds): what /healthz reports.
        self._failure: str | None = None
        self._last_probe = 0.0
        # Readers get cursors of their own, made from a connection the writer thread never uses,
        # one at a time: a DuckDB connection object is not safe to share between threads.
        self._reader_root = self._con.cursor()
        self._reader_lock = threading.Lock()
        self._readers = Readers(self._reader_root.cursor(), stats)
        self._queue: queue.Queue[_Pending | object] = queue.Queue()
        self._backlog: list[_Pending] = []  # taken from the queue by the writer, not yet committed
        self._closed = False
        self._close_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    def _init_schema(self) -> None:
        con = self._con
        con.execute("BEGIN")
        con.execute(REQUESTS_DDL)
        _add_request_columns(con)  # before `pending` is made from `requests`, if it is new
        for ddl in OTHER_DDL:
            con.execute(ddl)
        row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = row[0] if row else None
        if version not in (None, "1", "2", "3", "4", "5", "6", SCHEMA_VERSION):
            con.execute("ROLLBACK")
            raise Unavailable(f"{self.path} has schema version {version}, this build needs {SCHEMA_VERSION}")
        _match_pending_columns(con)
        if version in ("1", "2", "3", "4", "5", "6", "7"):
            log.info("upgrading %s to schema %s: building rollups from requests", self.path, SCHEMA_VERSION)
            rollups.rebuild(con, self._max_dimension_values)
        for ddl in rollups.DDL:
            con.execute(ddl)
        con.execute(
            "INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT DO UPDATE SET value = excluded.value",
            [SCHEMA_VERSION],
        )
        con.execute("COMMIT")

    def reader(self) -> duckdb.DuckDBPyConnection:
        """A new cursor of the database for one reader thread (close it when done).

        It is a ``readers.Reader``, which behaves as the DuckDB cursor it wraps; the store may
        interrupt its query when the writer needs memory.
        """
        with self._reader_lock:
            if self._closed:
                raise Unavailable("the store is shutting down")
        return cast(duckdb.DuckDBPyConnection, self._readers.open())

    def health(self) -> str | None:
        """None while the writer can commit; else why it cannot (what /healthz answers)."""
        if not self._closed and not self._thread.is_alive():
            return "the store's writer thread has stopped"
        return self._failure

    @property
    def queue(self) -> tuple[int, int]:
        """(batches, rows) waiting for the writer."""
        return self._queue.qsize() + len(self._backlog), self._queued_rows

    def property_keys(self) -> set[str]:
        """Every custom property key stored so far (``query.property_keys`` on a reader)."""
        con = self.reader()
        try:
            return set(query.property_keys(con).keys)
        finally:
            con.close()

    def write(
        self, table: pa.Table, waiting: pa.Table | None = None, facts: pa.Table | None = None
    ) -> Future[int]:
        """Queue rows for the next commit; the future gives the number of new rows once durable.

        The future fails at once with ``Overloaded`` when the queue holds ``max_queue_rows`` rows
        (a table larger than the whole limit is still taken when the queue is empty).
        """
        future: Future[int] = Future()
        if self._closed or not self._thread.is_alive():
            future.set_exception(Unavailable(self.health() or "the store is shutting down"))
            return future
        rows = table.num_rows + (waiting.num_rows if waiting is not None else 0)
        with self._queue_lock:
            queued = self._queued_rows
            if queued and queued + rows > self._max_queue_rows:
                wait = math.ceil(queued / self._commit_rows_per_s)
                future.set_exception(
                    Overloaded(
                        f"the write queue is full ({queued} rows waiting, limit {self._max_queue_rows}); "
                        "retry later",
                        retry_after_seconds=min(30, max(1, wait)),
                    )
                )
                return future
            self._queued_rows = queued + rows
        self._queue.put(_Pending(table, future, waiting, facts))
        return future

    def close(self) -> None:
        """Commit everything queued, checkpoint, and close the file."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(_STOP)
        self._thread.join()
        self._refuse_queued()
        try:
            self._compact()
            with self._readers.exclusive():
                self._con.execute("CHECKPOINT")
        finally:
            self._readers.close()
            with self._reader_lock:
                self._reader_root.close()
            self._con.close()

    def _refuse_queued(self) -> None:
        """Fail writes that raced with close() into the queue behind the stop (never committed)."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Pending):
                item.future.set_exception(Unavailable("the store is shutting down"))

    # ---- the writer thread --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._serve_queue()
        except BaseException as exc:  # noqa: BLE001 - health() reports it; exporters get Unavailable
            log.critical("the store's writer stopped: %s", exc, exc_info=True)
            self._failure = f"the store's writer stopped: {exc}"
            for pending in self._backlog:
                pending.future.set_exception(Unavailable(self._failure))
            self._refuse_queued()
            raise

    def _serve_queue(self) -> None:
        backlog = self._backlog
        stopping = False
        while backlog or not stopping:
            self._housekeeping()
            if not backlog and not stopping:
                try:
                    item = self._queue.get(timeout=1.0 if self._has_pending or self._failure else 5.0)
                except queue.Empty:
                    if self._has_pending:
                        self._resolve_pending(None)  # the clock alone finalises spans past their deadline
                    continue
                stopping = item is _STOP
                if isinstance(item, _Pending):
                    backlog.append(item)
            while not stopping:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                stopping = item is _STOP
                if isinstance(item, _Pending):
                    backlog.append(item)
            if backlog:
                self._commit(self._next_group(backlog))
            # While writes wait, compaction and checkpoints wait for them, up to twice their due.
            busy = not self._queue.empty() or any(_rows(p) <= SMALL_WRITE_ROWS for p in backlog)
            if self._compaction_due(2 if busy else 1):
                self._compact()
            self._maybe_checkpoint(FORCE_CHECKPOINT_WAL_BYTES if busy else CHECKPOINT_WAL_BYTES)

    def _compaction_due(self, factor: int) -> bool:
        elapsed = time.monotonic() - self._last_compaction
        return self._rows_since_compaction >= factor * self._compact_after_rows or (
            bool(self._dirty) and elapsed >= factor * self._compact_after_seconds
        )

    def _next_group(self, backlog: list[_Pending]) -> list[_Pending]:
        """Take the writes of the next commit out of ``backlog``: the small ones first, so that a
        small export waits for at most the commit under way, not for the big ones queued before
        it; then the rest in arrival order, up to ``max_group_rows`` rows (at least one write)."""
        small = [p for p in backlog if _rows(p) <= SMALL_WRITE_ROWS]
        candidates = small or backlog
        group: list[_Pending] = []
        rows = 0
        for pending in candidates:
            if group and rows + _rows(pending) > self._max_group_rows:
                break
            group.append(pending)
            rows += _rows(pending)
        taken = {id(p) for p in group}
        backlog[:] = [p for p in backlog if id(p) not in taken]
        return group

    def _housekeeping(self) -> None:
        """What the writer does by the clock: drop old attribution facts, probe a failing store."""
        now = time.monotonic()
        if now - self._last_purge >= PURGE_FACTS_EVERY_S:
            self._last_purge = now
            cut = time.time_ns() // 1000 - 2 * self._window_us
            try:
                self._in_transaction(
                    lambda con: con.execute("DELETE FROM span_facts WHERE seen_us < $cut", {"cut": cut})
                )
            except duckdb.Error:
                log.exception("dropping old attribution facts failed; tried again in a minute")
        if self._failure is not None and now - self._last_probe >= PROBE_EVERY_S:
            self._last_probe = now
            try:
                self._in_transaction(
                    lambda con: con.execute(
                        "INSERT INTO meta VALUES ('last_probe', $t) "
                        "ON CONFLICT DO UPDATE SET value = excluded.value",
                        {"t": str(time.time_ns())},
                    )
                )
            except duckdb.Error as exc:
                log.warning("the store still cannot commit: %s", _first_line(exc))
            else:
                log.info("the store can commit again")
                self._failure = None

    def _compact(self) -> None:
        """Merge the rollup rows written since the last time (failure only costs query speed)."""
        touched, self._dirty = self._dirty, rollups.Touched(set(), set())
        self._rows_since_compaction = 0
        self._last_compaction = time.monotonic()
        started = time.perf_counter()
        try:
            removed = self._in_transaction(lambda con: rollups.compact(con, touched))
        except duckdb.Error:
            log.exception("compacting the rollups failed; they stay correct, only larger")
            self._dirty |= touched
            return
        self._stats.add(
            compactions=1, compaction_seconds=time.perf_counter() - started, rollup_rows_merged=removed
        )

    def _maybe_checkpoint(self, at_bytes: int) -> None:
        """Checkpoint once the WAL has ``at_bytes``, while no reader holds memory, or once it has
        FORCE_CHECKPOINT_WAL_BYTES, holding readers back (see CHECKPOINT_WAL_BYTES)."""
        try:
            wal = os.path.getsize(self.path + ".wal")
        except OSError:
            return
        if wal < at_bytes or (wal < FORCE_CHECKPOINT_WAL_BYTES and self._readers.open_count):
            return
        try:
            with self._readers.exclusive():
                self._con.execute("CHECKPOINT")
        except duckdb.FatalException as exc:
            # The checkpoint is tried again as the WAL grows; if reopening fails, health() says so.
            with contextlib.suppress(Unavailable):
                self._reopen(exc)
        except duckdb.Error:
            log.exception("checkpoint failed; the WAL keeps growing until the next one succeeds")

    # ---- transactions of the writer -------------------------------------------------------

    def _in_transaction(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """``work`` in one transaction of the writer's connection: committed, or rolled back."""
        return self._with_memory(lambda: self._transaction(work))

    def _with_memory(self, attempt: Callable[[], T]) -> T:
        """``attempt()`` (one or more transactions), kept safe from the readers' memory.

        Readers share DuckDB's memory limit. When they hold more than their share already, the
        attempt runs with readers held back (``Readers.exclusive``). If it runs out of memory all
        the same, it is tried again, readers held back, a few times over a few seconds (a reader
        that was interrupted gives its memory back only when it closes). If DuckDB may have been
        left inconsistent (a failed COMMIT or ROLLBACK, a fatal error), the database is opened
        anew first (``_reopen``).
        """
        if self._readers.over_share():
            self._stats.add(writer_memory_retries=1)
            with self._readers.exclusive():
                return self._recovering(attempt)
        try:
            return self._recovering(attempt)
        except duckdb.OutOfMemoryException as exc:
            log.warning("the writer ran out of memory (%s); retrying, readers held back", _first_line(exc))
        with self._readers.exclusive():
            for pause in MEMORY_RETRY_PAUSES_S:
                self._stats.add(writer_memory_retries=1)
                try:
                    return self._recovering(attempt)
                except duckdb.OutOfMemoryException as exc:
                    log.warning("the writer still lacks memory (%s)", _first_line(exc))
                time.sleep(pause)
            self._stats.add(writer_memory_retries=1)
            return self._recovering(attempt)

    def _recovering(self, attempt: Callable[[], T]) -> T:
        """``attempt()``; after a failure that may have left DuckDB inconsistent, the database is
        opened again and the attempt made once more (what it committed before is stored once)."""
        try:
            return attempt()
        except (_Unsettled, duckdb.FatalException, duckdb.ConnectionException) as exc:
            self._reopen(exc)  # ConnectionException: an earlier reopen failed half-way
        return attempt()

    def _transaction(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        con = self._con
        con.execute("BEGIN")
        try:
            result = work(con)
        except BaseException:
            self._rollback()
            raise
        try:
            con.execute("COMMIT")
        except duckdb.Error as exc:
            # A COMMIT that fails part-way (out of memory, say) can leave DuckDB's in-memory tables
            # inconsistent: nothing more is done on this connection before the database is reopened.
            raise _Unsettled(f"COMMIT failed: {_first_line(exc)}") from exc
        return result

    def _rollback(self) -> None:
        """End the failed transaction. ROLLBACK itself can fail (it too may need memory): it is tried
        again with the readers held back, and if that fails, the database must be reopened."""
        try:
            self._try_rollback()
        except duckdb.Error as first:
            log.warning("rollback failed (%s); retrying with readers held back", _first_line(first))
            try:
                with self._readers.exclusive():
                    self._try_rollback()
            except duckdb.Error as exc:
                raise _Unsettled(f"ROLLBACK failed: {_first_line(exc)}") from exc

    def _try_rollback(self) -> None:
        try:
            self._con.execute("ROLLBACK")
        except duckdb.TransactionException as exc:
            if "no transaction is active" not in str(exc):
                raise

    def _reopen(self, why: BaseException) -> None:
        """Close every connection of the database and open the file again.

        DuckDB invalidates a database after a failed ROLLBACK or checkpoint, and a failed COMMIT
        can leave its in-memory tables inconsistent. The file and its WAL hold every committed
        transaction (DuckDB's own checkpoint at shutdown is off, so the old instance writes
        nothing more), so opening it again replays them; readers are held back meanwhile, and
        their open cursors, of the old instance, fail.
        """
        log.error("reopening the database after %s", _first_line(why))
        self._stats.add(store_reopens=1)
        with self._readers.exclusive():
            for con in (self._reader_root, self._con):
                with contextlib.suppress(duckdb.Error):
                    con.close()
            try:
                self._con = duckdb.connect(self.path, config=self._config)
                _lock_down(self._con)
            except duckdb.Error as exc:
                self._failure = f"the database could not be opened again: {_first_line(exc)}"
                log.critical(self._failure)
                raise Unavailable(self._failure) from exc
            self._reader_root = self._con.cursor()
            self._readers.replace_root(self._reader_root.cursor())
        self._has_pending = self._count_pending()
        log.info("database reopened")

    def _commit(self, group: list[_Pending]) -> None:
        started = time.perf_counter()
        rows = sum(_rows(p) for p in group)
        try:
            self._commit_group(group, rows, started)
        finally:
            with self._queue_lock:
                self._queued_rows -= rows

    def _commit_group(self, group: list[_Pending], rows: int, started: float) -> None:
        try:
            table = group[0].table if len(group) == 1 else pa.concat_tables([p.table for p in group])
            stored = self._insert(
                table, _concat([p.waiting for p in group]), _concat([p.facts for p in group])
            )
        except Exception as exc:  # noqa: BLE001 - every failure must reach the waiting exporters
            if isinstance(exc, DATA_ERRORS) and len(group) > 1:
                # One export's data must not fail the others it was grouped with.
                log.warning(
                    "a group of %d exports cannot be stored (%s); storing them one by one", len(group), exc
                )
                for pending in group:
                    self._commit_group([pending], pending.table.num_rows, time.perf_counter())
                return
            log.exception("commit of %d rows failed", rows)
            error: Exception
            if isinstance(exc, DATA_ERRORS):  # retrying the same data cannot help: not retryable
                error = InvalidInput(f"the batch cannot be stored: {exc}")
            else:
                self._failure = self._failure or f"the last commit failed: {_first_line(exc)}"
                error = Unavailable(f"could not store the batch: {_first_line(exc)}")
            for pending in group:
                pending.future.set_exception(error)
            return
        self._failure = None
        seconds = time.perf_counter() - started
        self._commit_rows_per_s = max(100.0, rows / max(seconds, 1e-3))
        self._stats.add(
            commits=1,
            commit_seconds=seconds,
            spans_stored=stored,
            spans_duplicate=table.num_rows - stored,  # waiting rows are counted when finalised
        )
        for pending in group:
            pending.future.set_result(pending.table.num_rows)
        traces = {
            t
            for p in group
            for part in (p.waiting, p.facts)
            if part is not None
            for t in part["trace_id"].to_pylist()
        }
        if traces and self._has_pending:
            self._resolve_pending(traces)

    def _insert(
        self,
        batch: pa.Table,
        waiting: pa.Table | None = None,
        facts: pa.Table | None = None,
        finalised: pa.Table | None = None,
    ) -> int:
        """Store ``batch`` once per span, and in the same transaction: ``waiting`` rows into
        ``pending``, ``facts`` into ``span_facts``, and (trace_id, span_id) of ``finalised`` out of
        ``pending``."""
        side = {"waiting": waiting, "facts": facts, "finalised": finalised}
        return self._with_memory(lambda: self._insert_once(batch, side))

    def _insert_once(self, batch: pa.Table, side: dict[str, pa.Table | None]) -> int:
        with _registered(self._con, {"batch": batch, **side}):  # may need memory: in _with_memory
            try:
                stored, touched = self._transaction(lambda con: self._insert_all(con, batch.num_rows, side))
            except duckdb.ConstraintException:  # a span stored before: store only the new ones
                stored, touched = self._transaction(lambda con: self._insert_new_only(con, side))
        # Only once committed: a rolled-back try must not count (nor leave cells to compact).
        self._dirty |= touched
        self._rows_since_compaction += stored
        self._stats.cut("max_dimension_values", touched.folded)
        return stored

    def _insert_all(
        self, con: duckdb.DuckDBPyConnection, rows: int, side: dict[str, pa.Table | None]
    ) -> tuple[int, rollups.Touched]:
        con.execute(f"INSERT INTO span_keys SELECT {SPAN_KEY_SQL} FROM batch")
        con.execute("INSERT INTO requests SELECT * FROM batch")
        touched = rollups.apply(con, "batch", self._max_dimension_values)
        self._insert_side(side)
        return rows, touched

    def _insert_side(self, side: dict[str, pa.Table | None]) -> None:
        con = self._con
        if side["waiting"] is not None:
            con.execute("INSERT INTO pending SELECT * FROM waiting")
            self._has_pending = True
        if side["facts"] is not None:
            con.execute("INSERT INTO span_facts SELECT * FROM facts")
        if side["finalised"] is not None:
            con.execute(
                "DELETE FROM pending WHERE (trace_id, span_id) IN (SELECT (trace_id, span_id) FROM finalised)"
            )

    def _insert_new_only(
        self, con: duckdb.DuckDBPyConnection, side: dict[str, pa.Table | None]
    ) -> tuple[int, rollups.Touched]:
        fresh = con.execute(
            f"INSERT INTO span_keys SELECT DISTINCT {SPAN_KEY_SQL} FROM batch "
            "ON CONFLICT DO NOTHING RETURNING k"
        ).to_arrow_table()
        with _registered(con, {"fresh_keys": fresh}):
            con.execute(
                f"""CREATE OR REPLACE TEMP TABLE fresh_rows AS
                SELECT * EXCLUDE (_k, _n) FROM (
                    SELECT *, {SPAN_KEY_SQL} AS _k,
                           row_number() OVER (PARTITION BY {SPAN_KEY_SQL}) AS _n
                    FROM batch)
                WHERE _n = 1 AND _k IN (SELECT k::HUGEINT FROM fresh_keys)"""
            )
            con.execute("INSERT INTO requests SELECT * FROM fresh_rows")
            touched = rollups.apply(con, "fresh_rows", self._max_dimension_values)
            con.execute("DROP TABLE fresh_rows")
            self._insert_side(side)
        return fresh.num_rows, touched

    def _count_pending(self) -> bool:
        # fetchall: a result not read to its end keeps its transaction open, stopping checkpoints.
        ((count,),) = self._con.execute("SELECT count(*) FROM pending").fetchall()
        return bool(count)

    # ---- attribution across requests --------------------------------------------------------

    def _resolve_pending(self, traces: set[str] | None) -> None:
        """``_finalise`` that logs instead of stopping the writer: the rows stay pending and retry."""
        try:
            self._finalise(traces)
        except Exception:  # noqa: BLE001 - the writer thread must keep running
            log.exception("attributing waiting spans failed; they stay pending and are tried again")

    def _finalise(self, traces: set[str] | None) -> None:
        """Finalise the pending rows whose ancestry is now known, or whose deadline has passed.

        ``traces``: the traces a commit just brought facts or pending rows for (None: only the
        deadlines). A row takes the user and session of its nearest ancestor that has one, and the
        properties it lacks from its ancestors (nearer first); its own values always win. Rows go
        to ``requests`` (once per span, as every row) and leave ``pending`` in one transaction.
        """
        con = self._con
        now_us = time.time_ns() // 1000
        touched = pa.table({"trace_id": sorted(traces)}) if traces else None
        scope = "deadline_us <= $now" + (" OR trace_id IN (SELECT trace_id FROM touched)" if traces else "")
        with _registered(con, {"touched": touched}):
            steps = con.execute(
                f"""WITH RECURSIVE
                    cand AS (SELECT DISTINCT trace_id, span_id, waiting_for, deadline_us FROM pending
                             WHERE {scope}),
                    facts AS (SELECT DISTINCT ON (trace_id, span_id) * FROM span_facts
                              WHERE trace_id IN (SELECT trace_id FROM cand)),
                    walk(trace_id, span_id, anc, depth) AS (
                        SELECT trace_id, span_id, waiting_for, 1 FROM cand
                        UNION
                        SELECT w.trace_id, w.span_id, f.parent_span_id, w.depth + 1
                        FROM walk AS w JOIN facts AS f ON f.trace_id = w.trace_id AND f.span_id = w.anc
                        WHERE f.parent_span_id IS NOT NULL AND w.depth < 64)
                SELECT w.trace_id, w.span_id, c.deadline_us <= $now AS expired, w.depth,
                       f.span_id IS NOT NULL AS known, f.parent_span_id IS NULL AS root,
                       f.user_id, f.session_id, f.properties
                FROM walk AS w JOIN cand AS c USING (trace_id, span_id)
                LEFT JOIN facts AS f ON f.trace_id = w.trace_id AND f.span_id = w.anc
                ORDER BY w.trace_id, w.span_id, w.depth""",
                {"now": now_us},
            ).fetchall()
        resolved = _resolutions(steps)
        if resolved:
            keys = pa.table(
                {name: [r[i] for r in resolved] for i, name in enumerate(_RESOLVED_COLUMNS)},
                schema=_RESOLVED_SCHEMA,
            )
            with _registered(con, {"resolved": keys}):
                final = con.execute(
                    """SELECT p.* EXCLUDE (waiting_for, deadline_us)
                              REPLACE (coalesce(p.user_id, r.user_id) AS user_id,
                                       coalesce(p.session_id, r.session_id) AS session_id,
                                       map_concat(r.properties, coalesce(p.properties, MAP {})) AS properties)
                       FROM (SELECT DISTINCT ON (trace_id, span_id) * FROM pending) AS p
                       JOIN resolved AS r USING (trace_id, span_id)"""
                ).to_arrow_table()
            stored = self._insert(final, finalised=keys.select(["trace_id", "span_id"]))
            self._stats.add(
                spans_stored=stored,
                spans_duplicate=final.num_rows - stored,
                spans_attributed=sum(1 for r in resolved if r[2] is not None),
            )
        self._has_pending = self._count_pending()


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    """(name, type) of each column of ``table``, in order."""
    rows = con.execute(
        "SELECT column_name, data_type FROM duckdb_columns() "
        "WHERE table_name = ? AND schema_name = 'main' ORDER BY column_index",
        [table],
    ).fetchall()
    return [(name, kind) for name, kind in rows]


def _add_request_columns(con: duckdb.DuckDBPyConnection) -> None:
    """Upgrade: append the columns `requests` lacks (its old rows get NULL there)."""
    present = {name for name, _ in _columns(con, "requests")}
    for name, kind in ADDED_COLUMNS:
        if name not in present:
            log.info("upgrading requests: adding column %s", name)
            con.execute(f"ALTER TABLE requests ADD COLUMN {name} {kind}")


def _match_pending_columns(con: duckdb.DuckDBPyConnection) -> None:
    """Upgrade: rebuild `pending` as the columns of `requests` followed by its own, keeping its rows.

    Rows move between the two tables with ``SELECT *``, so the column order must agree (an
    ALTER TABLE would append the new columns after waiting_for and deadline_us).
    """
    pending = dict(_columns(con, "pending"))
    wanted = [*_columns(con, "requests"), *((name, pending[name]) for name in PENDING_COLUMNS)]
    if list(pending) == [name for name, _ in wanted]:
        return
    log.info("upgrading pending to the columns of requests")
    select = ", ".join(name if name in pending else f"NULL::{kind} AS {name}" for name, kind in wanted)
    con.execute(f"CREATE TABLE pending_upgraded AS SELECT {select} FROM pending")
    con.execute("DROP TABLE pending")
    con.execute("ALTER TABLE pending_upgraded RENAME TO pending")


_RESOLVED_COLUMNS = ("trace_id", "span_id", "user_id", "session_id", "properties")
_RESOLVED_SCHEMA = pa.schema(
    [(name, pa.string()) for name in _RESOLVED_COLUMNS[:4]]
    + [("properties", pa.map_(pa.string(), pa.string()))]
)


def _resolutions(steps: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """(trace_id, span_id, user_id, session_id, properties) of each pending row that is done.

    ``steps`` are the walk's rows in order: per row, its ancestors from the nearest. A row is done
    when an ancestor gives it a user, when its ancestry reaches a root, or when it has expired.
    """
    out = []
    for (trace_id, span_id), rows in itertools.groupby(steps, key=lambda r: (r[0], r[1])):
        user = session = None
        props: dict[str, str] = {}
        complete = False
        walk = list(rows)
        expired = bool(walk[0][2])
        for _, _, _, _, known, root, f_user, f_session, f_props in walk:
            if not known:
                break  # the chain is broken here: that ancestor has not arrived (yet)
            user = user or f_user
            session = session or f_session
            for key, value in (f_props or {}).items():
                props.setdefault(key, value)  # nearer ancestors came first
            if root:
                complete = True
                break
        if user is not None or complete or expired:
            out.append((trace_id, span_id, user, session, list(props.items())))
    return out


def _rows(pending: _Pending) -> int:
    return pending.table.num_rows + (pending.waiting.num_rows if pending.waiting is not None else 0)


def _concat(parts: list[pa.Table | None]) -> pa.Table | None:
    present = [p for p in parts if p is not None and p.num_rows]
    if not present:
        return None
    return present[0] if len(present) == 1 else pa.concat_tables(present)


class _Unsettled(duckdb.Error):
    """The writer's connection may be inconsistent (a failed COMMIT or ROLLBACK): reopen first."""


def _lock_down(con: duckdb.DuckDBPyConnection) -> None:
    """From here on SQL can reach no file, network or extension, and nothing can undo that. And no
    checkpoint at shutdown: ``close`` checkpoints itself, and an instance left behind by
    ``_reopen`` (its memory maybe inconsistent) must write nothing."""
    con.execute("PRAGMA disable_checkpoint_on_shutdown")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


@contextlib.contextmanager
def _registered(con: duckdb.DuckDBPyConnection, tables: dict[str, pa.Table | None]) -> Iterator[None]:
    """The tables (those not None) as views of ``con`` for the block. A view a failed unregister
    left behind (it can run out of memory too) is replaced, not an error for ever after."""
    names = [name for name, table in tables.items() if table is not None]
    try:
        for name in names:
            with contextlib.suppress(duckdb.Error):
                con.unregister(name)
            con.register(name, tables[name])
        yield
    finally:
        for name in names:
            with contextlib.suppress(duckdb.Error):
                con.unregister(name)


def _first_line(exc: BaseException) -> str:
    """The first line of a DuckDB error (the rest is advice on settings)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
