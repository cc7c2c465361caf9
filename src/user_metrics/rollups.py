"""Rollups: exact per-user aggregates kept beside ``requests``, updated in the same transaction.

Queries over a 30-day window must not scan ten million request rows, so every commit also
adds its new rows to small aggregate tables (the write path calls ``apply``):

- ``users``: one integer key per user id (key 0 is "no user id"), so rollups group on integers.
- ``dims``: one id per distinct (service, environment, provider, model, properties); filters on
  any of those become ``dims_id IN (...)`` over a table of a few rows.
- ``rollup_user_day``: per UTC day, user and dims: counts, token sums, exact cost (DECIMAL),
  latency sum, first and last request (epoch microseconds).
- ``rollup_latency_day``: per UTC day, user and dims, request counts in logarithmic latency
  buckets (8 per doubling), from which p50/p95 are read with at most 4.4 % relative error.
- ``rollup_hour``: the whole application per UTC hour and dims (hourly charts and totals).

Days and hours are integers counted from the Unix epoch in UTC, so no time zone setting can
shift a bucket. Everything but the latency percentiles is exact: the query layer adds the
request rows at the ragged edges of a window to the whole days (or hours) inside it.
"""

from __future__ import annotations

import duckdb

US_PER_DAY = 86_400_000_000
US_PER_HOUR = 3_600_000_000
LATENCY_BUCKETS_PER_DOUBLING = 8

# The model a request is counted under: what answered, else what was asked for.
MODEL_SQL = "coalesce(response_model, request_model)"
LATENCY_BUCKET_SQL = f"floor(log2(greatest(duration_ms, 0.001)) * {LATENCY_BUCKETS_PER_DOUBLING})::SMALLINT"

# The aggregate columns every rollup cell carries, and how a request row contributes to them.
METRICS: tuple[tuple[str, str, str], ...] = (
    # name, SQL type, value of one request row
    ("requests", "BIGINT", "1"),
    ("errors", "BIGINT", "(status = 'error')::BIGINT"),
    ("unpriced_requests", "BIGINT", "(cost_source = 'unpriced')::BIGINT"),
    ("priced_requests", "BIGINT", "(cost_usd IS NOT NULL)::BIGINT"),
    ("input_tokens", "BIGINT", "coalesce(input_tokens, 0)"),
    ("output_tokens", "BIGINT", "coalesce(output_tokens, 0)"),
    ("cache_read_tokens", "BIGINT", "coalesce(cache_read_tokens, 0)"),
    ("cache_write_tokens", "BIGINT", "coalesce(cache_write_tokens, 0)"),
    ("reasoning_tokens", "BIGINT", "coalesce(reasoning_tokens, 0)"),
    ("cost_usd", "DECIMAL(18, 9)", "coalesce(cost_usd, 0)"),
    ("duration_sum", "DOUBLE", "coalesce(duration_ms, 0)"),
    ("duration_count", "BIGINT", "(duration_ms IS NOT NULL)::BIGINT"),
    ("first_us", "BIGINT", "epoch_us(start_time)"),
    ("last_us", "BIGINT", "epoch_us(start_time)"),
)
METRIC_NAMES = tuple(name for name, _, _ in METRICS)


def _merge(name: str) -> str:
    if name == "first_us":
        return "least(first_us, excluded.first_us)"
    if name == "last_us":
        return "greatest(last_us, excluded.last_us)"
    return f"{name} + excluded.{name}"


def _aggregate(name: str) -> str:
    return {"first_us": "min(first_us)", "last_us": "max(last_us)"}.get(name, f"sum({name})")


_METRIC_COLUMNS = ",\n    ".join(f"{name} {kind} NOT NULL" for name, kind, _ in METRICS)

DDL: tuple[str, ...] = (
    "CREATE SEQUENCE IF NOT EXISTS user_key_seq START 1",
    """CREATE TABLE IF NOT EXISTS users (
    user_key BIGINT PRIMARY KEY DEFAULT nextval('user_key_seq'),
    user_id  VARCHAR UNIQUE
)""",
    "INSERT INTO users VALUES (0, NULL) ON CONFLICT DO NOTHING",
    "CREATE SEQUENCE IF NOT EXISTS dims_id_seq START 1",
    """CREATE TABLE IF NOT EXISTS dims (
    dims_id      INTEGER PRIMARY KEY DEFAULT nextval('dims_id_seq'),
    dims_hash    UHUGEINT UNIQUE NOT NULL,
    service_name VARCHAR,
    environment  VARCHAR,
    provider     VARCHAR,
    model        VARCHAR,
    properties   MAP(VARCHAR, VARCHAR)
)""",
    f"""CREATE TABLE IF NOT EXISTS rollup_user_day (
    day INTEGER NOT NULL, user_key BIGINT NOT NULL, dims_id INTEGER NOT NULL,
    {_METRIC_COLUMNS},
    PRIMARY KEY (day, user_key, dims_id)
)""",
    "CREATE INDEX IF NOT EXISTS rollup_user_day_user ON rollup_user_day (user_key)",
    """CREATE TABLE IF NOT EXISTS rollup_latency_day (
    day INTEGER NOT NULL, user_key BIGINT NOT NULL, dims_id INTEGER NOT NULL,
    bucket SMALLINT NOT NULL, n BIGINT NOT NULL,
    PRIMARY KEY (day, user_key, dims_id, bucket)
)""",
    "CREATE INDEX IF NOT EXISTS rollup_latency_day_user ON rollup_latency_day (user_key)",
    f"""CREATE TABLE IF NOT EXISTS rollup_hour (
    hour INTEGER NOT NULL, dims_id INTEGER NOT NULL,
    {_METRIC_COLUMNS},
    PRIMARY KEY (hour, dims_id)
)""",
)

# A canonical, unambiguous identity for a dims combination (property order does not matter).
DIMS_HASH_SQL = (
    "md5_number(to_json({s: service_name, e: environment, p: provider, m: "
    + MODEL_SQL
    + ", props: map_from_entries(list_sort(map_entries(properties)))}))"
)


def apply(con: duckdb.DuckDBPyConnection, rows: str) -> None:
    """Add the request rows of relation ``rows`` to every rollup (inside the caller's transaction)."""
    con.execute(
        f"INSERT INTO users (user_id) SELECT DISTINCT user_id FROM {rows} WHERE user_id IS NOT NULL "
        "ON CONFLICT (user_id) DO NOTHING"
    )
    con.execute(
        f"""INSERT INTO dims (dims_hash, service_name, environment, provider, model, properties)
        SELECT DISTINCT ON (h) h, service_name, environment, provider, {MODEL_SQL}, properties
        FROM (SELECT *, {DIMS_HASH_SQL} AS h FROM {rows})
        ON CONFLICT (dims_hash) DO NOTHING"""
    )
    contributions = ", ".join(f"{expr} AS {name}" for name, _, expr in METRICS)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE rollup_input AS
        SELECT epoch_us(r.start_time) AS us, coalesce(u.user_key, 0) AS user_key, d.dims_id,
               {LATENCY_BUCKET_SQL} AS bucket, duration_ms, {contributions}
        FROM (SELECT *, {DIMS_HASH_SQL} AS h FROM {rows}) AS r
        LEFT JOIN users AS u ON u.user_id = r.user_id
        JOIN dims AS d ON d.dims_hash = r.h"""
    )
    try:
        sums = ", ".join(f"{_aggregate(name)} AS {name}" for name in METRIC_NAMES)
        merges = ", ".join(f"{name} = {_merge(name)}" for name in METRIC_NAMES)
        con.execute(
            f"""INSERT INTO rollup_user_day
            SELECT us // {US_PER_DAY} AS day, user_key, dims_id, {sums} FROM rollup_input GROUP BY ALL
            ON CONFLICT DO UPDATE SET {merges}"""
        )
        con.execute(
            f"""INSERT INTO rollup_hour
            SELECT us // {US_PER_HOUR} AS hour, dims_id, {sums} FROM rollup_input GROUP BY ALL
            ON CONFLICT DO UPDATE SET {merges}"""
        )
        con.execute(
            f"""INSERT INTO rollup_latency_day
            SELECT us // {US_PER_DAY} AS day, user_key, dims_id, bucket, count(*) AS n
            FROM rollup_input WHERE duration_ms IS NOT NULL GROUP BY ALL
            ON CONFLICT DO UPDATE SET n = n + excluded.n"""
        )
    finally:
        con.execute("DROP TABLE rollup_input")
