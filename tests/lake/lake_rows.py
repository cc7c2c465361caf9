"""Rows for the lake tests, and the checks they share: the lake's rollups against a recomputation
from its own ``requests``."""

from __future__ import annotations

import random
from typing import Any

import duckdb
import pyarrow as pa

from user_metrics.store import dims, rollups
from user_metrics.store.batches import to_arrow
from user_metrics.store.records import RequestRecord

DAY0_NS = 1_790_000_000 * 10**9  # 2026-09-21, a fixed past instant: two days of spans from it
MODELS = ("gpt-4o-mini", "gpt-4o", "claude-sonnet-4-5")


def rows(seed: int, count: int, *, trace: str = "t") -> pa.Table:
    """``count`` priced LLM calls of a few users over two days; span ids unique per (seed, i)."""
    rng = random.Random(seed)
    records = []
    for i in range(count):
        records.append(
            RequestRecord(
                trace_id=f"{trace}{seed:04d}".ljust(32, "0"),
                span_id=f"{seed:04d}{i:012d}",
                parent_span_id=None,
                start_time_unix_nano=DAY0_NS + rng.randrange(2 * 86_400) * 10**9 + rng.randrange(10**9),
                duration_ms=rng.uniform(50, 5000),
                user_id=rng.choice(["alice", "bob", "carol", "dave", None]),
                session_id=None,
                service_name=rng.choice(["api", "worker"]),
                environment="prod",
                operation="chat",
                provider="openai",
                request_model=rng.choice(MODELS),
                response_model=None,
                input_tokens=rng.randrange(1, 5000),
                output_tokens=rng.randrange(1, 2000),
                cache_read_tokens=None,
                cache_write_tokens=None,
                reasoning_tokens=None,
                cost_usd=None,
                cost_source=None,
                status=rng.choice(["ok", "ok", "ok", "error"]),
                error_type=None,
                streaming=None,
                properties={"plan": rng.choice(["free", "pro"])},
            )
        )
    return to_arrow(records, [rng.randrange(1, 10**7) for _ in records], ["computed"] * count)


_DIMS = ", ".join(f"d.{c}" for c in (*dims.COLUMNS, "properties"))


def cells(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[Any, ...]]]:
    """Every rollup's cells summed, keyed by user id and dims values (not by the keys, which a
    lake and a recomputation allocate differently)."""
    found = {}
    for rollup in rollups.ROLLUPS:
        keys = [k for k in ([rollup.bucket] if rollup.bucket else []) + list(rollup.keys)]
        named = ["u.user_id" if k == "user_key" else _DIMS if k == "dims_id" else f"r.{k}" for k in keys]
        joins = ("JOIN users AS u USING (user_key) " if "user_key" in keys else "") + (
            "JOIN dims AS d USING (dims_id) " if "dims_id" in keys else ""
        )
        # duration_sum is a DOUBLE: sums in another order differ in the last bits.
        values = "sum(n)" if rollup.counts else ", ".join(_value(m) for m in rollups.METRIC_NAMES)
        found[rollup.table] = con.execute(
            f"SELECT {', '.join(named)}, {values} FROM {rollup.table} AS r {joins}GROUP BY ALL ORDER BY ALL"
        ).fetchall()
    return found


def _value(metric: str) -> str:
    aggregate = rollups.aggregate(metric)
    return f"round({aggregate}, 3)" if metric == "duration_sum" else aggregate


def recomputed(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[Any, ...]]]:
    """``cells`` of rollups built afresh, in a new local DuckDB, from the lake's ``requests``."""
    table = con.execute("SELECT * FROM requests").to_arrow_table()
    fresh = duckdb.connect()
    try:
        for ddl in rollups.DDL:
            fresh.execute(ddl)
        fresh.register("lake_requests", table)
        rollups.apply(fresh, "lake_requests", 1000)
        return cells(fresh)
    finally:
        fresh.close()


def check_exact(con: duckdb.DuckDBPyConnection, expected_rows: int) -> None:
    """The lake holds ``expected_rows`` distinct spans, its keys are unique, its rollups exact."""
    assert con.execute("SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM requests").fetchall() == [
        (expected_rows, expected_rows)
    ]
    assert con.execute("SELECT count(*) - count(DISTINCT user_id) - 1 FROM users").fetchall() == [(0,)]
    assert con.execute("SELECT count(*) - count(DISTINCT user_key) FROM users").fetchall() == [(0,)]
    assert con.execute("SELECT count(*) - count(DISTINCT dims_hash) FROM dims").fetchall() == [(0,)]
    assert con.execute("SELECT count(*) - count(DISTINCT dims_id) FROM dims").fetchall() == [(0,)]
    assert cells(con) == recomputed(con)
