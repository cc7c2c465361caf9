"""The shipper: moves the rows a node committed locally into the lake, each exactly once.

In lake mode an Export is acknowledged when its rows are committed to the node's own DuckDB
file, as in single-file mode; in that same transaction every row stored in ``requests`` is also
stored in ``lake_outbox`` (``inserts.py``). A thread per node (``Shipper``) then, every
``interval_s``, takes the outbox's rows ``BATCH_ROWS`` at a time (oldest first) and for each batch:

1. opens a lake write transaction that holds the turn (``Lake.in_turn``: every lake write of
   every node is serialized; a conflict is retried from a fresh snapshot);
2. keeps the rows the lake's ``requests`` does not have yet: an anti-join on (start_time,
   trace_id, span_id), bounded by the batch's first and last start time written as literals, so
   that DuckLake skips the data files whose min/max statistics lie outside (a re-sent copy of a
   span carries the start time of the first: OTLP re-sends the same bytes), and one row per span
   within the batch;
3. appends those rows to the lake's ``requests`` and to its rollups, by the local writer's own
   ``rollups.apply`` (keys allocated as max(key) + row_number(), ``dims.insert_new``);
4. commits; then deletes the batch's rows from the local outbox, by (trace_id, span_id), in a
   transaction of the store's writer thread (``Store.run``).

A crash between 4's commit and its delete ships the batch again, and step 2 finds every row: it
counts once (``Stats.lake_duplicate_rows``). So does a span that reached two nodes (the
Collector's backend set changed): whichever ships second finds it. A failed ship is retried,
pausing ``interval_s`` doubled per failure up to ``MAX_PAUSE_S`` (``Stats.lake_ship_failures``).

**Visibility.** A row is in the lake about ``interval_s`` plus one ship's time after its Export
was acknowledged. **Bounded.** ``lag_seconds`` is how long ago the shipper last found that
everything committed before that instant was in the lake (an upper bound on the oldest outbox
row's age). Past ``max_lag_s`` (the lake unreachable, PostgreSQL restarting) the store refuses
Exports with a retryable error (``Store.hold``: UNAVAILABLE / HTTP 503) until the outbox has
been shipped, so an outage of the lake turns into retries at the exporters, never into a local
backlog without bound, nor into loss. A watcher thread checks the lag every ``WATCH_S``, so the
bound holds while a ship is stuck.

**Compaction** of the lake runs here too, on the node holding the ``compaction`` lease
(``lake_compaction.py``), every ``compact_every_s``; it is never on the ack path.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from datetime import datetime

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from user_metrics.errors import Unavailable
from user_metrics.stats import Stats
from user_metrics.store import lake_compaction, rollups
from user_metrics.store.lake import Lake, redact
from user_metrics.store.writer import Store
from user_metrics.store.writer_connection import first_line, registered

log = logging.getLogger(__name__)

BATCH_ROWS = 50_000  # rows per lake transaction
MAX_PAUSE_S = 30.0  # the longest pause between two failed ships
WATCH_S = 0.5  # how often the lag is checked against max_lag_s
COMPACT_EVERY_S = 60.0

_FRESH_SQL = """CREATE OR REPLACE TEMP TABLE lake_fresh AS
SELECT * EXCLUDE (_n) FROM (
    SELECT *, row_number() OVER (PARTITION BY trace_id, span_id ORDER BY start_time) AS _n
    FROM outbox_batch) AS b
WHERE _n = 1 AND NOT EXISTS (
    SELECT 1 FROM requests AS r
    WHERE r.start_time BETWEEN {lo} AND {hi}
      AND r.start_time = b.start_time AND r.trace_id = b.trace_id AND r.span_id = b.span_id)"""


def append(con: duckdb.DuckDBPyConnection, batch: pa.Table, max_dimension_values: int) -> int:
    """Steps 2 and 3 (inside the caller's turn transaction): the rows of ``batch`` (``requests``
    rows) that the lake lacks, once each, into its ``requests`` and rollups; how many."""
    if not batch.num_rows:
        return 0
    bounds = pc.min_max(batch["start_time"]).as_py()
    lo, hi = (_timestamp_literal(bounds[end]) for end in ("min", "max"))
    with registered(con, {"outbox_batch": batch}):
        con.execute(_FRESH_SQL.format(lo=lo, hi=hi))
        ((new,),) = con.execute("SELECT count(*) FROM lake_fresh").fetchall()
        if new:
            con.execute("INSERT INTO requests SELECT * FROM lake_fresh ORDER BY start_time")
            rollups.apply(con, "lake_fresh", max_dimension_values, lake=True)
        con.execute("DROP TABLE lake_fresh")
    return int(new)


def _timestamp_literal(value: datetime) -> str:
    return f"TIMESTAMPTZ '{value.isoformat()}'"


class Shipper:
    """One node's thread that ships its outbox to the lake (see the module's docstring)."""

    def __init__(
        self,
        store: Store,
        lake: Lake,
        stats: Stats,
        *,
        interval_s: float,
        max_lag_s: float,
        node: str,
        batch_rows: int = BATCH_ROWS,
        compact_every_s: float = COMPACT_EVERY_S,
    ) -> None:
        self._store = store
        self._lake = lake
        self._stats = stats
        self._interval_s = interval_s
        self._max_lag_s = max_lag_s
        self._node = node
        self._batch_rows = batch_rows
        self._compact_every_s = compact_every_s
        self._caught_up = time.monotonic()  # everything committed before it is in the lake
        self._outbox_rows = 0
        self._held = False
        self._ship_lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_compaction = time.monotonic()
        self._grace_until = 0.0

    def start(self) -> None:
        for target, name in ((self._run, "lake-shipper"), (self._watch, "lake-lag-watch")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, grace: float = 10.0) -> None:
        """Ship what is left (trying for up to ``grace`` seconds), give the lease up, stop."""
        self._grace_until = time.monotonic() + grace
        self._stopping.set()
        for thread in self._threads:
            thread.join(grace + 10.0)
            if thread.is_alive():
                log.warning(
                    "the lake shipper did not stop in time; %d rows wait in the outbox", self._outbox_rows
                )
        with contextlib.suppress(Unavailable, duckdb.Error):
            self._lake.in_turn(lambda con: lake_compaction.release(con, lake_compaction.LEASE, self._node))

    def lag_seconds(self) -> float:
        """Seconds since everything committed locally was last known to be in the lake."""
        return max(0.0, time.monotonic() - self._caught_up)

    def outbox_rows(self) -> int:
        """Rows in the outbox, as the last ship left it."""
        return self._outbox_rows

    # ---- the threads --------------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        pause = self._interval_s
        while not self._stopping.wait(pause):
            try:
                self.ship()
                failures = 0
            except Exception as exc:  # noqa: BLE001 - the thread must keep going; counted
                failures += 1
                self._failed(exc)
            with contextlib.suppress(Exception):
                self._maybe_compact()
            pause = self._interval_s if not failures else min(MAX_PAUSE_S, self._interval_s * 2**failures)
        while True:  # the final ship
            try:
                self.ship()
                return
            except Exception as exc:  # noqa: BLE001 - tried until the grace ends
                self._failed(exc)
            if time.monotonic() >= self._grace_until:
                log.warning("stopping with %d rows left in the lake outbox", self._outbox_rows)
                return
            time.sleep(min(1.0, max(0.0, self._grace_until - time.monotonic())))

    def _failed(self, exc: BaseException) -> None:
        self._stats.add(lake_ship_failures=1)
        log.warning("shipping to the lake failed (%s); retrying", redact(first_line(exc)))

    def _watch(self) -> None:
        while not self._stopping.wait(min(WATCH_S, self._max_lag_s / 4)):
            self._check_lag()

    def _check_lag(self) -> None:
        lag = self.lag_seconds()
        if lag > self._max_lag_s:
            why = self._lake.failure or "shipping is behind"
            self._store.hold(
                f"the lake is {lag:.0f} s behind this node (lake_max_lag {self._max_lag_s:g} s; {why}); "
                "retry later"
            )
            if not self._held:
                log.warning("refusing exports: the lake is %.0f s behind (%s)", lag, why)
            self._held = True
        elif self._held:
            self._store.hold(None)
            self._held = False
            log.info("the lake has caught up; taking exports again")

    # ---- one ship -----------------------------------------------------------------------------

    def ship(self) -> int:
        """Ship everything the outbox holds now, a batch per lake transaction; rows new to the lake."""
        with self._ship_lock:
            started = time.monotonic()
            shipped = 0
            limit = self._lake.max_dimension_values
            while True:
                batch = self._read(
                    f"SELECT * FROM lake_outbox ORDER BY start_time LIMIT {int(self._batch_rows)}"
                )
                if batch.num_rows:
                    new = self._lake.in_turn(
                        functools.partial(append, batch=batch, max_dimension_values=limit)
                    )
                    self._delete(batch)
                    self._stats.add(lake_shipped_rows=new, lake_duplicate_rows=batch.num_rows - new)
                    shipped += new
                if batch.num_rows < self._batch_rows:
                    break
            self._caught_up = started
            self._outbox_rows = int(self._read("SELECT count(*) AS n FROM lake_outbox")["n"][0].as_py())
        self._check_lag()
        return shipped

    def _read(self, sql: str) -> pa.Table:
        con = self._store.reader()
        try:
            return con.execute(sql).to_arrow_table()
        finally:
            con.close()

    def _delete(self, batch: pa.Table) -> None:
        keys = batch.select(["trace_id", "span_id"])

        def delete(con: duckdb.DuckDBPyConnection) -> None:
            with registered(con, {"shipped": keys}):
                con.execute(
                    "DELETE FROM lake_outbox "
                    "WHERE (trace_id, span_id) IN (SELECT (trace_id, span_id) FROM shipped)"
                )

        self._store.run(delete).result()

    # ---- compaction ---------------------------------------------------------------------------

    def _maybe_compact(self) -> None:
        if time.monotonic() - self._last_compaction < self._compact_every_s:
            return
        self._last_compaction = time.monotonic()
        self.compact()

    def compact(self) -> bool:
        """Compact the lake if this node holds (or can take) the ``compaction`` lease; whether it did."""
        lease_s = 3 * self._compact_every_s
        held = self._lake.in_turn(
            lambda con: lake_compaction.take(con, lake_compaction.LEASE, self._node, lease_s)
        )
        if not held:
            return False
        started = time.perf_counter()
        removed = self._lake.in_turn(lake_compaction.compact)
        for statement in lake_compaction.MAINTENANCE:
            self._lake.transaction(
                functools.partial(lake_compaction.maintenance, statement=statement), turn=False
            )
        self._stats.add(lake_compactions=1)
        log.info(
            "compacted the lake: %d rollup rows merged in %.1f s", removed, time.perf_counter() - started
        )
        return True
