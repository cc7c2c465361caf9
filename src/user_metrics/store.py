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
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from user_metrics import query, rollups
from user_metrics.errors import InvalidInput, Overloaded, Unavailable
from user_metrics.stats import Stats

log = logging.getLogger(__name__)

SCHEMA_VERSION = "8"  # 2 rollups, 3 hourly per user, 4 append-only, 5 totals, 6 pending, 8 dims bound

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
        config: dict[str, str | bool | int | float | list[str]] = (
            {"memory_limit": f"{memory_limit_mib}MiB"} if memory_limit_mib else {}
        )
        try:
            self._con = duckdb.connect(self.path, config=config)
        except duckdb.Error as exc:
            raise Unavailable(f"cannot open database {self.path}: {exc}") from exc
        self._init_schema()
        self._window_us = int(attribution_window_seconds * 1e6)
        self._has_pending = bool((self._con.execute("SELECT count(*) FROM pending").fetchone() or (0,))[0])
        self._last_purge = time.monotonic()
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
        if version not in (None, "1", "2", "3", "4", "5", "6", SCHEMA_VERSION):
            con.execute("ROLLBACK")
            raise Unavailable(f"{self.path} has schema version {version}, this build needs {SCHEMA_VERSION}")
        if version in ("1", "2", "3", "4", "5", "6"):
            log.info("upgrading %s to schema %s: building rollups from requests", self.path, SCHEMA_VERSION)
            rollups.rebuild(con, self._max_dimension_values)
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
        if self._closed:
            future.set_exception(Unavailable("the store is shutting down"))
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
            try:
                item = self._queue.get(timeout=1.0 if self._has_pending else None)
            except queue.Empty:
                self._resolve_pending(None)  # the clock alone finalises spans past their deadline
                continue
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
        rows = sum(p.table.num_rows + (p.waiting.num_rows if p.waiting is not None else 0) for p in group)
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
        con = self._con
        con.register("batch", batch)
        side = {"waiting": waiting, "facts": facts, "finalised": finalised}
        for name, part in side.items():
            if part is not None:
                con.register(name, part)
        try:
            con.execute("BEGIN")
            try:
                con.execute(f"INSERT INTO span_keys SELECT {SPAN_KEY_SQL} FROM batch")
                con.execute("INSERT INTO requests SELECT * FROM batch")
                touched = rollups.apply(con, "batch", self._max_dimension_values)
                self._insert_side(side)
                con.execute("COMMIT")
                self._written(touched, batch.num_rows)
                return batch.num_rows
            except duckdb.ConstraintException:
                con.execute("ROLLBACK")
            return self._insert_new_only(side)
        except BaseException:
            with contextlib.suppress(duckdb.Error):  # no transaction open is fine
                con.execute("ROLLBACK")
            raise
        finally:
            con.unregister("batch")
            for name, part in side.items():
                if part is not None:
                    con.unregister(name)

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

    def _insert_new_only(self, side: dict[str, pa.Table | None]) -> int:
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
            touched = rollups.apply(con, "fresh_rows", self._max_dimension_values)
            con.execute("DROP TABLE fresh_rows")
            self._insert_side(side)
        finally:
            con.unregister("fresh_keys")
        con.execute("COMMIT")
        self._written(touched, fresh.num_rows)
        return fresh.num_rows

    def _written(self, touched: rollups.Touched, rows: int) -> None:
        self._dirty |= touched
        self._rows_since_compaction += rows
        self._stats.cut("max_dimension_values", touched.folded)

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
        try:
            if traces:
                con.register("touched", pa.table({"trace_id": sorted(traces)}))
                scope = "deadline_us <= $now OR trace_id IN (SELECT trace_id FROM touched)"
            else:
                scope = "deadline_us <= $now"
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
        finally:
            if traces:
                con.unregister("touched")
        resolved = _resolutions(steps)
        if resolved:
            keys = pa.table(
                {name: [r[i] for r in resolved] for i, name in enumerate(_RESOLVED_COLUMNS)},
                schema=_RESOLVED_SCHEMA,
            )
            con.register("resolved", keys)
            try:
                final = con.execute(
                    """SELECT p.* EXCLUDE (waiting_for, deadline_us)
                              REPLACE (coalesce(p.user_id, r.user_id) AS user_id,
                                       coalesce(p.session_id, r.session_id) AS session_id,
                                       map_concat(r.properties, coalesce(p.properties, MAP {})) AS properties)
                       FROM (SELECT DISTINCT ON (trace_id, span_id) * FROM pending) AS p
                       JOIN resolved AS r USING (trace_id, span_id)"""
                ).to_arrow_table()
            finally:
                con.unregister("resolved")
            stored = self._insert(final, finalised=keys.select(["trace_id", "span_id"]))
            self._stats.add(
                spans_stored=stored,
                spans_duplicate=final.num_rows - stored,
                spans_attributed=sum(1 for r in resolved if r[2] is not None),
            )
        if time.monotonic() - self._last_purge >= 60:
            self._last_purge = time.monotonic()
            cut = now_us - 2 * self._window_us
            con.execute("DELETE FROM span_facts WHERE seen_us < $cut", {"cut": cut})
        self._has_pending = bool((con.execute("SELECT count(*) FROM pending").fetchone() or (0,))[0])


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


def _concat(parts: list[pa.Table | None]) -> pa.Table | None:
    present = [p for p in parts if p is not None and p.num_rows]
    if not present:
        return None
    return present[0] if len(present) == 1 else pa.concat_tables(present)
