"""The store: the ``requests`` table in DuckDB, written by one thread with group commit.

Front-ends hand ``write`` an Arrow table and wait on the returned future; it resolves only after
the transaction holding those rows has committed (DuckDB syncs its WAL on commit). The writer
thread takes everything queued while the previous commit ran and commits it together, so many
small exports share one disk sync.

Each (trace_id, span_id) is stored once (``dedupe.py``: a key per span of the last two days,
``requests`` itself beyond), and ``inserts.py`` writes the keys, the rows and their rollups
(``rollups.py``) in one transaction, so the aggregates are exactly the sum of the stored rows.
``groups.py`` picks the writes of each commit: small ones before big ones queued earlier, and
compaction and checkpoints wait while writes do (within bounds), so a one-span export never
waits for a big one. By the clock the writer also drops old attribution facts and span keys and,
while writes fail, probes whether it can commit.

Around it: ``schema.py`` creates and upgrades the tables; ``writer_connection.py`` owns the
connection (transactions that always end, the readers' memory kept from the writer's, reopening
after DuckDB fails inconsistently, checkpoints); ``counterparts.py`` pairs the waiting provider
SDK spans with their calls' spans and ``attribution.py`` finds the pending rows that are done.
The database is locked down once the schema is ready: no file, network or extension access and
no configuration changes, for this connection and every reader cursor (``reader()``), which is
what makes the read-only SQL endpoint safe.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import cast

import duckdb
import pyarrow as pa

from user_metrics.errors import InvalidInput, Overloaded, Unavailable
from user_metrics.stats import Stats
from user_metrics.store import attribution, counterparts, dedupe, dims, groups, inserts, rollups
from user_metrics.store.groups import Pending
from user_metrics.store.writer_connection import (
    CHECKPOINT_WAL_BYTES,
    DATA_ERRORS,
    FORCE_CHECKPOINT_WAL_BYTES,
    T,
    WriterConnection,
    first_line,
    registered,
)

log = logging.getLogger(__name__)

# How often the writer drops attribution facts older than twice the attribution window and span
# keys past the dedupe horizon, and how often, while a write is failing, it tries a small write
# to learn whether it can commit again.
PURGE_EVERY_S = 60.0
PROBE_EVERY_S = 2.0


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
        outbox: bool = False,
    ) -> None:
        self.path = str(path)
        self._outbox = outbox  # lake mode: stored rows go into lake_outbox too (shipper.py)
        self._held: str | None = None  # why writes are refused for now (hold())
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
        self._db = WriterConnection(
            self.path,
            stats,
            memory_limit_mib=memory_limit_mib,
            max_dimension_values=max_dimension_values,
            on_reopen=self._reopened,
        )
        self._window_us = int(attribution_window_seconds * 1e6)
        self._reopened()  # _has_pending, and _keys_from: span_keys has the keys of spans since then
        self._last_purge = time.monotonic()
        self._last_probe = 0.0
        self._reader_lock = threading.Lock()
        self._queue: queue.Queue[Pending | object] = queue.Queue()
        self._backlog: list[Pending] = []  # taken from the queue by the writer, not yet committed
        self._closed = False
        self._close_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    def reader(self) -> duckdb.DuckDBPyConnection:
        """A new cursor of the database for one reader thread (close it when done).

        It is a ``readers.Reader``, which behaves as the DuckDB cursor it wraps; the store may
        interrupt its query when the writer needs memory.
        """
        with self._reader_lock:
            if self._closed:
                raise Unavailable("the store is shutting down")
        return cast(duckdb.DuckDBPyConnection, self._db.readers.open())

    def health(self) -> str | None:
        """None while the writer can commit; else why it cannot (what /healthz answers)."""
        if not self._closed and not self._thread.is_alive():
            return "the store's writer thread has stopped"
        return self._db.failure

    @property
    def queue(self) -> tuple[int, int]:
        """(batches, rows) waiting for the writer."""
        return self._queue.qsize() + len(self._backlog), self._queued_rows

    def property_keys(self) -> set[str]:
        """Every custom property key stored so far (``dims.property_keys`` on a reader)."""
        con = self.reader()
        try:
            return set(dims.property_keys(con))
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
        if self._held is not None:  # the lake lags (shipper.py): counted as the queue's refusals are
            self._stats.refuse("lake_lag")
        if self._closed or not self._thread.is_alive() or self._held is not None:
            future.set_exception(Unavailable(self._held or self.health() or "the store is shutting down"))
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
        self._queue.put(Pending(table, future, waiting, facts))
        return future

    def hold(self, reason: str | None) -> None:
        """Refuse writes with Unavailable(``reason``) until ``hold(None)`` (shipper.py: the lake lags)."""
        self._held = reason

    def close(self) -> None:
        """Commit everything queued, checkpoint, and close the file."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(_STOP)
        self._thread.join()
        groups.refuse_queued(self._queue, Unavailable("the store is shutting down"))
        try:
            self._compact()
        finally:
            self._db.close()

    def run(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> Future[T]:
        """``work`` in one transaction of its own on the writer thread; the future: its result once done."""
        job = groups.Job(work, Future())
        if self._closed or not self._thread.is_alive():
            job.future.set_exception(Unavailable(self.health() or "the store is shutting down"))
        else:
            self._queue.put(job)
        return job.future

    # ---- the writer thread --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._serve_queue()
        except BaseException as exc:  # noqa: BLE001 - health() reports it; exporters get Unavailable
            log.critical("the store's writer stopped: %s", exc, exc_info=True)
            self._db.failure = f"the store's writer stopped: {exc}"
            for pending in self._backlog:
                pending.future.set_exception(Unavailable(self._db.failure))
            groups.refuse_queued(self._queue, Unavailable("the store is shutting down"))
            raise

    def _serve_queue(self) -> None:
        backlog = self._backlog
        stopping = False
        while backlog or not stopping:
            self._housekeeping()
            if not backlog and not stopping:
                try:
                    item = self._queue.get(timeout=1.0 if self._has_pending or self._db.failure else 5.0)
                except queue.Empty:
                    if self._has_pending:
                        self._resolve_pending(None)  # the clock alone finalises spans past their deadline
                    continue
                stopping = self._take(item)
            while not stopping:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                stopping = self._take(item)
            if backlog:
                self._commit(groups.next_group(backlog, self._max_group_rows))
            # While writes wait, compaction and checkpoints wait for them, up to twice their due.
            busy = not self._queue.empty() or any(groups.rows(p) <= groups.SMALL_WRITE_ROWS for p in backlog)
            if self._compaction_due(2 if busy else 1):
                self._compact()
            self._db.maybe_checkpoint(FORCE_CHECKPOINT_WAL_BYTES if busy else CHECKPOINT_WAL_BYTES)

    def _take(self, item: object) -> bool:
        """A queue item: a write joins the backlog, a job runs now; True: the stop."""
        if isinstance(item, Pending):
            self._backlog.append(item)
        elif isinstance(item, groups.Job):
            item.run(self._db.in_transaction)
        return item is _STOP

    def _compaction_due(self, factor: int) -> bool:
        elapsed = time.monotonic() - self._last_compaction
        return self._rows_since_compaction >= factor * self._compact_after_rows or (
            bool(self._dirty) and elapsed >= factor * self._compact_after_seconds
        )

    def _housekeeping(self) -> None:
        """What the writer does by the clock: drop old attribution facts and span keys, probe a
        failing store."""
        now = time.monotonic()
        if now - self._last_purge >= PURGE_EVERY_S:
            self._last_purge = now
            cut = time.time_ns() // 1000 - 2 * self._window_us
            try:  # keys_from only once committed (a reopen reads it from the database)
                _, self._keys_from = self._db.in_transaction(
                    lambda con: (attribution.purge_facts(con, cut), dedupe.purge(con))
                )
            except duckdb.Error:
                log.exception("dropping old attribution facts and span keys failed; tried again in a minute")
        if self._db.failure is not None and now - self._last_probe >= PROBE_EVERY_S:
            self._last_probe = now
            self._db.probe()

    def _compact(self) -> None:
        """Merge the rollup rows written since the last time (failure only costs query speed)."""
        touched, self._dirty = self._dirty, rollups.Touched(set(), set())
        self._rows_since_compaction = 0
        self._last_compaction = time.monotonic()
        started = time.perf_counter()

        def once() -> int:  # registered in with_memory: registering may need memory
            with registered(self._con, rollups.touched_keys(touched)):
                return self._db.transaction(lambda con: rollups.compact(con, touched))

        try:
            removed = self._db.with_memory(once)
        except duckdb.Error:
            log.exception("compacting the rollups failed; they stay correct, only larger")
            self._dirty |= touched
            return
        self._stats.add(
            compactions=1, compaction_seconds=time.perf_counter() - started, rollup_rows_merged=removed
        )

    def _commit(self, group: list[Pending]) -> None:
        started = time.perf_counter()
        rows = sum(groups.rows(p) for p in group)
        try:
            self._commit_group(group, rows, started)
        finally:
            with self._queue_lock:
                self._queued_rows -= rows

    def _commit_group(self, group: list[Pending], rows: int, started: float) -> None:
        try:
            table = group[0].table if len(group) == 1 else pa.concat_tables([p.table for p in group])
            stored = self._insert(
                table, groups.concat([p.waiting for p in group]), groups.concat([p.facts for p in group])
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
                self._db.failure = self._db.failure or f"the last commit failed: {first_line(exc)}"
                error = Unavailable(f"could not store the batch: {first_line(exc)}")
            for pending in group:
                pending.future.set_exception(error)
            return
        self._db.failure = None
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
        parts = [part for p in group for part in (p.waiting, p.facts) if part is not None]
        traces = {t for part in parts for t in part["trace_id"].to_pylist()}
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
        if waiting is not None:
            self._has_pending = True
        return self._db.with_memory(lambda: self._insert_once(batch, side))

    def _insert_once(self, batch: pa.Table, side: dict[str, pa.Table | None]) -> int:
        with registered(self._con, {"batch": batch, **side}):  # may need memory: in with_memory
            past = dedupe.past(batch, self._keys_from)
            stored, touched = inserts.insert(
                self._db.transaction,
                batch,
                side,
                self._max_dimension_values,
                self._keys_from,
                past,
                self._outbox,
            )
        self._stats.add(spans_past_horizon=past)
        # Only once committed: a rolled-back try must not count (nor leave cells to compact).
        self._dirty |= touched
        self._rows_since_compaction += stored
        self._stats.cut("max_dimension_values", touched.folded)
        return stored

    @property
    def _con(self) -> duckdb.DuckDBPyConnection:
        return self._db.con

    def _reopened(self) -> None:
        self._has_pending, self._keys_from = self._count_pending(), dedupe.keys_from(self._con)

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
        """Pair the waiting provider SDK spans with their calls' spans (``counterparts.settle``, in
        a transaction of its own); then store the pending rows that are done
        (``attribution.resolved_rows``), each once, and take them out of ``pending`` in the same
        transaction."""
        paired = self._db.in_transaction(lambda con: counterparts.settle(con, traces))
        self._stats.add(spans_skipped=paired)  # not calls of their own, as when paired in one request
        done = attribution.resolved_rows(self._con, traces)
        if done is not None:
            final, keys, attributed = done
            stored = self._insert(final, finalised=keys)
            self._stats.add(
                spans_stored=stored, spans_duplicate=final.num_rows - stored, spans_attributed=attributed
            )
        self._has_pending = self._count_pending()
