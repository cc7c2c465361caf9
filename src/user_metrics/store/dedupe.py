"""Each span stored once, with memory bounded by the dedupe horizon, not by the spans stored.

A span's identity is (trace_id, span_id); ``SPAN_KEY_SQL`` hashes it to 127 bits. ``span_keys``
holds that key under a primary key (an in-memory ART index) for every stored span, and every
span an instrumentation's call absorbed (``counterparts.py``), that started at or after
``keys_from``: an insert of a key already there fails, which is how a re-sent span is found.

Keys do not stay for ever: ``purge`` (the writer calls it every minute) deletes the keys of
spans that started more than ``HORIZON_US`` ago and moves ``keys_from`` up to that instant, in
one transaction, and ``meta`` keeps it, so ``keys_from`` only grows, across restarts and
whatever the clock does. So ``span_keys`` holds about two days of traffic, however many rows
``requests`` has.

A span that started before ``keys_from`` (an exporter's queue replayed after a long outage,
say) is still stored at most once, by a slower path (``inserts.insert_new_only``): it is new
unless ``requests`` has a row with its start time, trace id and span id, a lookup that the zone
maps on ``start_time`` keep to the few row groups of that time. ``Stats.spans_past_horizon``
counts those spans. The limits: a re-sent copy must carry the start time of the first (OTLP
re-sends the same bytes), and an SDK span that a call absorbed and that comes again after the
horizon is not found (it is in no ``requests`` row): it waits in ``pending`` as any new one.
"""

from __future__ import annotations

import time

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

# How long after a span started its key stays in span_keys (re-sends later take the slow path).
HORIZON_US = 48 * 3_600_000_000
# 32 + 16 hex characters, so the concatenation is unambiguous; >> 1 makes md5's 128 bits fit HUGEINT.
SPAN_KEY_SQL = "(md5_number(trace_id || span_id) >> 1)::HUGEINT"
# The key and start (epoch microseconds) of each row of a relation of `requests` rows.
KEY_ROW_SQL = f"{SPAN_KEY_SQL} AS k, epoch_us(start_time) AS start_us"
DDL = "CREATE TABLE IF NOT EXISTS span_keys (k HUGEINT PRIMARY KEY, start_us BIGINT NOT NULL)"


def keys_of(relation: str, where: str = "TRUE") -> str:
    """SQL: the rows of span_keys for the rows of ``relation`` (``requests`` rows) that match
    ``where``, each key once (a repeated span starts when it first started)."""
    return f"SELECT k, min(start_us) FROM (SELECT {KEY_ROW_SQL} FROM {relation} WHERE {where}) GROUP BY k"


def keys_from(con: duckdb.DuckDBPyConnection) -> int:
    """The start (epoch microseconds) from which span_keys holds every stored span's key."""
    rows = con.execute("SELECT value FROM meta WHERE key = 'span_keys_from'").fetchall()
    return int(rows[0][0]) if rows else 0


def past(batch: pa.Table, since_us: int) -> int:
    """How many rows of ``batch`` (``requests`` rows) started before ``since_us``."""
    if not since_us or not batch.num_rows:
        return 0
    micros = pc.cast(batch["start_time"], pa.int64())
    return int(pc.sum(pc.less(micros, since_us)).as_py() or 0)


def purge(con: duckdb.DuckDBPyConnection, now_us: int | None = None) -> int:
    """Forget the keys of spans that started more than HORIZON_US ago (in the caller's
    transaction); returns the new ``keys_from``."""
    now_us = time.time_ns() // 1000 if now_us is None else now_us
    cut = max(now_us - HORIZON_US, keys_from(con))
    con.execute("DELETE FROM span_keys WHERE start_us < $cut", {"cut": cut})
    _set_keys_from(con, cut)
    return cut


def upgrade(con: duckdb.DuckDBPyConnection) -> None:
    """Schema 12: span_keys gains start_us and keeps only the horizon's keys, refilled from
    ``requests`` (in the caller's transaction)."""
    con.execute("DROP TABLE span_keys")
    con.execute(DDL)
    cut = time.time_ns() // 1000 - HORIZON_US
    con.execute(
        f"INSERT INTO span_keys {keys_of('requests', 'start_time >= make_timestamp($cut)')}",
        {"cut": cut},
    )
    _set_keys_from(con, cut)


def _set_keys_from(con: duckdb.DuckDBPyConnection, cut: int) -> None:
    con.execute(
        "INSERT INTO meta VALUES ('span_keys_from', $cut) ON CONFLICT DO UPDATE SET value = excluded.value",
        {"cut": str(cut)},
    )
