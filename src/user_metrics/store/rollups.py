"""Rollups: exact per-user aggregates kept beside ``requests``, updated in the same transaction.

Queries over a 30-day window must not scan ten million request rows, so every commit also
adds its new rows to small aggregate tables (the write path calls ``apply``):

- ``users``: one integer key per user id (key 0 is "no user id"), so rollups group on integers.
- ``dims``: one id per distinct (service, environment, provider, request model, response model,
  properties), at most ``max_dimension_values`` values of each (``dims.py``); filters on any of
  those become ``dims_id IN (...)`` over a small table.
- ``rollup_user_day``: per UTC day, user and dims: counts, token sums, exact cost (DECIMAL),
  latency sum, first and last request (epoch microseconds).
- ``rollup_user_hour``: the same per UTC hour, for hourly charts and the partial days at the
  edges of a window.
- ``rollup_latency_day``: per UTC day, user and dims, request counts in logarithmic latency
  buckets (8 per doubling), from which p50/p95 are read with at most 4.4 % relative error.
- ``rollup_hour``: the whole application per UTC hour and dims (hourly charts and totals).

Days and hours are integers counted from the Unix epoch in UTC, so no time zone setting can
shift a bucket. Everything but the latency percentiles is exact: the query layer adds the
request rows at the ragged edges of a window to the whole days (or hours) inside it.

Rollup tables are append-only: each commit appends its own partial sums, and every query sums
cells anyway, so a cell split over several rows is still exact. ``compact`` merges the rows of
the buckets written since the last compaction (the store's writer calls it every so often), so
tables stay about one row per cell. There are no indexes on them: upserts through a primary key
made each commit ~20x slower as the tables grew, and the ART indexes cost memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pyarrow as pa

from user_metrics.store import dims

US_PER_DAY = 86_400_000_000
US_PER_HOUR = 3_600_000_000
LATENCY_BUCKETS_PER_DOUBLING = 8

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


def aggregate(name: str, expr: str | None = None) -> str:
    """How values of metric ``name`` (the column, or ``expr``) combine: min, max or sum."""
    fn = {"first_us": "min", "last_us": "max"}.get(name, "sum")
    return f"{fn}({expr or name})"


# Every metric column, combined over the rows of a group.
SUMS = ", ".join(f"{aggregate(name)} AS {name}" for name in METRIC_NAMES)


_METRIC_COLUMNS = ",\n    ".join(f"{name} {kind} NOT NULL" for name, kind, _ in METRICS)

DDL: tuple[str, ...] = (
    "CREATE SEQUENCE IF NOT EXISTS user_key_seq START 1",
    """CREATE TABLE IF NOT EXISTS users (
    user_key BIGINT NOT NULL DEFAULT nextval('user_key_seq'),
    user_id  VARCHAR UNIQUE
)""",
    "INSERT INTO users SELECT 0, NULL WHERE NOT EXISTS (SELECT 1 FROM users WHERE user_key = 0)",
    *dims.DDL,
    f"""CREATE TABLE IF NOT EXISTS rollup_user_day (
    day INTEGER NOT NULL, user_key BIGINT NOT NULL, dims_id INTEGER NOT NULL,
    {_METRIC_COLUMNS}
)""",
    f"""CREATE TABLE IF NOT EXISTS rollup_user_hour (
    hour INTEGER NOT NULL, user_key BIGINT NOT NULL, dims_id INTEGER NOT NULL,
    {_METRIC_COLUMNS}
)""",
    """CREATE TABLE IF NOT EXISTS rollup_latency_day (
    day INTEGER NOT NULL, user_key BIGINT NOT NULL, dims_id INTEGER NOT NULL,
    bucket SMALLINT NOT NULL, n BIGINT NOT NULL
)""",
    f"""CREATE TABLE IF NOT EXISTS rollup_hour (
    hour INTEGER NOT NULL, dims_id INTEGER NOT NULL,
    {_METRIC_COLUMNS}
)""",
    # All-time totals, for /metrics: per user, per dims, and a duration histogram per dims.
    f"""CREATE TABLE IF NOT EXISTS user_totals (
    user_key BIGINT NOT NULL,
    {_METRIC_COLUMNS}
)""",
    f"""CREATE TABLE IF NOT EXISTS dims_totals (
    dims_id INTEGER NOT NULL,
    {_METRIC_COLUMNS}
)""",
    """CREATE TABLE IF NOT EXISTS dims_durations (
    dims_id INTEGER NOT NULL, le SMALLINT NOT NULL, n BIGINT NOT NULL
)""",
)

TABLES = (
    "rollup_user_day",
    "rollup_user_hour",
    "rollup_latency_day",
    "rollup_hour",
    "user_totals",
    "dims_totals",
    "dims_durations",
    *dims.TABLES,
    "users",
)
SEQUENCES = ("user_key_seq", *dims.SEQUENCES)

# Upper bounds (seconds) of the request-duration histogram that /metrics exposes; +Inf is implied.
DURATION_BOUNDS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
# Index of the first bound a duration fits under (len(DURATION_BOUNDS) for +Inf).
DURATION_LE_SQL = (
    "coalesce(list_position(list_transform("
    + repr(list(DURATION_BOUNDS))
    + ", b -> duration_ms <= b * 1000), true) - 1, "
    + str(len(DURATION_BOUNDS))
    + ")::SMALLINT"
)


@dataclass
class Touched:
    """What a commit appended to: UTC hours since the epoch and user keys, for ``compact``; and
    how many of its requests had a value folded into ``(other)`` (``max_dimension_values``)."""

    hours: set[int]
    users: set[int]
    folded: int = 0

    def __ior__(self, other: Touched) -> Touched:
        self.hours |= other.hours
        self.users |= other.users
        return self

    def __bool__(self) -> bool:
        return bool(self.hours or self.users)


def apply(
    con: duckdb.DuckDBPyConnection, rows: str, max_dimension_values: int, lake: bool = False
) -> Touched:
    """Add the request rows of relation ``rows`` to every rollup (inside the caller's transaction;
    ``lake``: on a DuckLake connection, ``dims.insert_new`` and ``dims.hash_sql``).

    Values beyond ``max_dimension_values`` per dimension are folded into ``(other)`` (``dims.py``).

    Vectorised, in as few statements as DuckDB allows (each statement returns to Python and has
    to win the GIL back from busy mapper threads): one execute keys the users, hashes each
    distinct dims combination once (not each row) and builds ``rollup_input``, one row per
    request with its user key and dims id; only when a combination is new does ``dims.assign``
    run. A second execute sums the rows into ``rollup_cells``, one row per (hour, user, dims),
    appends every rollup from those cells (the latency histograms from the rows), and returns
    what was touched. Each commit thus appends at most one row per cell of each table.
    """
    missing, hours, users = con.execute(_input_sql(rows, lake)).fetchone() or (0, [], [])
    folded = dims.assign(con, rows, "rollup_input", max_dimension_values, lake) if missing else 0
    # No DROP on failure: the caller's rollback removes the tables, and a statement on an aborted
    # transaction would hide the real error behind "transaction is aborted".
    con.execute(_APPEND_SQL)
    return Touched({int(h) for h in hours or ()}, {int(u) for u in users or ()}, folded)


_DIMS = (*dims.COLUMNS, "properties")


def _input_sql(rows: str, lake: bool) -> str:
    """Key new users; ``rollup_input``: a row per request of ``rows`` with its user key, dims
    hash ``h`` and dims id (NULL for a combination not yet in ``dims``); then how many lack one,
    and the hours and user keys it touches."""
    contributions = ", ".join(f"{expr} AS {name}" for name, _, expr in METRICS)
    combination = ", ".join(_DIMS)
    same = " AND ".join(f"r.{c} IS NOT DISTINCT FROM c.{c}" for c in _DIMS)
    new_users = f"SELECT DISTINCT user_id FROM {rows} WHERE user_id IS NOT NULL"
    return f"""
    {dims.insert_new("users", "user_key", "user_id", "user_id", new_users, lake)};
    CREATE OR REPLACE TEMP TABLE rollup_input AS
    WITH combinations AS (
        SELECT c.*, d.dims_id FROM (
            SELECT *, {dims.hash_sql(lake)} AS h FROM (SELECT DISTINCT {combination} FROM {rows})) AS c
        LEFT JOIN dims AS d ON d.dims_hash = c.h)
    SELECT epoch_us(r.start_time) AS us, coalesce(u.user_key, 0) AS user_key, c.dims_id, c.h,
           {LATENCY_BUCKET_SQL} AS bucket, {DURATION_LE_SQL} AS le, duration_ms, {contributions}
    FROM {rows} AS r JOIN combinations AS c ON {same}
    LEFT JOIN users AS u ON u.user_id = r.user_id;
    SELECT count(*) FILTER (WHERE dims_id IS NULL), list(DISTINCT us // {US_PER_HOUR}),
           list(DISTINCT user_key)
    FROM rollup_input"""


@dataclass(frozen=True)
class _Rollup:
    table: str
    bucket: str | None  # "day", "hour", or None for all time
    keys: tuple[str, ...]  # besides the time bucket
    counts: bool = False  # a histogram: n requests per key, instead of the metrics

    @property
    def columns(self) -> str:
        return ", ".join(([self.bucket] if self.bucket else []) + list(self.keys))

    def values(self, source_rows: bool) -> str:
        """Aggregates over request contributions (source_rows) or over rows of this table."""
        if self.counts:
            return "count(*) AS n" if source_rows else "sum(n) AS n"
        return SUMS

    def append(self) -> str:
        """Append this commit's cells: histograms from ``rollup_input``'s request rows, the rest
        from ``rollup_cells`` (already one row per hour, user and dims), in time order."""
        bucket = ""
        if self.bucket == "day":
            bucket = f"us // {US_PER_DAY} AS day, " if self.counts else "hour // 24 AS day, "
        elif self.bucket == "hour":
            bucket = "hour, "
        source = "rollup_input WHERE duration_ms IS NOT NULL" if self.counts else "rollup_cells"
        return f"""INSERT INTO {self.table}
        SELECT {bucket}{", ".join(self.keys)}, {self.values(self.counts)} FROM {source}
        GROUP BY ALL ORDER BY 1"""


ROLLUPS = (
    _Rollup("rollup_user_day", "day", ("user_key", "dims_id")),
    _Rollup("rollup_user_hour", "hour", ("user_key", "dims_id")),
    _Rollup("rollup_hour", "hour", ("dims_id",)),
    _Rollup("rollup_latency_day", "day", ("user_key", "dims_id", "bucket"), counts=True),
    _Rollup("user_totals", None, ("user_key",)),
    _Rollup("dims_totals", None, ("dims_id",)),
    _Rollup("dims_durations", None, ("dims_id", "le"), counts=True),
)


# Sums the rows of rollup_input into one row per (hour, user, dims), appends every rollup from
# them, and drops both.
_APPEND_SQL = ";\n".join(
    (
        f"""CREATE OR REPLACE TEMP TABLE rollup_cells AS
        SELECT us // {US_PER_HOUR} AS hour, user_key, dims_id,
               {", ".join(f"{aggregate(name)} AS {name}" for name in METRIC_NAMES)}
        FROM rollup_input GROUP BY ALL""",
        *(rollup.append() for rollup in ROLLUPS),
        "DROP TABLE rollup_input",
        "DROP TABLE rollup_cells",
    )
)


def touched_keys(touched: Touched) -> dict[str, pa.Table]:
    """The keys ``compact`` merges, as the Arrow tables the caller registers around it:
    ``touched_days``, ``touched_hours`` and ``touched_users`` (one column ``k`` each).

    Tables, not list parameters: DuckDB binds a list parameter of tens of thousands of values
    in seconds (``IN (SELECT unnest($users))`` took 6.7 s for 40,000 users; a registered table,
    5 ms)."""
    days = {h * US_PER_HOUR // US_PER_DAY for h in touched.hours}
    return {
        f"touched_{name}": pa.table({"k": pa.array(sorted(keys), kind)})
        for name, keys, kind in (
            ("days", days, pa.int32()),
            ("hours", touched.hours, pa.int32()),
            ("users", touched.users, pa.int64()),
        )
    }


def compact(con: duckdb.DuckDBPyConnection, touched: Touched) -> int:
    """Merge the rows of each cell written to since the last compaction; returns the rows removed.

    Runs inside the caller's transaction, so readers see the tables before or after, never half;
    the caller registers ``touched_keys(touched)``.
    """
    if not touched:
        return 0
    removed = 0
    for rollup in ROLLUPS:
        if rollup.bucket:
            inside = f"{rollup.bucket} IN (SELECT k FROM touched_{rollup.bucket}s)"
        elif "user_key" in rollup.keys:
            inside = "user_key IN (SELECT k FROM touched_users)"
        else:
            inside = "TRUE"  # per-dims tables: a few rows, merged whole
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE compacted AS
            SELECT {rollup.columns}, {rollup.values(False)} FROM {rollup.table} WHERE {inside}
            GROUP BY ALL ORDER BY ALL"""
        )
        (before,) = con.execute(f"DELETE FROM {rollup.table} WHERE {inside}").fetchone() or (0,)
        (after,) = con.execute(f"INSERT INTO {rollup.table} SELECT * FROM compacted").fetchone() or (0,)
        removed += int(before) - int(after)
        con.execute("DROP TABLE compacted")
    return removed


def rebuild(con: duckdb.DuckDBPyConnection, max_dimension_values: int) -> None:
    """Drop the rollups and build them again from ``requests`` (inside the caller's transaction)."""
    for table in TABLES:
        con.execute(f"DROP TABLE IF EXISTS {table}")
    for sequence in SEQUENCES:
        con.execute(f"DROP SEQUENCE IF EXISTS {sequence}")
    for ddl in DDL:
        con.execute(ddl)
    apply(con, "requests", max_dimension_values)  # one statement per table: each cell is one row
