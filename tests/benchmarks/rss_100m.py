"""Server RSS with 100M rows stored, span keys included (issue 17's target: <= 1.5 GiB).

    python tests/benchmarks/rss_100m.py [--rows 100000000] [--chunk 5000000]
        [--db /tmp/bench/rss_100m.duckdb] [--max-build-minutes 25] [--fallback-rows 30000000] [--keep]

1. Builds the store fast: the file is opened by the store's own ``WriterConnection`` (schema,
   migrations), then for each chunk of CHUNK rows DuckDB generates the request rows in SQL (no
   Python per row: 100,000 users with Zipf-like activity, 90 days in time order, 3 models, a
   ``plan`` property per user, ~2 % errors) into a temporary table ``batch`` shaped as
   ``requests``, and ``inserts.insert_all`` stores them in one transaction, as a commit of the
   writer does: span_keys (dedupe), requests, whatever the store's code does now, but the
   rollups: ``rollups.apply`` is held back while the chunks go in, and ``rollups.rebuild`` adds
   every row to them at the end in one pass (the same SQL, once; ``--rollups-per-chunk``: in
   each chunk's commit, then ``rollups.compact`` of the cells it touched). A CHECKPOINT after
   each chunk. When the first chunks say the whole build would take longer than
   MAX_BUILD_MINUTES, it stops at FALLBACK_ROWS instead and says so: the RSS is then that of
   the smaller store. An existing file is reused as it is (rows are counted, not rebuilt).
2. Starts the real service on it (``python -m user_metrics serve``, loopback ports) in a child
   process, waits for /healthz, and sends it 3 OTLP/HTTP exports of 512 LLM spans (ingest.py's
   requests), each answered once committed: the writer's dedupe works against every stored key.
3. Runs every query kind once over the HTTP API (30 days): users, one user, their time series,
   their requests, the global time series, the property keys, by property, totals, anomalies,
   a statement, coverage, and /metrics; prints VmRSS and VmHWM of the service process after
   each, then the peak against 1.5 GiB.
4. Stops the service; deletes the file if it is 10 GB or more, unless --keep.

Bounded: a fixed number of rows (or FALLBACK_ROWS), one query of each kind, loopback only.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import duckdb
import ingest as bench  # tests/benchmarks/ingest.py: its requests

from user_metrics.stats import Stats
from user_metrics.store import inserts, rollups
from user_metrics.store.writer_connection import WriterConnection

USERS = 100_000
DAYS = 90
MAX_DIMENSION_VALUES = 1000
EXPORTS = 3  # OTLP/HTTP exports of 512 LLM spans before the queries
GIB = 2**30
END_US = (int(time.time()) // 3600 * 3600 - 3600) * 1_000_000  # an hour ago, on the hour
START_US = END_US - DAYS * 86_400_000_000
# provider, request model, response model, nano-dollars per input and per output token
MODELS = [
    ("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", 150, 600),
    ("openai", "gpt-4o", "gpt-4o-2024-08-06", 2_500, 10_000),
    ("anthropic", "claude-sonnet-4-5", "claude-sonnet-4-5-20250929", 3_000, 15_000),
]


def _pick(index: str, values: list[Any]) -> str:
    """A SQL expression: values[index] (0-based)."""
    return f"([{', '.join(repr(v) for v in values)}])[({index}) + 1]"


def rows_sql(a: int, b: int, total: int) -> str:
    """The request rows i in [a, b) of TOTAL, as ``requests``' columns (by name)."""
    span_us = END_US - START_US
    return f"""
    WITH r AS (
        SELECT i,
            hash(i, 1) AS h1, hash(i, 2) AS h2, hash(i, 3) AS h3,
            {START_US} + CAST(i * {span_us / total!r} AS BIGINT) + CAST(hash(i, 4) % 5000000 AS BIGINT) AS t
        FROM range({a}, {b}) AS g(i)),
    v AS (
        SELECT *,
            CAST(floor(exp((h1 % 1000000) / 1000000.0 * ln({USERS}))) AS BIGINT) - 1 AS u,
            CASE WHEN h2 % 10 < 6 THEN 0 WHEN h2 % 10 < 9 THEN 1 ELSE 2 END AS m,
            CAST(50 + h3 % 4000 AS BIGINT) AS inp,
            CAST(10 + (h3 >> 20) % 800 AS BIGINT) AS out,
            (h2 >> 8) % 100 < 2 AS failed
        FROM r)
    SELECT
        lpad(format('{{:x}}', h1), 16, '0') || lpad(format('{{:x}}', i), 16, '0') AS trace_id,
        lpad(format('{{:x}}', h2), 16, '0') AS span_id,
        make_timestamp(CAST(least(t, {END_US - 1}) AS BIGINT)) AT TIME ZONE 'UTC' AS start_time,
        100.0 + (h3 >> 40) % 5000 AS duration_ms,
        'user-' || u AS user_id,
        's' || u || '-' || (t // 86400000000) % 7 AS session_id,
        'chat-api' AS service_name, 'prod' AS environment, 'chat' AS operation,
        {_pick("m", [m[0] for m in MODELS])} AS provider,
        {_pick("m", [m[1] for m in MODELS])} AS request_model,
        {_pick("m", [m[2] for m in MODELS])} AS response_model,
        inp AS input_tokens,
        CASE WHEN failed THEN 0 ELSE out END AS output_tokens,
        CAST((inp * {_pick("m", [m[3] for m in MODELS])}
              + CASE WHEN failed THEN 0 ELSE out END * {_pick("m", [m[4] for m in MODELS])}) / 1e9
             AS DECIMAL(18, 9)) AS cost_usd,
        'computed' AS cost_source,
        CASE WHEN failed THEN 'error' ELSE 'ok' END AS status,
        CASE WHEN failed THEN 'RateLimitError' END AS error_type,
        (h3 >> 50) % 10 < 3 AS streaming,
        MAP {{'plan': {_pick("u % 3", ["free", "pro", "enterprise"])}}} AS properties,
        false AS cache_added_to_input,
        {_pick("m", [m[0] for m in MODELS])} AS price_provider
    FROM v"""


def stored_rows(con: duckdb.DuckDBPyConnection) -> int:
    (n,) = con.execute("SELECT count(*) FROM requests").fetchone() or (0,)
    return int(n)


def _no_rollups(con: duckdb.DuckDBPyConnection, rows: str, max_dimension_values: int) -> Any:
    """Stands in for rollups.apply while the chunks go in; rollups.rebuild runs it once at the end."""
    touched = getattr(rollups, "Touched", None)
    return touched(set(), set()) if touched is not None else None


def store_chunk(con: duckdb.DuckDBPyConnection, a: int, b: int, total: int) -> None:
    """Rows [a, b) through the store's own commit: inserts.insert_all (and compact) in a transaction."""
    con.execute("CREATE OR REPLACE TEMP TABLE batch AS SELECT * FROM requests LIMIT 0")
    con.execute(f"INSERT INTO batch BY NAME {rows_sql(a, b, total)}")
    known = {
        "con": con,
        "rows": b - a,
        "side": {"waiting": None, "facts": None, "finalised": None},
        "max_dimension_values": MAX_DIMENSION_VALUES,
    }
    kwargs = {name: known[name] for name in inspect.signature(inserts.insert_all).parameters if name in known}
    con.execute("BEGIN")
    try:
        result = inserts.insert_all(**kwargs)
        touched = result[1] if isinstance(result, tuple) and len(result) > 1 else None
        if touched is not None and hasattr(rollups, "compact"):
            rollups.compact(con, touched)
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
    con.execute("DROP TABLE batch")
    con.execute("CHECKPOINT")


def build(args: argparse.Namespace) -> int:
    """Stores up to ``rows`` rows (``fallback`` when the budget would not do); returns the rows stored."""
    path, rows, chunk, fallback = args.db, args.rows, args.chunk, args.fallback_rows
    budget_s, per_chunk = args.max_build_minutes * 60, args.rollups_per_chunk
    writer = WriterConnection(
        path, Stats(), memory_limit_mib=args.build_memory_mib, max_dimension_values=MAX_DIMENSION_VALUES
    )
    con = writer.con
    apply = rollups.apply
    deferred = not per_chunk and hasattr(rollups, "rebuild")
    if deferred:
        rollups.apply = _no_rollups  # type: ignore[assignment]
    try:
        have = stored_rows(con)
        if have:
            print(f"reusing {path}: {have:,} rows already stored")
            return have
        target, started = rows, time.perf_counter()
        for a in range(0, rows, chunk):
            if a >= target:
                break
            b = min(a + chunk, target)
            store_chunk(con, a, b, target)
            elapsed = time.perf_counter() - started
            projected = elapsed * target / b
            print(
                f"  {b:>12,} rows in {elapsed:7.1f} s ({b / elapsed:,.0f} rows/s; {projected / 60:.1f} min "
                f"projected for {target:,}); load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
            if target > fallback and projected > budget_s and b < fallback:
                print(
                    f"  the build would take {projected / 60:.0f} min: stopping at {fallback:,} rows instead"
                )
                target = fallback  # the chunk's time positions stay those of the 100M-row spread
        if deferred:
            rollups.apply = apply
            started = time.perf_counter()
            con.execute("BEGIN")
            rollups.rebuild(con, MAX_DIMENSION_VALUES)
            con.execute("COMMIT")
            con.execute("CHECKPOINT")
            print(f"  rollups.rebuild over every row: {time.perf_counter() - started:.0f} s", flush=True)
        return stored_rows(con)
    finally:
        rollups.apply = apply
        writer.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def memory(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def get(base: str, path: str, **params: str) -> int:
    url = base + path + ("?" + urllib.parse.urlencode(params) if params else "")
    with urllib.request.urlopen(url, timeout=900) as response:
        return len(response.read())


def serve_and_query(path: str) -> None:
    api, grpc_port, http_port = free_port(), free_port(), free_port()
    log = open(f"{path}.service.log", "w")  # noqa: SIM115 - the child's stderr, closed below
    child = subprocess.Popen(
        [sys.executable, "-m", "user_metrics", "serve", "--db", path]
        + ["--api-listen", f"127.0.0.1:{api}", "--grpc-listen", f"127.0.0.1:{grpc_port}"]
        + ["--http-listen", f"127.0.0.1:{http_port}"],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    base = f"http://127.0.0.1:{api}"
    try:
        started = time.perf_counter()
        while True:
            try:
                get(base, "/healthz")
                break
            except OSError:
                if child.poll() is not None or time.perf_counter() - started > 600:
                    log.flush()
                    tail = Path(f"{path}.service.log").read_text()[-2000:]
                    raise SystemExit(f"the service did not start: {tail}") from None
                time.sleep(0.5)
        print(f"service (pid {child.pid}) up in {time.perf_counter() - started:.1f} s")
        report("started", memory(child.pid), 0, 0.0)
        rng = random.Random(1)
        for _ in range(EXPORTS):  # the writer's first commits: span_keys (dedupe) at work on the file
            started = time.perf_counter()
            body = bench.build_request(rng, time.time_ns())
            post = urllib.request.Request(
                f"http://127.0.0.1:{http_port}/v1/traces",
                data=body,
                headers={"Content-Type": "application/x-protobuf"},
            )
            with urllib.request.urlopen(post, timeout=900) as response:
                response.read()
            report("export of 512 spans", memory(child.pid), len(body), time.perf_counter() - started)
        users = json.loads(
            urllib.request.urlopen(base + "/api/v1/users?since=30d&limit=1", timeout=900).read()
        )
        top = (
            (users.get("users") or [{}])[0].get("user_id", "user-0") if isinstance(users, dict) else "user-0"
        )
        month = time.strftime("%Y-%m", time.gmtime(END_US / 1e6 - 32 * 86400))
        queries: list[tuple[str, str, dict[str, str]]] = [
            ("users 30d", "/api/v1/users", {"since": "30d"}),
            ("user 30d", f"/api/v1/users/{urllib.parse.quote(top)}", {"since": "30d"}),
            ("user timeseries 30d", f"/api/v1/users/{urllib.parse.quote(top)}/timeseries", {"since": "30d"}),
            ("user requests", f"/api/v1/users/{urllib.parse.quote(top)}/requests", {"since": "30d"}),
            ("timeseries 30d", "/api/v1/timeseries", {"since": "30d"}),
            ("property keys", "/api/v1/properties", {}),
            ("by property 30d", "/api/v1/properties/plan", {"since": "30d"}),
            ("totals 30d", "/api/v1/totals", {"since": "30d"}),
            ("anomalies", "/api/v1/anomalies", {}),
            ("statements", "/api/v1/statements", {"month": month}),
            ("coverage 30d", "/api/v1/coverage", {"since": "30d"}),
            ("/metrics", "/metrics", {}),
        ]
        for name, route, params in queries:
            started = time.perf_counter()
            try:
                size = get(base, route, **params)
            except OSError as exc:
                print(f"  {name}: failed: {exc}")
                continue
            report(name, memory(child.pid), size, time.perf_counter() - started)
        peak = memory(child.pid)["VmHWM"]
        verdict = "within" if peak <= 1.5 * GIB else "OVER"
        print(
            f"peak RSS of the service after every query: {peak / 2**20:,.0f} MiB -> {verdict} the 1.5 GiB target"
        )
    finally:
        child.terminate()
        child.wait(timeout=120)
        log.close()


def report(name: str, mem: dict[str, int], size: int, seconds: float) -> None:
    print(
        f"  {name:<22} {seconds * 1000:>9.0f} ms {size / 1024:>9.0f} KiB   VmRSS {mem['VmRSS'] / 2**20:>7,.0f} MiB"
        f"   VmHWM {mem['VmHWM'] / 2**20:>7,.0f} MiB",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000_000)
    parser.add_argument("--chunk", type=int, default=5_000_000)
    parser.add_argument("--db", default="/tmp/bench/rss_100m.duckdb")
    parser.add_argument("--max-build-minutes", type=float, default=25.0)
    parser.add_argument("--fallback-rows", type=int, default=30_000_000)
    parser.add_argument(
        "--rollups-per-chunk",
        action="store_true",
        help="rollups.apply in each chunk's commit (slow), not one rollups.rebuild at the end",
    )
    parser.add_argument(
        "--build-memory-mib", type=int, default=4096, help="DuckDB's memory limit for the build"
    )
    parser.add_argument("--keep", action="store_true", help="keep the file even when it is 10 GB or more")
    args = parser.parse_args()
    Path(args.db).parent.mkdir(parents=True, exist_ok=True)
    print(
        f"{os.cpu_count()} cores; load {os.getloadavg()[0]:.2f}; building up to {args.rows:,} rows in {args.db}"
    )
    started = time.perf_counter()
    stored = build(args)
    files = [p for p in Path(args.db).parent.iterdir() if p.name.startswith(Path(args.db).name)]
    size = sum(p.stat().st_size for p in files)
    print(f"{stored:,} rows stored ({time.perf_counter() - started:.0f} s); file {size / 1e9:.1f} GB")
    try:
        serve_and_query(args.db)
    finally:
        if size >= 10e9 and not args.keep:
            for p in files:
                p.unlink()
            print(f"deleted {args.db} ({size / 1e9:.1f} GB)")


if __name__ == "__main__":
    main()
