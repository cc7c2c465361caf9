"""What a ship does while it holds the lake's turn, statement by statement.

    python tests/benchmarks/lake_turn.py [--sizes 1,1000,10000] [--ships 5] [--inlining -1,0,1000]
        [--nodes 1,2,4 --batches 1000,10000 --seconds 8]

A throwaway PostgreSQL (``tests/pg.py``) and a fresh lake. For each batch size: one warm-up ship,
then ``--ships`` ships of that many new rows (``tests/lake/lake_rows.py``: five users, two days,
a few dims), each ``shipper.append`` in ``Lake.in_turn`` as the shipper runs it. Every statement
is timed on its own: the multi-statement strings of ``rollups.apply`` are split at ``;`` and run
one by one (the same statements, in the same transaction), and the turn's own statements
(``BEGIN``, the PostgreSQL lock, ``UPDATE lake_turn``, ``COMMIT``) are timed around ``work``.
Prints the median ship and the mean milliseconds per statement, largest first.

``--inlining`` repeats the whole-ship timing on a fresh lake per value of DuckLake's
``data_inlining_row_limit`` (``-1``: the lake's default, left alone), to see whether inlining
small appends into the catalog shortens a ship.

``--nodes`` then runs N writers (a ``Lake`` each, as N nodes have) shipping fresh batches of
each ``--batches`` size back to back for ``--seconds``: commits and rows a second in all. The
turn serializes them, so what grows the total is rows per ship, not writers.

Bounded: fixed ship counts, loopback only, temporary directories.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

sys.path[:0] = [str(Path(__file__).parents[1]), str(Path(__file__).parents[1] / "lake")]

from lake_rows import rows  # noqa: E402
from pg import PgCluster  # noqa: E402

from user_metrics.stats import Stats  # noqa: E402
from user_metrics.store import shipper  # noqa: E402
from user_metrics.store.lake import Lake  # noqa: E402

TURN_STATEMENTS = ("BEGIN", "CALL postgres_execute", "UPDATE lake_turn", "COMMIT")


class Timed:
    """A connection whose statements are timed one by one (a ``;``-joined string is split)."""

    def __init__(self, con: Any, times: dict[str, float], only: tuple[str, ...] = ()) -> None:
        self._con, self._times, self._only = con, times, only

    def execute(self, sql: str, *args: Any) -> Any:
        parts = [p for p in sql.split(";\n") if p.strip()] if not args else [sql]
        result = None
        for part in parts:
            words = " ".join(part.split())[:60]
            started = time.perf_counter()
            result = self._con.execute(part, *args)
            if not self._only or words.startswith(self._only):
                label = f"[turn] {words}" if self._only else words
                self._times[label] = self._times.get(label, 0.0) + time.perf_counter() - started
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def timed_turns(lake: Lake, times: dict[str, float]) -> Callable[[], None]:
    """Time the turn's own statements of ``lake``'s transactions; returns the undo."""
    once = lake._once  # noqa: SLF001 - a benchmark looks inside

    def timed_once(work: Any, turn: bool) -> Any:
        con = lake._con  # noqa: SLF001
        lake._con = Timed(con, times, TURN_STATEMENTS)  # type: ignore[assignment]  # noqa: SLF001
        try:
            return once(work, turn)
        finally:
            lake._con = con  # noqa: SLF001

    lake._once = timed_once  # type: ignore[method-assign]  # noqa: SLF001
    return lambda: setattr(lake, "_once", once)


def new_lake(cluster: PgCluster, name: str) -> Lake:
    catalog = cluster.new_database(name)
    return Lake(
        catalog,
        tempfile.mkdtemp(prefix="lake-turn-"),
        Stats(),
        memory_limit_mib=1024,
        max_dimension_values=1000,
    )


def by_statement(cluster: PgCluster, sizes: list[int], ships: int) -> None:
    lake = new_lake(cluster, "turn_statements")
    seed = 1
    try:
        for size in sizes:
            warm = rows(seed, size)
            lake.in_turn(lambda c, t=warm: shipper.append(c, t, 1000))  # type: ignore[misc]
            seed += 1
            times: dict[str, float] = {}
            undo = timed_turns(lake, times)
            whole = []
            for _ in range(ships):
                table = rows(seed, size)
                seed += 1
                started = time.perf_counter()
                lake.in_turn(lambda c, t=table, s=times: shipper.append(Timed(c, s), t, 1000))  # type: ignore[misc]
                whole.append(time.perf_counter() - started)
            undo()
            median = statistics.median(whole)
            print(f"\n-- {size:,} rows a ship: median {median * 1000:.0f} ms ({size / median:,.0f} rows/s)")
            for words, seconds in sorted(times.items(), key=lambda kv: -kv[1]):
                if seconds / ships >= 0.0005:
                    print(f"  {seconds / ships * 1000:7.1f} ms  {words}")
    finally:
        lake.close()


def by_inlining(cluster: PgCluster, sizes: list[int], ships: int, limits: list[int]) -> None:
    print("\n| data_inlining_row_limit | " + " | ".join(f"{s:,} rows, median ms" for s in sizes) + " |")
    print("|---:|" + "---:|" * len(sizes))
    for limit in limits:
        lake = new_lake(cluster, f"turn_inlining_{limit + 1}")
        try:
            if limit >= 0:
                lake.in_turn(
                    lambda c, n=limit: c.execute(f"CALL lake.set_option('data_inlining_row_limit', {n})")
                )
            seed, cells = 1, []
            for size in sizes:
                warm = rows(seed, size)
                lake.in_turn(lambda c, t=warm: shipper.append(c, t, 1000))  # type: ignore[misc]
                seed += 1
                whole = []
                for _ in range(ships):
                    table = rows(seed, size)
                    seed += 1
                    started = time.perf_counter()
                    lake.in_turn(lambda c, t=table: shipper.append(c, t, 1000))
                    whole.append(time.perf_counter() - started)
                cells.append(f"{statistics.median(whole) * 1000:,.0f}")
            print(f"| {'default' if limit < 0 else limit} | " + " | ".join(cells) + " |")
        finally:
            lake.close()


def contention(cluster: PgCluster, size: int, nodes: int, seconds: float) -> tuple[float, float, int]:
    """``nodes`` writers (a ``Lake`` each, threads) shipping fresh ``size``-row batches back to
    back for ``seconds``, start times moved on with the clock (so the anti-join's bounds prune
    older files, as with live traffic): commits/s and rows/s in all, conflicts retried."""
    stats = Stats()
    catalog = cluster.new_database(f"turn_contention_{size}_{nodes}")
    data = tempfile.mkdtemp(prefix="lake-turn-")
    lakes = [
        Lake(catalog, data, stats, memory_limit_mib=512, max_dimension_values=1000) for _ in range(nodes)
    ]
    template = rows(7, size)
    column = template.schema.get_field_index
    shipped, commits = [0] * nodes, [0] * nodes
    t0 = time.monotonic()
    deadline = t0 + seconds

    def ship(i: int) -> None:
        while time.monotonic() < deadline:
            ids = pa.array([os.urandom(8).hex() for _ in range(size)])
            shift = pa.scalar(int((time.monotonic() - t0) * 1e6) + 3 * 86_400_000_000, pa.duration("us"))
            batch = template.set_column(column("span_id"), "span_id", ids).set_column(
                column("start_time"), "start_time", pc.add(template["start_time"], shift)
            )
            shipped[i] += lakes[i].in_turn(lambda c, b=batch: shipper.append(c, b, 1000))  # type: ignore[misc]
            commits[i] += 1

    threads = [threading.Thread(target=ship, args=(i,)) for i in range(nodes)]
    started = time.perf_counter()
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for lake in lakes:
            lake.close()
    elapsed = time.perf_counter() - started
    return sum(commits) / elapsed, sum(shipped) / elapsed, stats.lake_conflicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,1000,10000")
    parser.add_argument("--ships", type=int, default=5)
    parser.add_argument("--nodes", default="", help="comma-separated writer counts for back-to-back shipping")
    parser.add_argument("--batches", default="1000,10000", help="rows per ship in the --nodes runs")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds of each --nodes run")
    parser.add_argument("--inlining", default="", help="comma-separated data_inlining_row_limit values")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"load at the start {os.getloadavg()[0]:.2f}; duckdb {duckdb.__version__}")
    cluster = PgCluster()
    try:
        by_statement(cluster, sizes, args.ships)
        if args.inlining:
            by_inlining(cluster, sizes, args.ships, [int(x) for x in args.inlining.split(",")])
        if args.nodes:
            print("\n| rows per ship | nodes shipping back to back | commits/s | rows/s in all | conflicts |")
            print("|---:|---:|---:|---:|---:|")
            for size in [int(x) for x in args.batches.split(",")]:
                for nodes in [int(x) for x in args.nodes.split(",")]:
                    per_s, rows_s, conflicts = contention(cluster, size, nodes, args.seconds)
                    print(f"| {size:,} | {nodes} | {per_s:.1f} | {rows_s:,.0f} | {conflicts} |")
    finally:
        cluster.cleanup()
    print(f"\nload at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
