"""Query benchmark: the query layer over 10M request rows, against naive scans of ``requests``.

    python tests/benchmarks/queries.py [--rows 10000000] [--db /tmp/bench/queries.duckdb]
                                       [--chunk 500000] [--runs 5] [--no-server-rss] [--zones-only]

1. Builds ROWS synthetic request records (100,000 users with Zipf-like activity, s = 1; three
   models; 90 days ending at a fixed instant, in time order like real ingest; a ``plan``
   property fixed per user; ~2 % errors, lognormal latencies, 1 % unpriced, 0.5 % without a
   user id) with numpy, in chunks, each written through ``Store.write(...).result()`` so the
   rollups are built by the real write path. With ``--db`` an existing file that already holds
   ROWS rows is reused as it is (an interrupted build resumes at the next chunk).
2. Closes the store, opens the file read-only and times every query function (``now`` fixed to
   the data's end) and the naive GROUP BYs over ``requests`` the issue quotes: one warm-up, then
   best and median of RUNS runs, against the targets (users 100 ms, user 10 ms, timeseries
   10 ms, by_property 100 ms). For queries that miss, the time of each SQL statement they run.
   The connection carries a whole-days cache as the server's readers do (``query/whole_days.py``);
   each query-layer case is also timed, interleaved, on the plain connection ("no cache": how it
   ran before that cache), and the ratios printed, of wall time and of this process's CPU time
   (all DuckDB threads; steadier than wall time when the machine is shared).
   Then the calendar-period queries (``this_month``, month buckets) in UTC and in Asia/Kolkata
   side by side: users() and by_property within 1.5x of UTC, users() <= 250 ms (``--zones-only``:
   only these; a day series in Asia/Kolkata reads request rows at every local midnight).
3. Checks exactness: users (top 20) and totals over a day-aligned and a ragged 30-day window,
   and by_property, against direct GROUP BYs over ``requests``.
4. Reports memory: VmRSS/VmHWM of this process (peak during the build; after the queries), the
   file size, and, in a fresh subprocess, the peak of the server's store: ``Store(path)``
   read-write, one write of 1,000 new rows (which stay in the file, stamped just before the
   end instant), every query once through ``store.reader()``. The target: <= 1 GiB with 10M rows.

Everything is bounded: a fixed number of rows and runs; the subprocess has a timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from user_metrics.query.properties import by_property as query_by_property
from user_metrics.query.statements import statement as query_statement
from user_metrics.query.timeseries import timeseries as query_timeseries
from user_metrics.query.totals import totals as query_totals
from user_metrics.query.users import user as query_user
from user_metrics.query.users import users as query_users
from user_metrics.stats import Stats
from user_metrics.store.batches import COST_TYPE, REQUESTS_ARROW_SCHEMA, nanos_to_decimal_array
from user_metrics.store.schema import SCHEMA_VERSION
from user_metrics.store.writer import Store

USERS = 100_000
DAYS = 90
SEED = 20261123
# The data ends here (exclusive); not on an hour, so "30d" windows have ragged edges.
END = datetime(2026, 11, 23, 14, 37, 21, 654321, tzinfo=UTC)
END_US = int((END - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))
START_US = END_US - DAYS * 86_400_000_000
US_PER_DAY = 86_400_000_000
MIDNIGHT = datetime(END.year, END.month, END.day, tzinfo=UTC)
TARGETS_MS = {"users": 100, "user": 10, "timeseries": 10, "by_property": 100}
ZERO_BUCKETS = ("cache_write_cost_usd", "reasoning_cost_usd", "request_cost_usd")
MONTH = "2026-10"  # the last whole month of the data, for statements
PROBE_ROWS = 1_000

# provider, request model, response model, nano-dollars per input and per output token, share
MODELS = [
    ("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", 150, 600, 0.60),
    ("openai", "gpt-4o", "gpt-4o-2024-08-06", 2_500, 10_000, 0.30),
    ("anthropic", "claude-sonnet-4-5", "claude-sonnet-4-5-20250929", 3_000, 15_000, 0.10),
]
PLANS = ["free", "pro", "enterprise"]
PLAN_SHARES = [0.70, 0.25, 0.05]
ERROR_TYPES = ["rate_limit_exceeded", "timeout", "server_error"]
ERROR_SHARE = 0.02
UNPRICED_SHARE = 0.01
ANONYMOUS_SHARE = 0.005


# ---- data -----------------------------------------------------------------------------------------


class Population:
    """The users: ids, a fixed plan each, and a Zipf(s=1) activity rank."""

    def __init__(self) -> None:
        rng = np.random.default_rng([SEED, 0])
        # user at activity rank r is user_ids[r]; ids are shuffled so rank and id are unrelated
        numbers = rng.permutation(USERS)
        self.user_ids = pa.array([f"user-{n:06d}" for n in numbers], pa.string())
        self.plans = rng.choice(len(PLANS), USERS, p=PLAN_SHARES)
        weights = 1.0 / np.arange(1, USERS + 1)
        self.cdf = np.cumsum(weights / weights.sum())
        self.cdf[-1] = 1.0

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.minimum(np.searchsorted(self.cdf, rng.random(n), side="right"), USERS - 1)


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def hex_ids(*words: np.ndarray) -> pa.Array:
    """Lower-case hex of the big-endian uint64 words, concatenated: 16 characters per word."""
    n = len(words[0])
    parts = []
    for word in words:
        b = word.astype(">u8").view(np.uint8).reshape(n, 8)
        nibbles = np.empty((n, 16), dtype=np.uint8)
        nibbles[:, 0::2] = b >> 4
        nibbles[:, 1::2] = b & 15
        parts.append(_HEX[nibbles])
    data = np.ascontiguousarray(np.concatenate(parts, axis=1)).reshape(-1)
    width = 16 * len(words)
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data.tobytes()))


def decimal_costs(nanos: np.ndarray, valid: np.ndarray) -> pa.Array:
    """Non-negative nano-dollars as exact DECIMAL(18,9) (the buffer layout nanos_to_decimal_array uses)."""
    n = len(nanos)
    words = np.zeros((n, 2), dtype=np.int64)
    words[:, 0] = np.where(valid, nanos, 0)
    validity = None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little").tobytes())
    return pa.Array.from_buffers(COST_TYPE, n, [validity, pa.py_buffer(words.tobytes())])


def strings(values: list[str], index: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    return pa.array(values, pa.string()).take(pa.array(index, pa.int32(), mask=mask))


def make_chunk(
    pop: Population,
    rng: np.random.Generator,
    first_row: int,
    n: int,
    t0_us: int,
    t1_us: int,
    trace_prefix: int,
) -> pa.Table:
    """n requests with start times in [t0_us, t1_us), sorted with a few seconds of jitter."""
    t = np.sort(rng.integers(t0_us, t1_us, n))
    t = np.clip(t + rng.integers(0, 5_000_000, n), START_US, END_US - 1)  # export batching
    rank = pop.draw(rng, n)
    anonymous = rng.random(n) < ANONYMOUS_SHARE
    model = rng.choice(len(MODELS), n, p=[m[5] for m in MODELS])
    inp = np.maximum(1, rng.lognormal(np.log(800), 0.9, n)).astype(np.int64)
    out = np.maximum(1, rng.lognormal(np.log(250), 0.8, n)).astype(np.int64)
    error = rng.random(n) < ERROR_SHARE
    out[error] = 0
    cached = rng.random(n) < 0.2
    cache_read = np.where(cached, (inp * rng.random(n)).astype(np.int64), 0)
    price_in = np.array([m[3] for m in MODELS])[model]
    price_out = np.array([m[4] for m in MODELS])[model]
    nanos = inp * price_in + out * price_out
    priced = rng.random(n) >= UNPRICED_SHARE
    duration = rng.lognormal(np.log(np.array([700.0, 1500.0, 2500.0])[model]), 0.7, n)
    duration[error] = rng.lognormal(np.log(300), 1.0, int(error.sum()))
    ids = np.arange(first_row, first_row + n, dtype=np.uint64)
    day = (t // US_PER_DAY).astype(np.int64)

    user_id = pop.user_ids.take(pa.array(rank, pa.int32(), mask=anonymous))
    session = pc.binary_join_element_wise(
        "s",
        pc.cast(pa.array(rank, mask=anonymous), pa.string()),
        pc.cast(pa.array(day % 7), pa.string()),
        "-",
    )
    plan_len = np.where(anonymous, 0, 1).astype(np.int32)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(plan_len, out=offsets[1:])
    named = ~anonymous
    properties = pa.MapArray.from_arrays(
        pa.array(offsets),
        pa.array(np.full(int(named.sum()), "plan"), pa.string()),
        strings(PLANS, pop.plans[rank[named]]),
    )
    arrays = {
        "trace_id": hex_ids(np.full(n, trace_prefix, dtype=np.uint64), ids * np.uint64(0x9E3779B97F4A7C15)),
        "span_id": hex_ids(ids * np.uint64(0xC2B2AE3D27D4EB4F) + np.uint64(1)),
        "parent_span_id": pa.nulls(n, pa.string()),
        "start_time": pa.array(t, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "duration_ms": pa.array(duration, pa.float64()),
        "user_id": user_id,
        "session_id": session,
        "service_name": strings(["chat-api"], np.zeros(n, np.int32)),
        "environment": strings(["prod"], np.zeros(n, np.int32)),
        "operation": strings(["chat"], np.zeros(n, np.int32)),
        "provider": strings([m[0] for m in MODELS], model),
        "request_model": strings([m[1] for m in MODELS], model),
        "response_model": strings([m[2] for m in MODELS], model),
        "input_tokens": pa.array(inp, pa.int64()),
        "output_tokens": pa.array(out, pa.int64()),
        "cache_read_tokens": pa.array(cache_read, pa.int64(), mask=~cached),
        "cache_write_tokens": pa.nulls(n, pa.int64()),
        "reasoning_tokens": pa.nulls(n, pa.int64()),
        "cost_usd": decimal_costs(nanos, priced),
        "cost_source": strings(["unpriced", "computed"], priced.astype(np.int32)),
        "status": strings(["ok", "error"], error.astype(np.int32)),
        "error_type": strings(ERROR_TYPES, rng.integers(0, len(ERROR_TYPES), n), mask=~error),
        "streaming": pa.array(rng.random(n) < 0.3, pa.bool_()),
        "properties": properties,
        "cache_added_to_input": pa.array(np.zeros(n, dtype=bool), pa.bool_()),
        "price_provider": strings([m[0] for m in MODELS], model, mask=~priced),
        "scope_name": pa.nulls(n, pa.string()),
        "scope_version": pa.nulls(n, pa.string()),
        # the cost per bucket (cache at the input rate, as the cost above has it)
        "input_cost_usd": decimal_costs((inp - cache_read) * price_in, priced),
        "cache_read_cost_usd": decimal_costs(cache_read * price_in, priced),
        "output_cost_usd": decimal_costs(out * price_out, priced),
        **{name: decimal_costs(np.zeros(n, np.int64), priced) for name in ZERO_BUCKETS},
    }
    return pa.Table.from_arrays(
        [arrays.get(f.name, pa.nulls(n, f.type)) for f in REQUESTS_ARROW_SCHEMA], schema=REQUESTS_ARROW_SCHEMA
    )


# Plan prices (per month, or per year) and, for every tenth user, an imported monthly invoice
# (a service period of one month each, over the data's 90 days, plus a refund instant).
PLAN_PRICES = [("free", "0", "month"), ("pro", "20", "month"), ("enterprise", "2400", "year")]


def add_revenue(path: str) -> None:
    """Give every user revenue: plan prices, and imported records for every tenth user (idempotent)."""
    con = duckdb.connect(path)
    try:
        con.execute("DELETE FROM plan_prices")
        con.executemany(
            "INSERT INTO plan_prices VALUES ('plan', ?, ?::DECIMAL(18, 9), ?)", [list(p) for p in PLAN_PRICES]
        )
        con.execute(
            f"""INSERT INTO revenue BY NAME
            SELECT 'bench-' || u || '-' || m AS id, u AS user_id, 49.99::DECIMAL(18, 9) AS amount_usd,
                   {START_US} + m * 30 * {US_PER_DAY} AS start_us,
                   {START_US} + (m + 1) * 30 * {US_PER_DAY} AS end_us, 0 AS imported_us, 'bench' AS source
            FROM (SELECT printf('user-%06d', n) AS u FROM range(0, {USERS}, 10) AS t(n)), range(3) AS r(m)
            UNION ALL
            SELECT 'bench-refund-' || u, u, -5.5, {END_US} - {US_PER_DAY}, {END_US} - {US_PER_DAY}, 0, 'bench'
            FROM (SELECT printf('user-%06d', n) AS u FROM range(5, {USERS}, 10) AS t(n))
            ON CONFLICT DO NOTHING"""
        )
        (n,) = con.execute("SELECT count(*) FROM revenue").fetchone()  # type: ignore[misc]
        print(
            f"revenue: plan prices {', '.join(f'{v} {a}/{per}' for v, a, per in PLAN_PRICES)}; {n:,} records"
        )
    finally:
        con.close()


def check_cost_encoding() -> None:
    """decimal_costs must give exactly what the ingest path's nanos_to_decimal_array gives."""
    nanos = np.array([0, 1, 999_999_999, 123_456_789_012, 5], dtype=np.int64)
    valid = np.array([True, True, True, True, False])
    ours = decimal_costs(nanos, valid)
    theirs = nanos_to_decimal_array([int(v) if ok else None for v, ok in zip(nanos, valid, strict=True)])
    assert ours.equals(theirs), (ours, theirs)
    assert ours[3].as_py() == Decimal("123.456789012")


def chunk_bounds(rows: int, chunk: int, k: int) -> tuple[int, int, int, int]:
    first = k * chunk
    n = min(chunk, rows - first)
    span = END_US - START_US
    return first, n, START_US + first * span // rows, START_US + (first + n) * span // rows


# ---- memory ---------------------------------------------------------------------------------------


def memory() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in bytes."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def file_size(path: str) -> int:
    return sum(os.path.getsize(p) for p in (path, path + ".wal") if os.path.exists(p))


# ---- build ----------------------------------------------------------------------------------------


def schema_version(path: str) -> str | None:
    con = duckdb.connect(path, read_only=True)
    try:
        row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return row[0] if row else None
    finally:
        con.close()


def code_version() -> str:
    """The commit and whether src/ differs from it (results depend on the working tree)."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}" + (f" + {len(dirty)} changed file(s) under src/" if dirty else " (src/ clean)")


def stored_rows(path: str) -> int:
    if not os.path.exists(path):
        return 0
    con = duckdb.connect(path, read_only=True)
    try:
        (n,) = con.execute("SELECT count(*) FROM requests").fetchone() or (0,)
        return int(n)
    except duckdb.CatalogException:
        return 0
    finally:
        con.close()


def build(path: str, rows: int, chunk: int, memory_limit_mib: int = 0) -> bool:
    """Build (or finish building) the file; False if it already held the rows."""
    have = stored_rows(path)
    meta_path = Path(path + ".bench.json")
    if have >= rows:
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        print(f"reusing {path}: {have:,} rows (built with --rows {meta.get('rows', '?')}); build skipped")
        return False
    if have:
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        if have % chunk or meta.get("rows") != rows or meta.get("chunk") != chunk:
            sys.exit(f"{path} holds {have:,} rows of another build; delete it or pass its --rows/--chunk")
        print(f"resuming {path} at row {have:,}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    meta_path.write_text(json.dumps({"rows": rows, "chunk": chunk, "seed": SEED, "end": END.isoformat()}))
    check_cost_encoding()
    pop = Population()
    chunks = -(-rows // chunk)
    first_chunk = have // chunk

    def generate(k: int) -> tuple[pa.Table, float]:
        started = time.perf_counter()
        first, n, t0, t1 = chunk_bounds(rows, chunk, k)
        table = make_chunk(pop, np.random.default_rng([SEED, 1, k]), first, n, t0, t1, 0x5EED_0000_0000_0000)
        return table, time.perf_counter() - started

    print(
        f"building {rows - have:,} rows in chunks of {chunk:,} through Store.write ({os.cpu_count()} cores)"
    )
    store = Store(path, Stats(), memory_limit_mib=memory_limit_mib)
    gen_seconds = 0.0
    started = time.perf_counter()
    table, s = generate(first_chunk)
    gen_seconds += s
    written = 0
    next_report = 0.1
    try:
        for k in range(first_chunk, chunks):
            future = store.write(table)  # the next chunk is generated while this one commits
            if k + 1 < chunks:
                table, s = generate(k + 1)
                gen_seconds += s
            written += future.result()
            done = (k + 1 - first_chunk) / (chunks - first_chunk)
            if done >= next_report or k + 1 == chunks:
                elapsed = time.perf_counter() - started
                print(
                    f"  {have + written:>12,} rows  {elapsed:7.1f} s  {written / elapsed:9,.0f} rows/s  "
                    f"RSS {mib(memory()['VmRSS'])}",
                    flush=True,
                )
                next_report = done + 0.1
    finally:
        close_started = time.perf_counter()
        store.close()
        close_seconds = time.perf_counter() - close_started
    elapsed = time.perf_counter() - started
    print(
        f"built {written:,} rows in {elapsed:.1f} s = {written / elapsed:,.0f} rows/s "
        f"(generation {gen_seconds:.1f} s, overlapped with commits; close+checkpoint {close_seconds:.1f} s)"
    )
    return True


# ---- queries --------------------------------------------------------------------------------------


def now() -> datetime:
    return END


@dataclass
class Case:
    label: str
    kind: str  # key of TARGETS_MS, or "naive" / "totals"
    run: Callable[[Any], Any]
    baseline: str | None = None


@dataclass
class Subjects:
    median_user: str
    median_requests: int
    heavy_user: str
    heavy_requests: int


def subjects(con: Any) -> Subjects:
    rows = con.execute(
        "SELECT u.user_id, sum(requests)::BIGINT AS n FROM rollup_user_day JOIN users AS u USING (user_key) "
        "WHERE user_key <> 0 GROUP BY ALL ORDER BY n, u.user_id"
    ).fetchall()
    median, heavy = rows[len(rows) // 2], rows[-1]
    return Subjects(median[0], median[1], heavy[0], heavy[1])


NAIVE_AGGREGATES = """count(*) AS requests, count(*) FILTER (status = 'error') AS errors,
    sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, sum(cost_usd) AS cost_usd,
    min(start_time) AS first_active, max(start_time) AS last_active"""


def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
    """fn(con, *args, now=END, **kwargs) for a connection given later."""
    return lambda con: fn(con, *args, now=now, **kwargs)


def naive(where: str, tail: str = "", select: str = "", **params: Any) -> Callable[[Any], Any]:
    """A plain aggregate over ``requests``: SELECT {select} NAIVE_AGGREGATES WHERE {where} {tail}."""
    sql = f"SELECT {select}{NAIVE_AGGREGATES} FROM requests WHERE {where} {tail}"
    return lambda con: con.execute(sql, params).fetchall()


def cases(s: Subjects) -> list[Case]:
    """The query-layer calls and the naive scans they are compared with (Case.baseline)."""
    m30 = MIDNIGHT - timedelta(days=30)
    win = "start_time >= $since AND start_time < $until"
    w30: dict[str, Any] = {"since": END - timedelta(days=30), "until": END}
    w7: dict[str, Any] = {"since": END - timedelta(days=7), "until": END}
    month: dict[str, Any] = {
        "since": datetime(2026, 10, 1, tzinfo=UTC),
        "until": datetime(2026, 11, 1, tzinfo=UTC),
    }
    top100 = "GROUP BY user_id ORDER BY cost_usd DESC NULLS LAST LIMIT 100"
    day, hour = "epoch_us(start_time) // 86400000000 AS t, ", "epoch_us(start_time) // 3600000000 AS t, "
    heavy, median = s.heavy_user, s.median_user
    return [
        Case("users 30d -cost_usd top 100", "users", call(query_users, "30d"), "naive users 30d"),
        Case("users 30d -requests", "users", call(query_users, "30d", sort="-requests"), "naive users 30d"),
        Case("users 30d margin_usd (least first)", "users", call(query_users, "30d", sort="margin_usd")),
        Case("users 30d -margin_ratio", "users", call(query_users, "30d", sort="-margin_ratio")),
        Case("users 30d -revenue_usd", "users", call(query_users, "30d", sort="-revenue_usd")),
        Case(
            "users 30d page 2 (offset 100)", "users", call(query_users, "30d", offset=100), "naive users 30d"
        ),
        Case(
            "users 30d plan=pro",
            "users",
            call(query_users, "30d", properties={"plan": "pro"}),
            "naive users pro",
        ),
        Case("users since UTC midnight -30d", "users", call(query_users, m30), "naive users 30d"),
        Case("users midnight..midnight 30d", "users", call(query_users, m30, MIDNIGHT), "naive users 30d"),
        Case("users all time", "users", call(query_users, "2000-01-01"), "naive users all time"),
        Case(
            f"user median ({s.median_requests} req)",
            "user",
            call(query_user, median, "30d"),
            "naive user median",
        ),
        Case(
            f"user heaviest ({s.heavy_requests:,} req)",
            "user",
            call(query_user, heavy, "30d"),
            "naive user heavy",
        ),
        Case(
            "timeseries heaviest user day 30d",
            "timeseries",
            call(query_timeseries, heavy, "30d"),
            "naive ts user day",
        ),
        Case("timeseries median user day 30d", "timeseries", call(query_timeseries, median, "30d")),
        Case(
            "timeseries app hour 7d",
            "timeseries",
            call(query_timeseries, None, "7d", bucket="hour"),
            "naive ts app hour",
        ),
        Case("timeseries app day 30d", "timeseries", call(query_timeseries, None, "30d"), "naive ts app day"),
        Case(
            "timeseries heaviest user hour 7d",
            "timeseries",
            call(query_timeseries, heavy, "7d", bucket="hour"),
            "naive ts user hour",
        ),
        Case(
            "timeseries median user hour 7d",
            "timeseries",
            call(query_timeseries, median, "7d", bucket="hour"),
        ),
        Case(
            "by_property plan 30d", "by_property", call(query_by_property, "plan", "30d"), "naive by plan 30d"
        ),
        Case("totals 30d", "totals", call(query_totals, "30d"), "naive totals 30d"),
        Case(
            f"statement heaviest user {MONTH}",
            "statement",
            call(query_statement, MONTH, heavy),
            "naive user heavy month",
        ),
        Case(
            f"statement heaviest user {MONTH} Kolkata",
            "statement",
            call(query_statement, MONTH, heavy, tz="Asia/Kolkata"),
            "naive user heavy month",
        ),
        Case(f"statement median user {MONTH}", "statement", call(query_statement, MONTH, median)),
        Case(
            f"statement all users {MONTH} page 1 (1000)",
            "statement",
            call(query_statement, MONTH),
            "naive users month",
        ),
        # the naive scans of requests the issue quotes, and a few more
        Case("naive users 30d", "naive", naive(win, top100, "user_id, ", **w30)),
        Case(
            "naive users pro",
            "naive",
            naive(f"{win} AND properties['plan'] = 'pro'", top100, "user_id, ", **w30),
        ),
        Case("naive users all time", "naive", naive("TRUE", "GROUP BY user_id", "user_id, ")),
        Case("naive user median", "naive", naive(f"user_id = $u AND {win}", u=median, **w30)),
        Case("naive user heavy", "naive", naive(f"user_id = $u AND {win}", u=heavy, **w30)),
        Case(
            "naive ts user day", "naive", naive(f"user_id = $u AND {win}", "GROUP BY t", day, u=heavy, **w30)
        ),
        Case("naive ts app hour", "naive", naive(win, "GROUP BY t", hour, **w7)),
        Case("naive ts app day", "naive", naive(win, "GROUP BY t", day, **w30)),
        Case(
            "naive ts user hour", "naive", naive(f"user_id = $u AND {win}", "GROUP BY t", hour, u=heavy, **w7)
        ),
        Case(
            "naive by plan 30d",
            "naive",
            naive(
                win, "GROUP BY plan", "properties['plan'] AS plan, count(DISTINCT user_id) AS users, ", **w30
            ),
        ),
        Case("naive totals 30d", "naive", naive(win, **w30)),
        Case("naive user heavy month", "naive", naive(f"user_id = $u AND {win}", u=heavy, **month)),
        Case("naive users month", "naive", naive(win, "GROUP BY user_id", "user_id, ", **month)),
    ]


@dataclass
class Timing:
    first: float
    best: float
    median: float
    cpu: float = 0.0  # median CPU seconds of this process (every DuckDB thread): steadier under load


def time_case(con: Any, case: Case, runs: int) -> Timing:
    times, cpu = [], []
    for _ in range(runs + 1):  # the first is the warm-up
        started, used = time.perf_counter(), time.process_time()
        case.run(con)
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - used)
    return Timing(times[0], min(times[1:]), statistics.median(times[1:]), statistics.median(cpu[1:]))


class Recorder:
    """A connection stand-in that times each statement the query layer runs."""

    def __init__(self, con: Any) -> None:
        self.con = con
        self.statements: list[tuple[float, str, Any]] = []

    def __getattr__(self, name: str) -> Any:  # register, shared: as the connection it stands for
        return getattr(self.con, name)

    def execute(self, sql: str, params: Any = None) -> Any:
        started = time.perf_counter()
        cur = self.con.execute(sql, params)

        def done() -> None:
            self.statements.append((time.perf_counter() - started, sql, params))

        return _Fetched(cur, done)


class _Fetched:
    """A result whose statement is timed up to its fetch (rows, or Arrow for the whole-days cache)."""

    def __init__(self, cur: Any, done: Callable[[], None]) -> None:
        self.description = cur.description
        self._cur = cur
        self._done = done

    def _fetched(self, fetch: Callable[[], Any]) -> Any:
        out = fetch()
        self._done()
        return out

    def fetchall(self) -> list[Any]:
        return self._fetched(self._cur.fetchall)  # type: ignore[no-any-return]

    def fetchone(self) -> Any:
        return self._fetched(self._cur.fetchone)

    def to_arrow_table(self) -> Any:
        return self._fetched(self._cur.to_arrow_table)


def statement_breakdown(con: Any, case: Case, explain_dir: str | None, index: int) -> list[str]:
    recorder = Recorder(con)
    case.run(recorder)
    lines = []
    for i, (seconds, sql, params) in enumerate(recorder.statements):
        head = " ".join(sql.split())[:90]
        lines.append(f"      stmt {i + 1}: {seconds * 1000:8.1f} ms  {head}")
        if explain_dir:
            plan = con.execute("EXPLAIN ANALYZE " + sql, params).fetchall()
            out = Path(explain_dir) / f"{index:02d}-{i + 1}.txt"
            out.write_text(
                f"-- {case.label}\n{sql}\n-- params {params!r}\n\n" + "\n".join(r[1] for r in plan)
            )
    return lines


class Cached:
    """A connection with the per-database cache the store's readers share (``Reader.shared``), so
    that the query functions read cached whole days (``query/whole_days.py``) as in the server."""

    def __init__(self, con: Any) -> None:
        self.con = con
        self.shared: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.con, name)


def run_queries(con: Any, runs: int, explain_dir: str | None) -> None:
    """Times every case through ``Cached(con)`` and, interleaved, the query-layer cases on the plain
    ``con`` too (no cache: how they ran before ``whole_days.py``)."""
    plain, con = con, Cached(con)
    s = subjects(con)
    print(
        f"\nsubjects: median user {s.median_user} ({s.median_requests:,} requests in all), "
        f"heaviest {s.heavy_user} ({s.heavy_requests:,})"
    )
    all_cases = cases(s)
    load_before = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    timings = {}
    uncached = {}
    for case in all_cases:
        if case.kind != "naive":
            uncached[case.label] = time_case(plain, case, runs)
        timings[case.label] = time_case(con, case, runs)
    header = (
        f"{'query':<38} {'first ms':>9} {'best ms':>9} {'median ms':>9} {'target':>7}  "
        f"{'no cache':>9} {'ratio':>6} {'cpu ms':>7} {'no cache':>8} {'ratio':>6}  vs naive (median)"
    )
    load_after = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nquery timings: warm-up (first) then best/median of {runs}; now = {END.isoformat()}")
    print(f"(load average of this shared machine: {load_before} before, {load_after} after)")
    print(header)
    print("-" * len(header))
    missed = []
    for case in all_cases:
        t = timings[case.label]
        target = TARGETS_MS.get(case.kind)
        flag = ""
        if target is not None and t.median * 1000 > target:
            flag = " MISS"
            missed.append(case)
        speedup = ""
        if case.baseline:
            b = timings[case.baseline]
            speedup = f"{b.median / t.median:6.1f}x  ({case.baseline}: {b.median * 1000:,.0f} ms)"
        before = uncached.get(case.label)
        was = " " * 40
        if before:
            was = (
                f"{before.median * 1000:9.1f} {before.median / t.median:5.2f}x "
                f"{t.cpu * 1000:7.1f} {before.cpu * 1000:8.1f} {before.cpu / max(t.cpu, 1e-6):5.2f}x"
            )
        print(
            f"{case.label:<38} {t.first * 1000:9.1f} {t.best * 1000:9.1f} {t.median * 1000:9.1f} "
            f"{str(target or ''):>7}{flag:5}{was}  {speedup}"
        )
    if missed:
        print("\nstatements of the queries over target (one run each):")
        if explain_dir:
            Path(explain_dir).mkdir(parents=True, exist_ok=True)
        for i, case in enumerate(missed):
            print(f"  {case.label}")
            for line in statement_breakdown(con, case, explain_dir, i):
                print(line)
        if explain_dir:
            print(f"  EXPLAIN ANALYZE of each statement written to {explain_dir}/")


# ---- time zones (issue 16) -----------------------------------------------------------------------

ZONE = "Asia/Kolkata"
ZONE_USERS_MS = 250  # users() in any zone
ZONE_RATIO = 1.5  # the queries in ZONE within this factor of the same query in UTC
ZONE_TARGETED = ("users", "by_property")  # the others are shown for comparison only


def zone_cases(s: Subjects) -> list[tuple[str, str, Callable[[str], Callable[[Any], Any]]]]:
    """(label, kind, tz -> the call): each is timed in UTC and in ZONE, side by side."""
    return [
        (
            "users this_month -cost_usd",
            "users",
            lambda tz: call(query_users, "this_month", sort="-cost_usd", tz=tz),
        ),
        (
            "users this_month margin_usd",
            "users",
            lambda tz: call(query_users, "this_month", sort="margin_usd", tz=tz),
        ),
        ("user heaviest this_month", "user", lambda tz: call(query_user, s.heavy_user, "this_month", tz=tz)),
        (
            "by_property plan this_month",
            "by_property",
            lambda tz: call(query_by_property, "plan", "this_month", tz=tz),
        ),
        (
            "timeseries app day this_month",
            "timeseries",
            lambda tz: call(query_timeseries, None, "this_month", bucket="day", tz=tz),
        ),
        (
            "timeseries app month 90d",
            "timeseries",
            lambda tz: call(query_timeseries, None, "90d", bucket="month", tz=tz),
        ),
        (
            "timeseries heaviest user month 90d",
            "timeseries",
            lambda tz: call(query_timeseries, s.heavy_user, "90d", bucket="month", tz=tz),
        ),
        ("totals this_month", "totals", lambda tz: call(query_totals, "this_month", tz=tz)),
    ]


def run_zone_cases(con: Any, runs: int) -> None:
    """The calendar-period queries in UTC and in ZONE: medians side by side, the ratio against
    ZONE_RATIO, users() against ZONE_USERS_MS; then users() this_month in ZONE against a direct
    GROUP BY with DuckDB's timezone()."""
    s = subjects(con)
    print(f"\ncalendar periods, UTC vs {ZONE} (now = {END.isoformat()}; best/median of {runs}):")
    header = f"{'query':<38} {'UTC ms':>9} {ZONE + ' ms':>17} {'ratio':>6}  target"
    print(header)
    print("-" * len(header))
    for label, kind, make in zone_cases(s):
        utc = time_case(con, Case(label, kind, make("UTC")), runs)
        local = time_case(con, Case(label, kind, make(ZONE)), runs)
        ratio = local.median / utc.median
        notes = []
        if kind in ZONE_TARGETED:
            notes.append(f"<= {ZONE_RATIO}x" + (" MISS" if ratio > ZONE_RATIO else ""))
        if kind == "users":
            worst = max(utc.median, local.median) * 1000
            notes.append(f"<= {ZONE_USERS_MS} ms" + (" MISS" if worst > ZONE_USERS_MS else ""))
        print(
            f"{label:<38} {utc.median * 1000:9.1f} {local.median * 1000:17.1f} {ratio:6.2f}  {', '.join(notes)}"
        )
    page = query_users(con, "this_month", limit=20, tz=ZONE, now=now)
    direct = con.execute(
        """SELECT user_id, count(*), CASE WHEN count(cost_usd) > 0 THEN sum(cost_usd) END,
                  count(DISTINCT timezone($tz, start_time)::DATE)
           FROM requests WHERE start_time >= $since AND start_time < $until GROUP BY user_id""",
        {"tz": ZONE, "since": page.since, "until": page.until},
    ).fetchall()
    by_id = {r[0]: tuple(r[1:]) for r in direct}
    bad = [u.user_id for u in page.users if by_id.get(u.user_id) != (u.requests, u.cost_usd, u.active_days)]
    # users() also lists users with revenue but no request in the window: sorted by requests,
    # exactly the first (total - active) of them have none.
    extra = page.total - len(direct)
    idle = query_users(con, "this_month", sort="requests", limit=min(extra + 1, 10_000), tz=ZONE, now=now)
    zeros = sum(1 for u in idle.users if u.requests == 0)
    ok = not bad and extra >= 0 and (zeros == extra or (extra >= 10_000 and zeros == len(idle.users)))
    print(
        f"  users this_month {ZONE} ({page.since.isoformat()} ..), top 20 requests+cost+active_days, "
        f"total ({len(direct):,} active + {extra:,} with revenue only): "
        f"{'OK' if ok else 'MISMATCH ' + ', '.join(map(str, bad[:5]))}"
    )


# ---- exactness ------------------------------------------------------------------------------------


def check_exactness(con: Any) -> None:
    print("\nexactness against direct GROUP BYs over requests:")
    problems = []
    for label, since in (
        ("day-aligned", MIDNIGHT - timedelta(days=30)),
        ("ragged 30d", END - timedelta(days=30)),
    ):
        page = query_users(con, since, limit=20, now=now)
        direct = con.execute(
            """SELECT user_id, count(*) AS requests,
                      CASE WHEN count(cost_usd) > 0 THEN sum(cost_usd) END AS cost_usd
               FROM requests WHERE start_time >= $since AND start_time < $until
               GROUP BY user_id ORDER BY cost_usd DESC NULLS LAST""",
            {"since": since, "until": END},
        ).fetchall()
        by_id = {r[0]: (r[1], r[2]) for r in direct}
        bad = [
            f"{u.user_id}: users() {u.requests} req {u.cost_usd} vs direct {by_id.get(u.user_id)}"
            for u in page.users
            if by_id.get(u.user_id) != (u.requests, u.cost_usd)
        ]
        order = [u.user_id for u in page.users] == [r[0] for r in direct[:20]]
        if not order:
            bad.append("top-20 order differs from the direct ranking by cost")
        # users() also lists users with revenue but no request in the window: revenue records
        # counting in it, and plan days (a priced plan on a request of the window's first or last
        # UTC day, outside the window)
        (paying,) = con.execute(
            """SELECT count(DISTINCT user_id) FROM (
                   SELECT user_id FROM revenue
                   WHERE (end_us = start_us AND start_us >= epoch_us($since) AND start_us < epoch_us($until))
                      OR (end_us > start_us AND start_us < epoch_us($until) AND end_us > epoch_us($since))
                   UNION ALL
                   SELECT user_id FROM requests
                   WHERE user_id IS NOT NULL AND properties['plan'] IN (SELECT value FROM plan_prices)
                     AND ((start_time >= date_trunc('day', $since::TIMESTAMPTZ) AND start_time < $since)
                          OR (start_time >= $until AND start_time < date_trunc('day', $until::TIMESTAMPTZ)
                              + INTERVAL 1 DAY)))
               WHERE user_id NOT IN (SELECT user_id FROM requests WHERE user_id IS NOT NULL
                                     AND start_time >= $since AND start_time < $until)""",
            {"since": since, "until": END},
        ).fetchone()
        if page.total != len(direct) + paying:
            bad.append(
                f"total {page.total} vs direct {len(direct)} distinct user ids (NULL included) "
                f"+ {paying} with revenue only"
            )
        problems += [f"users {label}: {b}" for b in bad]
        print(
            f"  users {label} (since {since.isoformat()}), top 20 requests+cost_usd, order, total: "
            f"{'OK' if not bad else 'MISMATCH'}"
        )

        t = query_totals(con, since, now=now)
        (d,) = con.execute(
            """SELECT count(DISTINCT user_id) AS users, count(*) FILTER (user_id IS NULL) AS anonymous_requests,
                      count(*) AS requests, count(*) FILTER (status = 'error') AS errors,
                      coalesce(sum(input_tokens), 0) AS input_tokens, coalesce(sum(output_tokens), 0) AS output_tokens,
                      coalesce(sum(cache_read_tokens), 0) AS cache_read_tokens,
                      coalesce(sum(cost_usd), 0) AS cost_usd,
                      count(*) FILTER (cost_source = 'unpriced') AS unpriced_requests
               FROM requests WHERE start_time >= $since AND start_time < $until""",
            {"since": since, "until": END},
        ).fetchall()
        names = (
            "users",
            "anonymous_requests",
            "requests",
            "errors",
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cost_usd",
            "unpriced_requests",
        )
        bad = [
            f"{n}: totals() {getattr(t, n)} vs direct {v}"
            for n, v in zip(names, d, strict=True)
            if getattr(t, n) != v
        ]
        problems += [f"totals {label}: {b}" for b in bad]
        print(f"  totals {label}: {'OK' if not bad else 'MISMATCH'} ({t.requests:,} requests, ${t.cost_usd})")

    since = END - timedelta(days=30)
    bp = query_by_property(con, "plan", since, now=now)
    direct = {
        r[0]: (r[1], r[2], r[3])
        for r in con.execute(
            """SELECT properties['plan'], count(DISTINCT user_id), count(*), coalesce(sum(cost_usd), 0)
               FROM requests WHERE start_time >= $since AND start_time < $until GROUP BY 1""",
            {"since": since, "until": END},
        ).fetchall()
    }
    got = {v.value: (v.users, v.requests, v.cost_usd) for v in bp.values}
    bad = [
        f"{k}: by_property() {got.get(k)} vs direct {direct.get(k)}"
        for k in set(got) | set(direct)
        if got.get(k) != direct.get(k)
    ]
    problems += [f"by_property ragged 30d: {b}" for b in bad]
    print(f"  by_property plan ragged 30d, users+requests+cost per value: {'OK' if not bad else 'MISMATCH'}")
    problems += check_statements(con)
    for p in problems:
        print(f"    {p}")


def check_statements(con: Any) -> list[str]:
    """A month's statement in UTC and Asia/Kolkata: its first page's users have users()' costs and
    line amounts summing to them; its total is totals()' cost of the same window."""
    bad = []
    for tz in (None, "Asia/Kolkata"):
        got = query_statement(con, MONTH, tz=tz, limit=2000, now=now)
        page = query_users(con, got.since, got.until, limit=10_000, sort="user_id", now=now)
        costs = {u.user_id: u.cost_usd for u in page.users}
        for u in got.users:
            lines = [line.amount_usd for line in u.lines if line.amount_usd is not None]
            if (
                u.cost_usd != costs.get(u.user_id)
                or (sum(lines, Decimal(0)) if lines else None) != u.cost_usd
            ):
                bad.append(
                    f"statement {MONTH} {tz}: {u.user_id} lines/cost {u.cost_usd} vs users() {costs.get(u.user_id)}"
                )
        whole = query_totals(con, got.since, got.until, now=now)
        if (got.totals.cost_usd, got.totals.requests) != (whole.cost_usd, whole.requests):
            bad.append(f"statement {MONTH} {tz}: total {got.totals.cost_usd} vs totals() {whole.cost_usd}")
        print(
            f"  statement {MONTH} {tz or 'UTC'}: first 2,000 users vs users(), total vs totals(): {'OK' if not bad else 'MISMATCH'}"
        )
    return bad


# ---- the server's store in a fresh process --------------------------------------------------------


def measure_server(path: str) -> None:
    """Child process: Store read-write, one write of PROBE_ROWS new rows, every query once."""
    out: dict[str, Any] = {"start": memory()}
    version = schema_version(path)
    if version != SCHEMA_VERSION:  # Store() would rebuild the rollups: a migration, not the steady state
        print(
            json.dumps(
                {"error": f"{path} has schema {version}, this code {SCHEMA_VERSION}: not migrating it"}
            )
        )
        return
    started = time.perf_counter()
    store = Store(path, Stats())
    out["open_s"] = time.perf_counter() - started
    out["opened"] = memory()
    pop = Population()
    prefix = int.from_bytes(os.urandom(8), "little") | 1  # new trace ids each run
    table = make_chunk(pop, np.random.default_rng(), 0, PROBE_ROWS, END_US - 60_000_000, END_US, prefix)
    started = time.perf_counter()
    stored = store.write(table).result()
    out["write_s"] = time.perf_counter() - started
    out["stored"] = stored
    out["written"] = memory()
    con = store.reader()
    try:
        s = subjects(con)
        started = time.perf_counter()
        for case in cases(s):
            if case.kind != "naive":
                case.run(con)
        out["queries_s"] = time.perf_counter() - started
        out["queried"] = memory()
        started = time.perf_counter()
        for case in cases(s):
            if case.kind == "naive":
                case.run(con)
        out["naive_s"] = time.perf_counter() - started
        out["naive"] = memory()
    finally:
        con.close()
        store.close()
    print(json.dumps(out))


def server_rss(path: str) -> None:
    print(
        f"\nserver's store in a fresh process: Store({path!r}) read-write, write {PROBE_ROWS:,} rows, "
        "every query once via store.reader(), then the naive scans"
    )
    proc = subprocess.run(
        [sys.executable, __file__, "--db", path, "--measure-server-rss"],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode:
        print(f"  FAILED ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        return
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    if "error" in r:
        print(f"  skipped: {r['error']}")
        return
    steps = [
        ("interpreter + imports", "start"),
        (f"Store() opened ({r['open_s']:.2f} s)", "opened"),
        (f"wrote {r['stored']:,} rows ({r['write_s'] * 1000:.0f} ms)", "written"),
        (f"queries ran ({r['queries_s']:.2f} s)", "queried"),
        (f"naive scans ran ({r['naive_s']:.2f} s)", "naive"),
    ]
    for label, key in steps:
        print(f"  {label:<32} VmRSS {mib(r[key]['VmRSS']):>10}  VmHWM {mib(r[key]['VmHWM']):>10}")
    peak = r["queried"]["VmHWM"]
    print(
        f"  peak through the queries: {mib(peak)} -> {'within' if peak <= 2**30 else 'OVER'} the 1 GiB target"
    )


# ---- main -----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000, help="request rows to build")
    parser.add_argument(
        "--db", default="/tmp/bench/queries.duckdb", help="DuckDB file; reused if it holds the rows"
    )
    parser.add_argument("--chunk", type=int, default=500_000, help="rows per Store.write")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per query after one warm-up")
    parser.add_argument(
        "--explain", metavar="DIR", help="write EXPLAIN ANALYZE of the slow queries' statements here"
    )
    parser.add_argument("--no-server-rss", action="store_true", help="skip the server-store subprocess")
    parser.add_argument(
        "--memory-limit-mib",
        type=int,
        default=0,
        help="the store's DuckDB memory_limit while building (0: DuckDB's)",
    )
    parser.add_argument(
        "--zones-only", action="store_true", help="time only the UTC-vs-zone calendar-period queries"
    )
    parser.add_argument("--measure-server-rss", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_server_rss:
        measure_server(args.db)
        return

    print(
        f"DuckDB {duckdb.__version__}, pyarrow {pa.__version__}, numpy {np.__version__}; {os.cpu_count()} cores"
    )
    print(f"code: {code_version()}; schema version {SCHEMA_VERSION}")
    print(f"data: {args.rows:,} rows, {USERS:,} users (Zipf s=1), {DAYS} days ending {END.isoformat()}")
    built = build(args.db, args.rows, args.chunk, args.memory_limit_mib)
    build_peak = memory()["VmHWM"]
    peak_reset = reset_peak()
    print(
        f"file {args.db}: {file_size(args.db) / 1e6:,.0f} MB; this process's peak so far (build) VmHWM {mib(build_peak)}"
    )

    version = schema_version(args.db)
    if version != SCHEMA_VERSION:
        sys.exit(f"{args.db} has schema version {version}, this code {SCHEMA_VERSION}: rebuild it (new --db)")
    add_revenue(args.db)
    con = duckdb.connect(args.db, read_only=True)
    try:
        tables = [
            r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY table_name").fetchall()
        ]
        counts = [f"{t} {con.execute(f'SELECT count(*) FROM {t}').fetchone()[0]:,}" for t in tables]  # type: ignore[index]
        print("rows: " + ", ".join(counts))
        opened = memory()
        if args.zones_only:
            run_zone_cases(con, args.runs)
            return
        run_queries(con, args.runs, args.explain)
        cached = Cached(con)
        run_zone_cases(cached, args.runs)
        check_exactness(cached)
        entries = cached.shared.get("whole_days")
        if entries is not None:
            print(
                f"  whole-days cache: {entries.builds} builds, {entries.hits} hits, {entries.evictions} "
                f"evictions, {mib(entries.bytes)} held (bound {mib(entries.max_bytes)})"
            )
        after = memory()
    finally:
        con.close()
    print("\nmemory of this process (read-only connection to the file):")
    before = "peak during the build:" if built else "peak before opening (no build):"
    print(f"  {before:<33} VmHWM {mib(build_peak)}")
    print(f"  after opening the file:           VmRSS {mib(opened['VmRSS'])}")
    what = "since the build (peak reset)" if peak_reset else "whole process (peak not resettable)"
    print(
        f"  after the queries and checks:     VmRSS {mib(after['VmRSS'])}  VmHWM {mib(after['VmHWM'])} ({what})"
    )
    print(f"  file size: {file_size(args.db) / 1e6:,.0f} MB ({mib(file_size(args.db))})")
    if not args.no_server_rss:
        server_rss(args.db)


if __name__ == "__main__":
    main()
