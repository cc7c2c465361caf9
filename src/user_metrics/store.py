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
import logging
import math
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from user_metrics import rollups
from user_metrics.errors import InvalidInput, Overloaded, Unavailable
from user_metrics.stats import Stats

log = logging.getLogger(__name__)

SCHEMA_VERSION = "5"  # 2 rollups, 3 hourly per user, 4 append-only, 5 all-time totals

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
    properties         MAP(VARCHAR, VARCHAR)
)
"""
OTHER_DDL = (
    "CREATE TABLE IF NOT EXISTS span_keys (k HUGEINT PRIMARY KEY)",
    "CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)",
)
# 32 + 16 hex characters, so the concatenation is unambiguous; >> 1 makes md5's 128 bits fit HUGEINT.
SPAN_KEY_SQL = "(md5_number(trace_id || span_id) >> 1)::HUGEINT"


# Errors caused by the rows themselves (a value DuckDB cannot hold), not by the database.
DATA_ERRORS = (duckdb.DataError, pa.ArrowException, UnicodeError, OverflowError)


@dataclass
class _Pending:
    table: pa.Table
    future: Future[int]


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
    ) -> None:
        self.path = str(path)
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
        config: dict[str, str | bool | int | float | list[str]] = (
            {"memory_limit": f"{memory_limit_mib}MiB"} if memory_limit_mib else {}
        )
        try:
            self._con = duckdb.connect(self.path, config=config)
        except duckdb.Error as exc:
            raise Unavailable(f"cannot open database {self.path}: {exc}") from exc
        self._init_schema()
        # Readers get cursors of their own, made from a connection the writer thread never uses,
        # one at a time: a DuckDB connection object is not safe to share between threads.
        self._reader_root = self._con.cursor()
        self._reader_lock = threading.Lock()
        self._queue: queue.Queue[_Pending | object] = queue.Queue()
        self._closed = False
        self._close_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    def _init_schema(self) -> None:
        con = self._con
        con.execute("BEGIN")
        con.execute(REQUESTS_DDL)
        for ddl in OTHER_DDL:
            con.execute(ddl)
        row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = row[0] if row else None
        if version not in (None, "1", "2", "3", "4", SCHEMA_VERSION):
            con.execute("ROLLBACK")
            raise Unavailable(f"{self.path} has schema version {version}, this build needs {SCHEMA_VERSION}")
        if version in ("1", "2", "3", "4"):
            log.info("upgrading %s to schema %s: building rollups from requests", self.path, SCHEMA_VERSION)
            rollups.rebuild(con)
        for ddl in rollups.DDL:
            con.execute(ddl)
        con.execute(
            "INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT DO UPDATE SET value = excluded.value",
            [SCHEMA_VERSION],
        )
        con.execute("COMMIT")
        # From here on SQL can reach no file, network or extension, and nothing can undo that.
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")

    def reader(self) -> duckdb.DuckDBPyConnection:
        """A new connection to the same database for one reader thread (close it when done)."""
        with self._reader_lock:
            if self._closed:
                raise Unavailable("the store is shutting down")
            return self._reader_root.cursor()

    @property
    def queue(self) -> tuple[int, int]:
        """(batches, rows) waiting for the writer."""
        return self._queue.qsize(), self._queued_rows

    def property_keys(self) -> set[str]:
        """Every custom property key stored so far."""
        con = self.reader()
        try:
            rows = con.execute("SELECT DISTINCT unnest(map_keys(properties)) FROM dims").fetchall()
        finally:
            con.close()
        return {key for (key,) in rows}

    def write(self, table: pa.Table) -> Future[int]:
        """Queue rows for the next commit; the future gives the number of new rows once durable.

        The future fails at once with ``Overloaded`` when the queue holds ``max_queue_rows`` rows
        (a table larger than the whole limit is still taken when the queue is empty).
        """
        future: Future[int] = Future()
        if self._closed:
            future.set_exception(Unavailable("the store is shutting down"))
            return future
        rows = table.num_rows
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
        self._queue.put(_Pending(table, future))
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
            self._con.execute("CHECKPOINT")
        finally:
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
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is _STOP:
                break
            assert isinstance(item, _Pending)
            group = [item]
            rows = item.table.num_rows
            while rows < self._max_group_rows:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stopping = True
                    break
                assert isinstance(more, _Pending)
                group.append(more)
                rows += more.table.num_rows
            self._commit(group)
            if self._rows_since_compaction >= self._compact_after_rows or (
                self._dirty and time.monotonic() - self._last_compaction >= self._compact_after_seconds
            ):
                self._compact()

    def _compact(self) -> None:
        """Merge the rollup rows written since the last time (failure only costs query speed)."""
        touched, self._dirty = self._dirty, rollups.Touched(set(), set())
        self._rows_since_compaction = 0
        self._last_compaction = time.monotonic()
        started = time.perf_counter()
        try:
            removed = rollups.compact(self._con, touched)
        except duckdb.Error:
            log.exception("compacting the rollups failed; they stay correct, only larger")
            self._dirty |= touched
            return
        self._stats.add(
            compactions=1, compaction_seconds=time.perf_counter() - started, rollup_rows_merged=removed
        )

    def _commit(self, group: list[_Pending]) -> None:
        started = time.perf_counter()
        rows = sum(p.table.num_rows for p in group)
        try:
            self._commit_group(group, rows, started)
        finally:
            with self._queue_lock:
                self._queued_rows -= rows

    def _commit_group(self, group: list[_Pending], rows: int, started: float) -> None:
        try:
            table = group[0].table if len(group) == 1 else pa.concat_tables([p.table for p in group])
            stored = self._insert(table)
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
                error = Unavailable(f"could not store the batch: {exc}")
            for pending in group:
                pending.future.set_exception(error)
            return
        seconds = time.perf_counter() - started
        self._commit_rows_per_s = max(100.0, rows / max(seconds, 1e-3))
        self._stats.add(
            commits=1,
            commit_seconds=seconds,
            spans_stored=stored,
            spans_duplicate=rows - stored,
        )
        for pending in group:
            pending.future.set_result(pending.table.num_rows)

    def _insert(self, batch: pa.Table) -> int:
        con = self._con
        con.register("batch", batch)
        try:
            con.execute("BEGIN")
            try:
                con.execute(f"INSERT INTO span_keys SELECT {SPAN_KEY_SQL} FROM batch")
                con.execute("INSERT INTO requests SELECT * FROM batch")
                touched = rollups.apply(con, "batch")
                con.execute("COMMIT")
                self._written(touched, batch.num_rows)
                return batch.num_rows
            except duckdb.ConstraintException:
                con.execute("ROLLBACK")
            return self._insert_new_only()
        except BaseException:
            with contextlib.suppress(duckdb.Error):  # no transaction open is fine
                con.execute("ROLLBACK")
            raise
        finally:
            con.unregister("batch")

    def _insert_new_only(self) -> int:
        con = self._con
        con.execute("BEGIN")
        fresh = con.execute(
            f"INSERT INTO span_keys SELECT DISTINCT {SPAN_KEY_SQL} FROM batch "
            "ON CONFLICT DO NOTHING RETURNING k"
        ).to_arrow_table()
        con.register("fresh_keys", fresh)
        try:
            con.execute(
                f"""CREATE OR REPLACE TEMP TABLE fresh_rows AS
                SELECT * EXCLUDE (_k, _n) FROM (
                    SELECT *, {SPAN_KEY_SQL} AS _k,
                           row_number() OVER (PARTITION BY {SPAN_KEY_SQL}) AS _n
                    FROM batch)
                WHERE _n = 1 AND _k IN (SELECT k::HUGEINT FROM fresh_keys)"""
            )
            con.execute("INSERT INTO requests SELECT * FROM fresh_rows")
            touched = rollups.apply(con, "fresh_rows")
            con.execute("DROP TABLE fresh_rows")
        finally:
            con.unregister("fresh_keys")
        con.execute("COMMIT")
        self._written(touched, fresh.num_rows)
        return fresh.num_rows

    def _written(self, touched: rollups.Touched, rows: int) -> None:
        self._dirty |= touched
        self._rows_since_compaction += rows
