"""Compaction of the lake, by one node at a time: its rollup rows merged, its small files joined.

Every ship appends its own partial sums to the lake's rollups (``rollups.apply``, as a local
commit does) and DuckLake writes a small Parquet file, or inlines a few rows into the catalog,
per table per commit. Left alone, the rollups grow a row per cell per ship and the data path a
file per table per ship. So in the background one node, the holder of the ``compaction`` lease,
every so often:

1. merges the rollup rows of each cell that has several (``rollups.compact``, the local
   writer's own function, in one turn transaction: readers see the cells before or after, never
   half). The lake has no record of which cells the ships touched, so ``touched`` finds them:
   the hours and days whose cells have more than one row, and the users whose all-time row is
   split, by one scan of each rollup table;
2. asks DuckLake to tidy its files: ``ducklake_flush_inlined_data`` (rows inlined in the catalog
   into Parquet), ``ducklake_merge_adjacent_files`` (small files into larger ones),
   ``ducklake_expire_snapshots`` (snapshots older than ``SNAPSHOT_KEEP_S``: time travel beyond
   that is given up) and ``ducklake_cleanup_old_files`` (files no snapshot needs any more),
   each in a transaction of its own, outside the turn: DuckLake refuses a transaction that both
   changes data and compacts.

The lease is a row of ``lake_leases`` (name, holder, until_us): ``take`` claims it, in a turn
transaction, when it is free, expired, or already this node's, for ``lease_s``. A node that
stops renewing loses it when it expires; the work is idempotent, so a node whose lease expired
mid-way does no harm. None of this is on the ack path: a receiver acknowledges on its local
commit, and a ship waiting for a compaction's turn only waits.
"""

from __future__ import annotations

import time

import duckdb

from user_metrics.store import rollups
from user_metrics.store.rollups import US_PER_DAY, US_PER_HOUR
from user_metrics.store.writer_connection import registered

LEASE = "compaction"
# Snapshots kept for time travel (and for readers whose snapshot is that old).
SNAPSHOT_KEEP_S = 3600.0
MAINTENANCE = (
    "CALL ducklake_flush_inlined_data('lake')",
    "CALL ducklake_merge_adjacent_files('lake')",
    "CALL ducklake_expire_snapshots('lake', older_than => now() - to_microseconds($keep_us))",
    "CALL ducklake_cleanup_old_files('lake', older_than => now() - to_microseconds($keep_us))",
)


def take(con: duckdb.DuckDBPyConnection, name: str, holder: str, lease_s: float) -> bool:
    """Claim or renew lease ``name`` for ``holder`` (inside a turn transaction); whether it is held."""
    now = time.time_ns() // 1000
    rows = con.execute("SELECT holder, until_us FROM lake_leases WHERE name = ?", [name]).fetchall()
    if rows and rows[0][0] != holder and rows[0][1] > now:
        return False
    until = now + int(lease_s * 1e6)
    if rows:
        con.execute("UPDATE lake_leases SET holder = ?, until_us = ? WHERE name = ?", [holder, until, name])
    else:
        con.execute("INSERT INTO lake_leases VALUES (?, ?, ?)", [name, holder, until])
    return True


def release(con: duckdb.DuckDBPyConnection, name: str, holder: str) -> None:
    """Give lease ``name`` up, if ``holder`` has it (inside a turn transaction)."""
    con.execute("DELETE FROM lake_leases WHERE name = ? AND holder = ?", [name, holder])


def touched(con: duckdb.DuckDBPyConnection) -> rollups.Touched:
    """The hours and users whose rollup cells have more than one row (a day's cell makes its first
    hour touched: ``compact`` merges the days of the touched hours)."""
    hours: set[int] = set()
    for rollup in rollups.ROLLUPS:
        if rollup.bucket is None:
            continue
        per_hour = "hour" if rollup.bucket == "hour" else f"day * {US_PER_DAY // US_PER_HOUR}"
        ((found,),) = con.execute(
            f"SELECT list(DISTINCT {per_hour}) FROM (SELECT {rollup.columns} FROM {rollup.table} "
            "GROUP BY ALL HAVING count(*) > 1)"
        ).fetchall()
        hours.update(int(h) for h in found or ())
    ((users,),) = con.execute(
        "SELECT list(DISTINCT user_key) FROM "
        "(SELECT user_key FROM user_totals GROUP BY ALL HAVING count(*) > 1)"
    ).fetchall()
    return rollups.Touched(hours, {int(u) for u in users or ()})


def compact(con: duckdb.DuckDBPyConnection) -> int:
    """Merge the split rollup cells of the lake (inside a turn transaction); rows removed."""
    cells = touched(con)
    if not cells:
        return 0
    with registered(con, dict(rollups.touched_keys(cells))):
        return rollups.compact(con, cells)


def maintenance(con: duckdb.DuckDBPyConnection, statement: str) -> None:
    """One of DuckLake's tidying calls (``MAINTENANCE``), alone in its transaction (no turn)."""
    con.execute(
        statement, {"keep_us": int(SNAPSHOT_KEEP_S * 1e6)} if "$keep_us" in statement else {}
    ).fetchall()
