"""The lake's write path: what one ship costs the catalog, and how many ships one catalog takes.

    python tests/benchmarks/lake_ship.py [--ships 20] [--sizes 1,100,1000,10000] [--seconds 20]

A throwaway PostgreSQL (``tests/pg.py``, fsync on, ``log_statement=all`` so that every statement
DuckDB sends is counted from the server log) and a fresh lake on a local data path. Then:

1. for each batch size, ``--ships`` ship transactions of that many new rows (``shipper.append``
   in ``Lake.in_turn``, as the shipper runs them), one after another: the median and p90 time of
   a ship, and the PostgreSQL statements and transactions per ship (the catalog round trips);
2. the catalog's ceiling: 1, 2 and 4 Lake instances (threads, one per simulated node) shipping
   10-row batches back to back for ``--seconds``: commits per second in total, and conflicts
   (retried) per commit. All lake writes are serialized by the turn, so this ceiling divided by
   the ship rate of one node (1 per ``lake_ship_interval``, default 1 s) is how many nodes one
   catalog can serve;
3. the visibility delay: a node (a store with an outbox and its shipper, the default 1 s
   interval) takes ``--visibility`` writes of 10 rows, one at a time at random moments; each is
   timed from its acknowledgement until a lake reader counts its rows (p50, p99, max).

An acknowledged Export costs the catalog nothing: it is acknowledged on the node's local commit;
its rows reach the lake in the next ship, with all the others of that interval.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))
sys.path.insert(0, str(Path(__file__).parents[1] / "lake"))

from lake_rows import rows  # noqa: E402
from pg import PgCluster  # noqa: E402

from user_metrics.stats import Stats  # noqa: E402
from user_metrics.store.lake import Lake  # noqa: E402
from user_metrics.store.shipper import Shipper, append  # noqa: E402
from user_metrics.store.writer import Store  # noqa: E402

_STATEMENT = re.compile(r"LOG:  (statement|execute)")


def statements(cluster: PgCluster) -> int:
    return sum(1 for line in cluster.log.read_text(errors="replace").splitlines() if _STATEMENT.search(line))


def commits(cluster: PgCluster, database: str) -> int:
    time.sleep(1.2)  # backends flush their statistics at most once a second
    out = cluster.sql("postgres", f"SELECT xact_commit FROM pg_stat_database WHERE datname = '{database}'")
    return int(out.strip())


def per_size(cluster: PgCluster, sizes: list[int], ships: int) -> None:
    catalog = cluster.new_database("bench_sizes")
    lake = Lake(
        catalog,
        tempfile.mkdtemp(prefix="lake-bench-"),
        Stats(),
        memory_limit_mib=1024,
        max_dimension_values=1000,
    )
    seed = 0
    print(
        "| rows per ship | median ms | p90 ms | rows/s (one node) | PG statements per ship | PG commits per ship |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    try:
        for size in sizes:
            seed += 1
            lake.in_turn(lambda con, s=seed, n=size: append(con, rows(s, n), 1000))  # warm up
            tables = [rows(seed * 1000 + i, size) for i in range(ships)]
            before_statements, before_commits = statements(cluster), commits(cluster, "bench_sizes")
            times = []
            for table in tables:
                started = time.perf_counter()
                lake.in_turn(lambda con, t=table: append(con, t, 1000))
                times.append(time.perf_counter() - started)
            after_statements, after_commits = statements(cluster), commits(cluster, "bench_sizes")
            median = statistics.median(times)
            p90 = sorted(times)[int(0.9 * (len(times) - 1))]
            print(
                f"| {size:,} | {median * 1000:.0f} | {p90 * 1000:.0f} | {size / median:,.0f} | "
                f"{(after_statements - before_statements) / ships:.0f} | "
                f"{(after_commits - before_commits) / ships:.1f} |"
            )
            seed += ships * 1000
    finally:
        lake.close()


def ceiling(cluster: PgCluster, nodes: int, seconds: float) -> None:
    database = f"bench_ceiling_{nodes}"
    catalog = cluster.new_database(database)
    data = tempfile.mkdtemp(prefix="lake-bench-")
    stats = Stats()
    lakes = [
        Lake(catalog, data, stats, memory_limit_mib=512, max_dimension_values=1000) for _ in range(nodes)
    ]
    stop = time.monotonic() + seconds
    shipped = [0] * nodes

    def ship(i: int) -> None:
        n = 0
        while time.monotonic() < stop:
            n += 1
            lakes[i].in_turn(lambda con, s=i * 1_000_000 + n: append(con, rows(s, 10), 1000))
            shipped[i] += 1

    threads = [threading.Thread(target=ship, args=(i,)) for i in range(nodes)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    total = sum(shipped)
    print(
        f"| {nodes} | {total / elapsed:.1f} | {stats.lake_conflicts / max(1, total):.2f} | "
        f"{', '.join(str(s) for s in shipped)} |"
    )
    for lake in lakes:
        lake.close()


def visibility(cluster: PgCluster, samples: int, interval_s: float) -> None:
    """A node (store with an outbox, shipper every ``interval_s``) takes one 10-row write at a
    time; how long from its acknowledgement until a lake reader counts its rows."""
    catalog = cluster.new_database("bench_visibility")
    stats = Stats()
    with tempfile.TemporaryDirectory(prefix="lake-bench-") as tmp:
        store = Store(Path(tmp) / "node.duckdb", stats, outbox=True)
        lake = Lake(catalog, str(Path(tmp) / "data"), stats, memory_limit_mib=512, max_dimension_values=1000)
        shipper = Shipper(store, lake, stats, interval_s=interval_s, max_lag_s=60.0, node="bench")
        shipper.start()
        delays = []
        try:
            reader = lake.reader()
            for i in range(samples):
                time.sleep(random.uniform(0, interval_s))  # writes come at any moment of an interval
                store.write(rows(10_000 + i, 10)).result()
                acked = time.perf_counter()
                want = 10 * (i + 1)
                while reader.execute("SELECT count(*) FROM requests").fetchall()[0][0] < want:
                    time.sleep(0.005)
                delays.append(time.perf_counter() - acked)
            reader.close()
        finally:
            shipper.stop()
            store.close()
            lake.close()
    delays.sort()
    p50, p99 = delays[len(delays) // 2], delays[min(len(delays) - 1, int(0.99 * len(delays)))]
    print(
        f"| {interval_s:g} s | {samples} | {p50 * 1000:.0f} | {p99 * 1000:.0f} | {max(delays) * 1000:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ships", type=int, default=20)
    parser.add_argument("--sizes", default="1,100,1000,10000")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--visibility", type=int, default=50, help="writes timed until visible")
    args = parser.parse_args()
    cluster = PgCluster(settings={"log_statement": "all"})
    try:
        per_size(cluster, [int(s) for s in args.sizes.split(",")], args.ships)
        print()
        print(
            "| nodes shipping back to back | ship commits/s (all nodes) | conflicts per commit | ships per node |"
        )
        print("|---:|---:|---:|---|")
        for nodes in (1, 2, 4):
            ceiling(cluster, nodes, args.seconds)
        print()
        print("| lake_ship_interval | writes | visible after, p50 ms | p99 ms | max ms |")
        print("|---:|---:|---:|---:|---:|")
        visibility(cluster, args.visibility, 1.0)
    finally:
        cluster.cleanup()


if __name__ == "__main__":
    main()
