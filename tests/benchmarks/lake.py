"""Lake benchmark: one lake node against the single file, the catalog's cost, visibility, queries.

    python tests/benchmarks/lake.py [--requests 100] [--threads 2] [--visible 200] [--nodes 1,2,4]
        [--rows 200000] [--queries-db PATH] [--skip ingest,visible,users]

Starts a throwaway PostgreSQL (``tests/pg.py``) with ``pg_stat_statements`` preloaded, then:

1. **Ingest**: ``tests/benchmarks/ingest.py``'s client (a separate process: N Export requests of
   512 LLM spans, ``--threads`` senders; one seed, so both runs send the same requests) against
   the service on a fresh single file, then against one lake node (a fresh lake; its own local file plus the outbox). Durable spans/s for each (an
   answer means committed locally, in lake mode with the outbox copy) and their ratio; for the
   lake node also the rate until every row is in the lake (the outbox drained). Meanwhile the
   catalog database's ``xact_commit`` (``pg_stat_database``) and statement calls
   (``pg_stat_statements``): catalog commits per second, PostgreSQL statements (round trips) per
   acknowledged Export, and the time a lake write transaction holds the turn (every node's lake
   writes are serialized by it), timed around ``Lake.in_turn`` in this process.
   Then one shipping transaction of a busy node's batch timed by statement, and N writers (a
   ``Lake`` each, as N nodes have; ``--nodes``) shipping such batches back to back into one lake:
   commits and rows per second in all, and conflicts. The turn serializes them, so the total
   stays flat in N: the rows' work inside the turn is the cluster's bound.
2. **Visibility**: one-span Exports at a steady pace to a lake node (default ship interval); a
   reader of the lake (``Lake.reader``, as a reader-only node queries) polls ``requests``; the
   delay from an Export's answer to its span being visible, p50/p99.
3. **users()**: a file built by ``tests/benchmarks/queries.py``'s builder (``--rows``; or
   ``--queries-db``, an existing build such as /tmp/bench/queries.duckdb, reused as it is), its
   tables copied into a lake; the 30-day ``users()`` on the lake against the file (median of 5).

Then a table, and the capacity estimate: with every lake write serialized, one catalog commits at
most 1 / (turn time) transactions a second; a busy receiver commits once per ship interval (a
commit carries all rows waiting, up to the shipper's batch bound), so one catalog serves about
ship_interval / turn_time nodes before the turn becomes the bottleneck.

Bounded: fixed request counts, loopback only, a temporary directory removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
import ingest  # noqa: E402
from otlp import chat, request, span  # noqa: E402
from pg import PgCluster  # noqa: E402

from user_metrics.app import App  # noqa: E402
from user_metrics.query.users import users as query_users  # noqa: E402
from user_metrics.stats import Stats  # noqa: E402
from user_metrics.store import lake as lake_module  # noqa: E402
from user_metrics.store.lake import Lake, extension_paths  # noqa: E402

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
LAKE_ONLY = ("lake_turn", "lake_leases")


# ---- PostgreSQL and its counters -------------------------------------------------------------------


def start_postgres(base: str) -> PgCluster:
    """A throwaway server with pg_stat_statements preloaded (a restart after ALTER SYSTEM)."""
    pg = PgCluster(base)
    pg.sql("postgres", "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
    pg.restart()
    pg.sql("postgres", "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")  # its view, read from here
    return pg


def new_catalog(pg: PgCluster, data: Path) -> tuple[str, str]:
    catalog = pg.new_database()
    data.mkdir(parents=True)
    return catalog, str(data)


@dataclass(frozen=True)
class PgCounts:
    commits: int
    statements: int
    exec_ms: float


def pg_counts(pg: PgCluster, catalog: str) -> PgCounts:
    """The catalog database's committed transactions and statements run so far."""
    database = catalog.split("dbname=")[1].split()[0]
    pg.sql("postgres", "SELECT pg_stat_clear_snapshot()")
    commits = int(
        pg.sql("postgres", f"SELECT xact_commit FROM pg_stat_database WHERE datname = '{database}'")
    )
    calls, ms = pg.sql(
        "postgres",
        "SELECT coalesce(sum(calls), 0), coalesce(sum(total_exec_time), 0) FROM pg_stat_statements "
        f"WHERE dbid = (SELECT oid FROM pg_database WHERE datname = '{database}')",
    ).split("|")
    return PgCounts(commits, int(calls), float(ms))


@dataclass
class TurnTimer:
    """Times every lake write transaction of this process (``Lake.in_turn``), with the rows of the
    shipper's batch it carried (0 for other work)."""

    turns: list[tuple[float, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        original = Lake.in_turn

        def timed(lake: Lake, work: Callable[[Any], Any]) -> Any:
            batch = getattr(work, "keywords", {}).get("batch")
            started = time.perf_counter()
            try:
                return original(lake, work)
            finally:
                with self.lock:
                    self.turns.append((time.perf_counter() - started, 0 if batch is None else batch.num_rows))

        Lake.in_turn = timed  # type: ignore[method-assign]
        try:
            yield
        finally:
            Lake.in_turn = original  # type: ignore[method-assign]


def empty_turns(catalog: str, data: str, n: int = 20) -> list[float]:
    """Seconds of n lake write transactions that only take the turn: the catalog's own cost of a
    commit (snapshot, the turn row, the commit's catalog writes), no data."""
    lake = Lake(catalog, data, Stats(), memory_limit_mib=512, max_dimension_values=1000)
    try:
        times = []
        for _ in range(n):
            started = time.perf_counter()
            lake.in_turn(lambda con: None)
            times.append(time.perf_counter() - started)
        return times
    finally:
        lake.close()


# ---- 1. ingest --------------------------------------------------------------------------------------


def lake_settings(db: str, catalog: str, data: str, **more: Any) -> Any:
    return replace(ingest.service_settings(db), lake=catalog, lake_data=data, **more)


def wait_until(what: str, condition: Callable[[], bool], timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what}")
        time.sleep(0.05)


CLIENT_SEED = 20261130


def same_requests(target: str, requests: int, threads: int) -> dict[str, float]:
    """ingest.py's client in a process of its own, with a fixed seed: both runs send the same
    requests (its own command line seeds each client with its pid)."""
    code = (
        f"import sys; sys.path.insert(0, {str(HERE)!r}); import ingest; "
        f"ingest.client_main({target!r}, {requests}, {threads}, seed={CLIENT_SEED}, mixed=False)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=900, check=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


@dataclass
class IngestFigures:
    file_rate: float
    lake_rate: float
    lake_drained_rate: float
    exports: int
    commits: int
    catalog_commits: int
    statements: int
    exec_ms: float
    seconds: float
    turns: list[tuple[float, int]]  # (seconds, rows) of each shipping transaction
    empty_s: list[float]  # transactions that only take the turn


def run_ingest(pg: PgCluster, tmp: Path, requests: int, threads: int) -> IngestFigures:
    app = App(ingest.service_settings(str(tmp / "single.duckdb")))
    app.start()
    try:
        single = same_requests(app.grpc_address, requests, threads)
    finally:
        app.stop()
    catalog, data = new_catalog(pg, tmp / "ingest-lake")
    timer = TurnTimer()
    with timer.installed():
        app = App(lake_settings(str(tmp / "node.duckdb"), catalog, data))
        app.start()
        try:
            before, commits_before = pg_counts(pg, catalog), app.stats.lake_commits
            timer.turns.clear()
            started = time.perf_counter()
            lake = same_requests(app.grpc_address, requests, threads)
            spans = lake["spans"] + ingest.SPANS_PER_REQUEST  # the warm-up request is shipped too
            wait_until("the outbox to drain", lambda: app.stats.lake_shipped_rows >= spans)
            drained = time.perf_counter() - started
            after, commits = pg_counts(pg, catalog), app.stats.lake_commits - commits_before
            turns = [t for t in timer.turns if t[1]]
        finally:
            app.stop()
    empty = empty_turns(catalog, data)
    return IngestFigures(
        file_rate=single["spans"] / single["seconds"],
        lake_rate=lake["spans"] / lake["seconds"],
        lake_drained_rate=spans / drained,
        exports=requests,
        commits=commits,
        catalog_commits=after.commits - before.commits,
        statements=after.statements - before.statements,
        exec_ms=after.exec_ms - before.exec_ms,
        seconds=drained,
        turns=turns,
        empty_s=empty,
    )


class TimedConnection:
    """A connection whose ``execute`` calls are timed, by the statement's first words."""

    def __init__(self, con: duckdb.DuckDBPyConnection, times: dict[str, float]) -> None:
        self._con, self._times = con, times

    def execute(self, sql: str, *args: Any) -> Any:
        words = " ".join(sql.split())[:70]
        started = time.perf_counter()
        try:
            return self._con.execute(sql, *args)
        finally:
            self._times[words] = self._times.get(words, 0.0) + time.perf_counter() - started

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def ship_breakdown(pg: PgCluster, tmp: Path, source: str, rows: int, batches: int = 4) -> dict[str, float]:
    """Seconds per statement of ``shipper.append`` for a batch of ``rows`` request rows (from the
    single-file run), each batch in its own turn transaction on a fresh lake: the mean over the
    batches after the first (which meets an empty lake: every user and dimension new)."""
    from user_metrics.store import shipper

    con = duckdb.connect(source, read_only=True)
    try:
        table = con.execute(
            f"SELECT * FROM requests ORDER BY start_time LIMIT {rows * batches}"
        ).to_arrow_table()
    finally:
        con.close()
    catalog, data = new_catalog(pg, tmp / "breakdown-lake")
    lake = Lake(catalog, data, Stats(), memory_limit_mib=1024, max_dimension_values=1000)
    times: dict[str, float] = {}
    whole = "(the whole turn transaction)"
    try:
        for k in range(batches):
            batch = table.slice(k * rows, rows)
            if k == 1:
                times.clear()
            started = time.perf_counter()
            lake.in_turn(lambda c, b=batch: shipper.append(TimedConnection(c, times), b, 1000))  # type: ignore[misc]
            times[whole] = times.get(whole, 0.0) + time.perf_counter() - started
    finally:
        lake.close()
    return {k: v / (batches - 1) for k, v in sorted(times.items(), key=lambda kv: -kv[1])}


@dataclass(frozen=True)
class Contention:
    nodes: int
    seconds: float
    commits: int
    rows: int
    conflicts: int


def run_contention(
    pg: PgCluster, tmp: Path, source: str, rows: int, nodes: int, seconds: float
) -> Contention:
    """``nodes`` writers (a Lake each, as many nodes would have) shipping fresh batches of ``rows``
    request rows into one lake with ``shipper.append`` in turn transactions, back to back for
    ``seconds``: how many commits and rows the lake took in all, and the conflicts retried."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from user_metrics.store import shipper

    con = duckdb.connect(source, read_only=True)
    try:
        template = con.execute(f"SELECT * FROM requests LIMIT {rows}").to_arrow_table()
    finally:
        con.close()
    catalog, data = new_catalog(pg, tmp / f"contention-{nodes}")
    stats = Stats()
    lakes = [
        Lake(catalog, data, stats, memory_limit_mib=512, max_dimension_values=1000) for _ in range(nodes)
    ]
    committed = [0] * nodes
    shipped = [0] * nodes
    deadline = time.monotonic() + seconds

    t0 = time.monotonic()
    column = template.schema.get_field_index

    def ship(i: int) -> None:
        while time.monotonic() < deadline:
            # New span ids, and start times moved on with the clock, as live traffic's are (the
            # anti-join reads the lake's rows of the batch's time range only).
            ids = pa.array([os.urandom(8).hex() for _ in range(template.num_rows)])
            shift = pa.scalar(int((time.monotonic() - t0) * 1e6), pa.duration("us"))
            moved = pc.add(template["start_time"], shift)
            batch = template.set_column(column("span_id"), "span_id", ids).set_column(
                column("start_time"), "start_time", moved
            )
            shipped[i] += lakes[i].in_turn(lambda c, b=batch: shipper.append(c, b, 1000))  # type: ignore[misc]
            committed[i] += 1

    try:
        threads = [threading.Thread(target=ship, args=(i,)) for i in range(nodes)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
    finally:
        for lake in lakes:
            lake.close()
    return Contention(nodes, elapsed, sum(committed), sum(shipped), stats.lake_conflicts)


# ---- 2. visibility ----------------------------------------------------------------------------------


def run_visibility(pg: PgCluster, tmp: Path, count: int, pace_s: float) -> list[float]:
    """Seconds from each one-span Export's answer to its span being visible to a lake reader."""
    catalog, data = new_catalog(pg, tmp / "visible-lake")
    app = App(lake_settings(str(tmp / "visible.duckdb"), catalog, data))
    app.start()
    reader = Lake(catalog, data, Stats(), memory_limit_mib=512, max_dimension_values=1000)
    acked: dict[str, float] = {}
    seen: dict[str, float] = {}
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            con = reader.reader()
            try:
                for (trace,) in con.execute("SELECT trace_id FROM requests").fetchall():
                    seen.setdefault(trace, time.perf_counter())
            finally:
                con.close()
            time.sleep(0.01)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        with grpc.insecure_channel(app.grpc_address) as channel:
            export = channel.unary_unary(
                EXPORT, request_serializer=None, response_deserializer=ExportTraceServiceResponse.FromString
            )
            for i in range(count):
                trace = os.urandom(16)
                body = request([span(chat(f"user-{i % 50}"), trace_id=trace, start=time.time_ns())])
                export(body.SerializeToString(), timeout=60)
                acked[trace.hex()] = time.perf_counter()
                time.sleep(pace_s)
        wait_until("every span visible", lambda: set(acked) <= set(seen), 300)
    finally:
        stop.set()
        poller.join(timeout=60)
        reader.close()
        app.stop()
    return sorted(seen[t] - acked[t] for t in acked)


# ---- 3. users() over a lake and over the file --------------------------------------------------------


def copy_into_lake(source: str, catalog: str, data: str) -> int:
    """Copy the file's tables into a new lake (its schema made by ``Lake``); rows of requests."""
    Lake(catalog, data, Stats(), memory_limit_mib=1024, max_dimension_values=1000).close()
    ducklake, postgres = extension_paths()
    scanner = Path(data).parent / "postgres_scanner.duckdb_extension"  # the name its entry point wants
    if not scanner.exists():
        scanner.symlink_to(postgres)
    con = duckdb.connect()
    try:
        con.execute(f"LOAD '{ducklake}'")
        con.execute(f"LOAD '{scanner}'")
        con.execute(f"ATTACH 'ducklake:postgres:{catalog}' AS lake (DATA_PATH '{data}')")
        con.execute(f"ATTACH '{source}' AS file (READ_ONLY)")
        tables = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = 'lake' ORDER BY table_name"
            ).fetchall()
            if r[0] not in LAKE_ONLY
        ]
        have = {
            r[0]
            for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = 'file'"
            ).fetchall()
        }
        con.execute("BEGIN")
        for table in tables:
            if table in have:
                columns = [r[0] for r in con.execute(f"DESCRIBE lake.{table}").fetchall()]
                listed = ", ".join(f'"{c}"' for c in columns)
                con.execute(f"DELETE FROM lake.{table}")
                con.execute(f"INSERT INTO lake.{table} ({listed}) SELECT {listed} FROM file.{table}")
        con.execute("COMMIT")
        return int(con.execute("SELECT count(*) FROM lake.requests").fetchone()[0])  # type: ignore[index]
    finally:
        con.close()


def time_users(con: duckdb.DuckDBPyConnection, end: Any, runs: int) -> float:
    """Median seconds of the 30-day users() page (one warm-up first)."""
    since = end - timedelta(days=30)
    query_users(con, since, end, limit=100, now=lambda: end)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        query_users(con, since, end, limit=100, now=lambda: end)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run_users(
    pg: PgCluster, tmp: Path, rows: int, queries_db: str | None, runs: int
) -> tuple[int, float, float]:
    import queries

    path = queries_db or str(tmp / "queries.duckdb")
    if queries_db is None:
        queries.build(path, rows, min(rows, 500_000))
    catalog, data = new_catalog(pg, tmp / "users-lake")
    copied = copy_into_lake(path, catalog, data)
    file_con = duckdb.connect(path, read_only=True)
    try:
        file_s = time_users(file_con, queries.END, runs)
    finally:
        file_con.close()
    lake = Lake(catalog, data, Stats(), memory_limit_mib=2048, max_dimension_values=1000)
    try:
        con = lake.reader()
        try:
            lake_s = time_users(con, queries.END, runs)
        finally:
            con.close()
    finally:
        lake.close()
    return copied, file_s, lake_s


# ---- report -----------------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def report_ingest(f: IngestFigures, ship_interval: float) -> None:
    print(f"{'single file, durable':<46} {f.file_rate:>12,.0f} spans/s")
    print(
        f"{'lake node, acknowledged (local file + outbox)':<46} {f.lake_rate:>12,.0f} spans/s  "
        f"ratio {f.lake_rate / f.file_rate:.2f}"
    )
    print(f"{'lake node, until every row is in the lake':<46} {f.lake_drained_rate:>12,.0f} spans/s")
    print(
        f"{'catalog transactions (pg_stat_database)':<46} {f.catalog_commits:>12,}  "
        f"{f.catalog_commits / f.seconds:,.1f}/s (reads included); node lake commits {f.commits}"
    )
    print(
        f"{'PostgreSQL statements per acknowledged Export':<46} {f.statements / f.exports:>12,.1f}  "
        f"({f.statements:,} for {f.exports} Exports; {f.statements / max(f.commits, 1):,.0f} per lake commit; "
        f"{f.exec_ms / max(f.commits, 1):.2f} ms of PostgreSQL execution per lake commit)"
    )
    if not f.turns:
        return
    fixed = statistics.median(f.empty_s)
    rows = sum(r for _, r in f.turns)
    per_row = max(0.0, (sum(s for s, _ in f.turns) - fixed * len(f.turns)) / rows)
    median_s = statistics.median(s for s, _ in f.turns)
    print(
        f"{'shipping transaction (holds the turn)':<46} {1000 * median_s:>10,.1f} ms median over {len(f.turns)} "
        f"({rows / len(f.turns):,.0f} rows each on average)"
    )
    print(
        f"{'  of which the catalog (a turn with no rows)':<46} {1000 * fixed:>10,.1f} ms median "
        f"(p99 {1000 * percentile(f.empty_s, 0.99):,.1f} ms); the rows: {1e6 * per_row:,.1f} us each"
    )
    rate = f.lake_rate
    load = fixed / ship_interval + rate * per_row  # seconds of turn per second, per busy node
    print(
        f"=> lake writes are serialized by the turn: at most {1 / fixed:,.0f} commits/s (catalog alone) and "
        f"{1 / per_row if per_row else float('inf'):,.0f} rows/s in all (the rows' work is inside the turn). "
        f"A node at {rate:,.0f} spans/s, shipping every {ship_interval:g} s, holds the turn "
        f"{100 * load:.0f} % of the time: one catalog serves about {1 / load:,.1f} such nodes; nodes "
        f"with a few rows each cost {fixed / ship_interval * 100:.1f} % (one small commit per interval), "
        f"i.e. {ship_interval / fixed:,.0f} of them; an idle node ships nothing. "
        "Throughput grows ~N x one node until the turn is busy, then stays at the rows/s bound."
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--requests", type=int, default=100, help="Export requests (512 spans) per ingest run"
    )
    parser.add_argument("--threads", type=int, default=2, help="client sender threads")
    parser.add_argument("--visible", type=int, default=200, help="one-span Exports timed for visibility")
    parser.add_argument("--pace", type=float, default=0.05, help="seconds between two of those Exports")
    parser.add_argument("--rows", type=int, default=200_000, help="request rows for the users() comparison")
    parser.add_argument("--queries-db", help="an existing queries.py build to copy into a lake instead")
    parser.add_argument("--runs", type=int, default=5, help="timed users() runs after one warm-up")
    parser.add_argument("--nodes", default="1,2,4", help="writers in the contention runs (after ingest)")
    parser.add_argument("--contention-s", type=float, default=10.0, help="seconds of each contention run")
    parser.add_argument("--skip", default="", help="comma-separated: ingest, visible, users")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    ship_interval = ingest.service_settings("x").lake_ship_interval
    print(
        f"DuckDB {duckdb.__version__}; {os.cpu_count()} cores; load {os.getloadavg()[0]:.2f}; "
        f"ship interval {ship_interval:g} s; turn attempts {lake_module.TURN_ATTEMPTS}"
    )
    with tempfile.TemporaryDirectory(prefix="lake-bench-") as tmp_name:
        tmp = Path(tmp_name)
        os.chmod(tmp, 0o755)
        pg = start_postgres(tmp_name)
        try:
            if "ingest" not in skip:
                print(
                    f"\n-- ingest: {args.requests} requests x {ingest.SPANS_PER_REQUEST} spans, {args.threads} threads"
                )
                figures = run_ingest(pg, tmp, args.requests, args.threads)
                report_ingest(figures, ship_interval)
                per_batch = max(1, int(figures.lake_rate * ship_interval))
                parts = ship_breakdown(pg, tmp, str(tmp / "single.duckdb"), per_batch)
                print(
                    f"\n-- one shipping transaction of {per_batch:,} rows (a busy node's batch), by statement"
                )
                for words, seconds in parts.items():
                    print(f"  {1000 * seconds:>9,.1f} ms  {words}")
                print(
                    f"\n-- {args.contention_s:g} s of back-to-back shipping transactions of {per_batch:,} rows "
                    "by N writers (a Lake each) into one lake"
                )
                for n in [int(x) for x in args.nodes.split(",")]:
                    c = run_contention(pg, tmp, str(tmp / "single.duckdb"), per_batch, n, args.contention_s)
                    print(
                        f"  N={c.nodes}: {c.commits / c.seconds:6.1f} commits/s, {c.rows / c.seconds:9,.0f} rows/s "
                        f"in all, {c.conflicts} conflicts retried"
                    )
            if "visible" not in skip:
                delays = run_visibility(pg, tmp, args.visible, args.pace)
                print(f"\n-- visibility: {len(delays)} one-span Exports, one every {args.pace:g} s")
                print(
                    f"{'acknowledged -> visible to a lake reader':<44} p50 {1000 * percentile(delays, 0.5):,.0f} ms, "
                    f"p99 {1000 * percentile(delays, 0.99):,.0f} ms, max {1000 * max(delays):,.0f} ms"
                )
            if "users" not in skip:
                copied, file_s, lake_s = run_users(pg, tmp, args.rows, args.queries_db, args.runs)
                print(f"\n-- users(), 30 days, over {copied:,} request rows (median of {args.runs})")
                print(f"{'single file':<44} {1000 * file_s:>10,.1f} ms")
                print(f"{'lake':<44} {1000 * lake_s:>10,.1f} ms  ({lake_s / file_s:.1f}x the file)")
        finally:
            pg.cleanup()
        print(f"\nload at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
