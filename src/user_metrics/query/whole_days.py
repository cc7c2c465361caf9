"""Whole UTC days of a window, summed per (user, dims) once and kept in memory for the next reads.

A 30-day ranking of users reads about a million day cells (``rollup_user_day``), and most of them
are the same from one request to the next: only the days at the window's ends, and today, change.
So the whole UTC days of a window (the ``USER_DAY`` piece of ``cells.decompose``) are summed once
per (user key, dims id), with a bit mask of the days each pair was active on, and the result is
kept as an Arrow table. A query registers it on its connection and reads it where it would have
read those day cells (``CellSql.cells(whole_days=True)``); the edges of the window are read fresh.

**Exact under concurrent ingest.** Every commit that stores requests on a UTC day adds at least
one to that day's request count in ``rollup_hour``, and compaction keeps every sum, so the list of
(day, requests) over an entry's days changes whenever one of its cells could have. That list is
the entry's fingerprint, taken in the same snapshot as its sums (one transaction). A statement
that reads an entry checks the fingerprint again in its own snapshot: when it matches, the
entry's rows are read; when not (a commit of late spans touched those days since), the same
statement reads the day cells instead. Both branches are in the one statement, so its figures
are those of its snapshot either way, never a mix. The next ``ref`` sees the new fingerprint and
builds the entry again.

**Per user.** Both tables are sorted by user key, so the rows of a page of users, or of one
user, are found by binary search (``Ref.narrow``, registered as a small table of their own):
``user()`` and the users page read neither the window's day cells nor its latency cells
(``rollup_latency_day``, summed per user and latency bucket in the entry) for the whole days.

**Bounded.** At most ``max_bytes`` of entries (``MAX_BYTES``, 96 MiB: two 30-day windows of
100,000 users with two or three dims each, about 45 MiB apiece), least recently used first out
(``evictions`` counts them); an entry that alone would pass the bound is not kept
(``too_big``). Only windows of ``MIN_DAYS`` to ``MAX_DAYS`` whole days qualify (the mask is a
BIGINT), in UTC (a local day of another zone straddles two UTC days). One cache per database:
the store's readers share one (``readers.Readers.shared``); a plain DuckDB connection has none
and reads the cells as before. A build aggregates every metric of the window's day cells and
its latency cells once (about 1 s for 30 days of 100,000 users), paid by the first read of a
window each day and after a commit of late spans on one of its days.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from user_metrics.store.rollups import METRICS

MIN_DAYS = 2
MAX_DAYS = 62  # one bit per day in a BIGINT
MAX_BYTES = 96 * 2**20
_KEY = "whole_days"
_LOCK = threading.Lock()  # creating the one cache of a database


@dataclass
class _Entry:
    fingerprint: str
    cells: pa.Table  # (user_key, dims_id, mask, metrics...), sorted by user_key
    latency: pa.Table  # (user_key, bucket, n), sorted by user_key
    cell_keys: np.ndarray
    latency_keys: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.cells.nbytes + self.latency.nbytes + self.cell_keys.nbytes + self.latency_keys.nbytes)


@dataclass(frozen=True)
class Ref:
    """An entry registered on one connection: the relation ``name`` holds (user_key, dims_id, mask,
    metrics...) and ``latency`` (user_key, bucket, n) summed over the UTC days [first, last), as of
    the snapshot whose fingerprint is ``fingerprint``."""

    name: str
    latency: str
    first: int
    last: int
    fingerprint: str
    entry: _Entry

    def narrow(self, con: duckdb.DuckDBPyConnection, users: Sequence[int]) -> Ref:
        """The same, holding only these users' rows (found by binary search: the per-user index),
        registered on ``con`` under names of its own."""
        keys = np.unique(np.asarray(list(users), dtype=np.int64))
        name = f"{self.name}_some"
        con.register(name, _rows_of(self.entry.cells, self.entry.cell_keys, keys))
        con.register(f"{name}_latency", _rows_of(self.entry.latency, self.entry.latency_keys, keys))
        return Ref(name, f"{name}_latency", self.first, self.last, self.fingerprint, self.entry)


def _rows_of(table: pa.Table, sorted_keys: np.ndarray, keys: np.ndarray) -> pa.Table:
    starts = np.searchsorted(sorted_keys, keys, side="left")
    ends = np.searchsorted(sorted_keys, keys, side="right")
    parts = [table.slice(int(a), int(b - a)) for a, b in zip(starts, ends, strict=True) if b > a]
    return pa.concat_tables(parts) if parts else table.slice(0, 0)


def fingerprint_sql(first: int, last: int) -> str:
    """A scalar subquery: the (day, requests) list of UTC days [first, last), from ``rollup_hour``."""
    return (
        "(SELECT coalesce(string_agg(d || ':' || n, ',' ORDER BY d), '') FROM ("
        f"SELECT hour // 24 AS d, sum(requests)::BIGINT AS n FROM rollup_hour "
        f"WHERE hour >= {int(first) * 24} AND hour < {int(last) * 24} GROUP BY 1))"
    )


def _build_sql(first: int, last: int) -> str:
    sums = ", ".join(
        f"{'min' if n == 'first_us' else 'max' if n == 'last_us' else 'sum'}({n})::{kind} AS {n}"
        for n, kind, _ in METRICS
    )
    return f"""SELECT user_key, dims_id, bit_or(1::BIGINT << (day - {int(first)})) AS mask, {sums}
               FROM rollup_user_day WHERE day >= {int(first)} AND day < {int(last)}
               GROUP BY user_key, dims_id ORDER BY user_key, dims_id"""


def _latency_sql(first: int, last: int) -> str:
    return f"""SELECT user_key, bucket, sum(n)::BIGINT AS n FROM rollup_latency_day
               WHERE day >= {int(first)} AND day < {int(last)} GROUP BY user_key, bucket ORDER BY ALL"""


class WholeDays:
    """The entries of one database, least recently used first; safe to share between threads."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[int, int], _Entry] = OrderedDict()
        self._lock = threading.Lock()  # held while building, so one thread builds an entry
        self.hits = 0
        self.builds = 0
        self.evictions = 0
        self.too_big = 0

    @property
    def bytes(self) -> int:
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())

    def ref(self, con: duckdb.DuckDBPyConnection, first: int, last: int) -> Ref | None:
        """The entry of UTC days [first, last), current as of now, registered on ``con``; built if
        missing or stale. None when it would not fit the bound."""
        ((now,),) = con.execute(f"SELECT {fingerprint_sql(first, last)}").fetchall()
        with self._lock:
            entry = self._entries.get((first, last))
            if entry is not None and entry.fingerprint == now:
                self.hits += 1
                self._entries.move_to_end((first, last))
            else:
                entry = self._build(con, first, last)
                if entry is None:
                    return None
        name = f"whole_days_{first}_{last}"
        con.register(name, entry.cells)
        con.register(f"{name}_latency", entry.latency)
        return Ref(name, f"{name}_latency", first, last, entry.fingerprint, entry)

    def _build(self, con: duckdb.DuckDBPyConnection, first: int, last: int) -> _Entry | None:
        self._entries.pop((first, last), None)
        fingerprint, cells, latency = _in_one_snapshot(
            con,
            lambda: (
                con.execute(f"SELECT {fingerprint_sql(first, last)}").fetchall()[0][0],
                con.execute(_build_sql(first, last)).to_arrow_table().combine_chunks(),
                con.execute(_latency_sql(first, last)).to_arrow_table().combine_chunks(),
            ),
        )
        self.builds += 1
        entry = _Entry(
            fingerprint,
            cells,
            latency,
            cells.column("user_key").to_numpy(),
            latency.column("user_key").to_numpy(),
        )
        if entry.nbytes > self.max_bytes:
            self.too_big += 1
            return None
        while self._entries and sum(e.nbytes for e in self._entries.values()) + entry.nbytes > self.max_bytes:
            self._entries.popitem(last=False)
            self.evictions += 1
        self._entries[(first, last)] = entry
        return entry


def _in_one_snapshot(con: duckdb.DuckDBPyConnection, work: Any) -> Any:
    """``work()`` inside one read transaction (or the caller's, if one is open)."""
    try:
        con.execute("BEGIN TRANSACTION")
    except duckdb.TransactionException:
        return work()  # already inside a transaction: one snapshot already
    try:
        return work()
    finally:
        con.execute("ROLLBACK")


def cache_of(con: duckdb.DuckDBPyConnection) -> WholeDays | None:
    """The cache of the database ``con`` reads (None for a connection that carries none)."""
    shared = getattr(con, "shared", None)
    if not isinstance(shared, dict):
        return None
    with _LOCK:
        cache = shared.get(_KEY)
        if not isinstance(cache, WholeDays):
            cache = shared[_KEY] = WholeDays()
    return cache
