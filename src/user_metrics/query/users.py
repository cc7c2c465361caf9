"""Users: the page of users active in a window, one user's fields, and one user's latest requests.

Per-user fields are aggregates over the cells of the window (``_FIELD_SQL``), with the models a
user called; ``active_days`` counts the local days of the window's zone
(``CellSql.active_days_sql``); p50 and p95 latency come from the latency buckets.
``count_stored_users`` counts every user ever stored, without reading a window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import duckdb

from user_metrics.errors import InvalidInput, NotFound
from user_metrics.query import profit, revenue, scope
from user_metrics.query.cells import PER_USER, CellSql
from user_metrics.query.folding import folded
from user_metrics.query.results import (
    PROFIT_FIELDS,
    SORTABLE_USER_FIELDS,
    ModelUsage,
    RecentRequests,
    RequestRecord,
    UserPage,
    UserStats,
)
from user_metrics.query.scope import MAX_PAGE, fetch_dicts, ints_of, statement, user_key
from user_metrics.query.window import Instant, from_micros
from user_metrics.store import dims
from user_metrics.store.dims import MODEL_SQL
from user_metrics.store.rollups import LATENCY_BUCKETS_PER_DOUBLING, US_PER_DAY

MAX_OFFSET = 2**63 - 1


def _ints(values: Sequence[int]) -> str:
    return ", ".join(str(int(v)) for v in values) or "NULL"


# DuckDB's OFFSET is a BIGINT
MAX_RECENT = 1000


# Per-user fields as aggregates over cells; p50/p95 and models are computed separately.
_FIELD_SQL = {
    "requests": "sum(requests)",
    "errors": "sum(errors)",
    "input_tokens": "sum(input_tokens)",
    "output_tokens": "sum(output_tokens)",
    "cache_read_tokens": "sum(cache_read_tokens)",
    "cache_write_tokens": "sum(cache_write_tokens)",
    "reasoning_tokens": "sum(reasoning_tokens)",
    "total_tokens": "sum(input_tokens) + sum(output_tokens)",
    "cost_usd": "CASE WHEN sum(priced_requests) > 0 THEN sum(cost_usd) END",
    "unpriced_requests": "sum(unpriced_requests)",
    "first_active": "min(first_us)",
    "last_active": "max(last_us)",
    "active_days": "{active_days}",
    "avg_requests_per_active_day": "sum(requests) / {active_days}",
    "avg_tokens_per_request": "(sum(input_tokens) + sum(output_tokens)) / sum(requests)",
    "avg_latency_ms": "sum(duration_sum) / nullif(sum(duration_count), 0)",
    "error_rate": "sum(errors) / nullif(sum(requests), 0)",
}
_ACTIVE_DAYS = ("active_days", "avg_requests_per_active_day")


def _field_sql(q: CellSql, name: str) -> str:
    """The aggregate of field ``name``: active days count local days of the window's zone."""
    expr = _FIELD_SQL[name]
    return expr.format(active_days=q.active_days_sql()) if name in _ACTIVE_DAYS else expr


_PERCENTILES = {"p50_latency_ms": 0.5, "p95_latency_ms": 0.95}
_MODEL_FIELDS = ("provider", "model", "requests", "cost_usd", "unpriced_requests")


def _percentiles(
    con: duckdb.DuckDBPyConnection, q: CellSql, users: Sequence[int] | None
) -> dict[int, dict[str, float | None]]:
    q.begin()
    picks = ", ".join(
        f"min(bucket) FILTER (cum >= {p} * total) AS {name}" for name, p in _PERCENTILES.items()
    )
    sql = f"""WITH h AS (SELECT user_key, bucket, sum(n) AS n FROM ({q.latency_cells(users)}) GROUP BY ALL),
        c AS (SELECT user_key, bucket,
                     sum(n) OVER (PARTITION BY user_key ORDER BY bucket) AS cum,
                     sum(n) OVER (PARTITION BY user_key) AS total FROM h)
        SELECT user_key, {picks} FROM c GROUP BY user_key"""
    out = {}
    for row in fetch_dicts(con, sql, q.params):
        key = row.pop("user_key")
        out[key] = {name: _bucket_value(b) for name, b in row.items()}
    return out


def _bucket_value(bucket: int | None) -> float | None:
    """The geometric middle of a latency bucket: within 4.4 % of any value in it."""
    if bucket is None:
        return None
    return round(2 ** ((bucket + 0.5) / LATENCY_BUCKETS_PER_DOUBLING), 3)


def _user_stats(con: duckdb.DuckDBPyConnection, q: CellSql, keys: Sequence[int]) -> dict[int, UserStats]:
    """Every per-user field for the given user keys: one scan for the fields and the models."""
    if not keys:
        return {}
    fields = ", ".join(f"{_field_sql(q, name)} AS {name}" for name in _FIELD_SQL)
    by_model = {
        "provider": ("d.provider", "provider"),
        "model": ("coalesce(d.request_model, d.response_model)", MODEL_SQL),
    }
    # A model folded into (other) must be named: then the breakdown reads the request rows.
    rows_only = folded(con, dims.MODEL_DIMENSIONS)
    with q.narrowed(con, keys):  # cached whole days: these users' rows only
        cells = q.begin().cells(PER_USER, US_PER_DAY, keys, by_model, rows_only=rows_only, whole_days=True)
        rows = fetch_dicts(
            con,
            f"""SELECT u.user_id, a.* FROM (
                    SELECT user_key, provider, model, GROUPING(provider, model) AS whole_user, {fields}
                    FROM ({cells})
                    GROUP BY GROUPING SETS ((user_key), (user_key, provider, model))) AS a
                JOIN users AS u USING (user_key)
                ORDER BY cost_usd DESC NULLS LAST, requests DESC, provider, model""",
            q.params,
        )
        latency = _percentiles(con, q, keys)
    models: dict[int, list[ModelUsage]] = {}
    totals: dict[int, dict[str, Any]] = {}
    for row in rows:
        row = ints_of(row)
        if row.pop("whole_user"):
            totals[row["user_key"]] = row
        else:
            models.setdefault(row["user_key"], []).append(ModelUsage(**{f: row[f] for f in _MODEL_FIELDS}))
    out = {}
    for key, row in totals.items():
        fields_of = {name: row[name] for name in _FIELD_SQL}
        fields_of["first_active"] = from_micros(row["first_active"])
        fields_of["last_active"] = from_micros(row["last_active"])
        for name in ("avg_requests_per_active_day", "avg_tokens_per_request", "avg_latency_ms", "error_rate"):
            fields_of[name] = None if row[name] is None else float(row[name])
        out[key] = UserStats(
            user_id=row["user_id"],
            **fields_of,
            **latency.get(key, dict.fromkeys(_PERCENTILES)),
            models=tuple(models.get(key, ())),
        )
    return out


def users(
    con: duckdb.DuckDBPyConnection,
    since: Instant = None,
    until: Instant = None,
    *,
    sort: str = "-cost_usd",
    limit: int = 100,
    offset: int = 0,
    search: str | None = None,
    properties: Any = None,
    model: str | None = None,
    service: str | None = None,
    environment: str | None = None,
    tz: str | None = None,
    now: Callable[[], datetime] = scope.now,
) -> UserPage:
    """One row per user active in the window, sorted (``-field`` for descending), paged.

    ``search`` keeps the users whose id contains it, ignoring case (the null user never matches).
    ``tz`` (None: UTC): the zone calendar periods, naive instants and active days are read in.
    """
    descending = sort.startswith("-")
    field = sort[1:] if sort[:1] in ("-", "+") else sort
    if field not in SORTABLE_USER_FIELDS:
        raise InvalidInput(f"sort: {field!r} is not a user field; one of {', '.join(SORTABLE_USER_FIELDS)}")
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit: must be between 1 and {MAX_PAGE}, got {limit}")
    if not 0 <= offset <= MAX_OFFSET:
        raise InvalidInput(f"offset: must be from 0 to {MAX_OFFSET}, got {offset}")
    q = statement(con, since, until, now, properties, model, service, environment, tz, whole_days=True)
    window = q.window
    if search is not None and not search.strip():
        search = None
    page: list[tuple[int | None, str | None, Decimal | None]]
    if field in _PERCENTILES:
        page, total = _rank_by_latency(con, q, field, descending, limit, offset, search)
    else:
        q.begin()
        value = None if field in PROFIT_FIELDS or field == "user_id" else _field_sql(q, field)
        ranked, known = profit.ranked_sql(con, q, field, value, with_ids=search is not None)
        if search is not None:
            q.params["search"] = search
            ranked = f"SELECT * FROM ({ranked}) WHERE contains(lower(user_id), lower($search))"
        order = f"s {'DESC' if descending else 'ASC'} NULLS LAST, user_key NULLS LAST, user_id"
        # The total by a scalar subquery, not count(*) OVER (): with ORDER BY and LIMIT, DuckDB
        # 1.5.5 fails that now and then with an INTERNAL error that invalidates the database
        # (duckdb/duckdb#22352). MATERIALIZED: the ranking is computed once.
        rows = fetch_dicts(
            con,
            f"WITH ranked AS MATERIALIZED ({ranked}) SELECT user_key, user_id, rev, "
            f"(SELECT count(*) FROM ranked) AS total FROM ranked "
            f"ORDER BY {order} LIMIT {limit} OFFSET {offset}",
            q.params,
        )
        page = [(r["user_key"], r["user_id"], profit.revenue_of(r["rev"], known)) for r in rows]
        if known and field not in PROFIT_FIELDS:  # the ranking left revenue out: the page's own
            revenues = profit.page_revenue(con, q, [(k, u) for k, u, _ in page])
            page = [(k, u, revenues.get((k, None if k is not None else u), Decimal(0))) for k, u, _ in page]
        if rows:
            total = rows[0]["total"]
        else:
            (row,) = fetch_dicts(con, f"SELECT count(*) AS n FROM ({ranked})", q.params)
            total = row["n"]
    stats = _user_stats(con, q, [k for k, _, _ in page if k is not None])
    missing = [k for k, _, _ in page if k is not None and k not in stats]  # revenue, no request
    ids: dict[int | None, str | None] = {}
    if missing:
        ids = dict(
            con.execute(
                f"SELECT user_key, user_id FROM users WHERE user_key IN ({_ints(missing)})"
            ).fetchall()
        )
    listed = []
    for key, user_id, revenue_usd in page:
        found = stats.get(key) if key is not None else None
        fallback = _no_requests(ids.get(key, user_id))
        listed.append(profit.with_margins(found or fallback, revenue_usd))
    return UserPage(tuple(listed), int(total), window.since, window.until)


def count_stored_users(con: duckdb.DuckDBPyConnection) -> int:
    """Distinct user ids stored so far, any time (the users table, without its "no user id" row)."""
    row = con.execute("SELECT count(*) FROM users WHERE user_key <> 0").fetchone()
    return int(row[0]) if row else 0


# The user keys whose id contains $search, ignoring case; LIKE's wildcards are not special here.
_SEARCH_SQL = "SELECT user_key FROM users WHERE contains(lower(user_id), lower($search))"


def _rank_by_latency(
    con: duckdb.DuckDBPyConnection,
    q: CellSql,
    field: str,
    descending: bool,
    limit: int,
    offset: int,
    search: str | None,
) -> tuple[list[tuple[int | None, str | None, Decimal | None]], int]:
    """The slow path: percentiles of every user in the window, from the latency rollup; a page of
    (user key, user id of a user no request named, revenue)."""
    Ident = tuple[int | None, str | None]
    values: dict[Ident, float | None] = {(k, None): p[field] for k, p in _percentiles(con, q, None).items()}
    q.begin()
    everyone = fetch_dicts(
        con, f"SELECT DISTINCT user_key FROM ({q.cells(PER_USER, US_PER_DAY, whole_days=True)})", q.params
    )
    for row in everyone:  # users whose requests carry no duration sort last
        values.setdefault((row["user_key"], None), None)
    params: dict[str, Any] = {}
    rel = revenue.revenue_sql(con, q.window, params)
    revenues: dict[Ident, Decimal] = {}
    for key, user_id, nanos in con.execute(f"SELECT * FROM ({rel})", params).fetchall() if rel else ():
        ident = (key, None) if key is not None else (None, user_id)
        revenues[ident] = revenue.to_usd(nanos)
        if not q.filters.active:  # users with revenue but no request in the window are listed
            values.setdefault(ident, None)
    if search is not None:
        matching = {r["user_key"] for r in fetch_dicts(con, _SEARCH_SQL, {"search": search})}
        values = {
            i: v
            for i, v in values.items()
            if (i[0] in matching if i[0] is not None else search.lower() in (i[1] or "").lower())
        }
    sign = -1 if descending else 1
    ordered = sorted(
        values,
        key=lambda i: (values[i] is None, sign * (values[i] or 0.0), i[0] is None, i[0] or 0, i[1] or ""),
    )
    page = [
        (k, u, revenues.get((k, u), Decimal(0)) if rel else None) for k, u in ordered[offset : offset + limit]
    ]
    return page, len(ordered)


def user(
    con: duckdb.DuckDBPyConnection,
    user_id: str | None,
    since: Instant = None,
    until: Instant = None,
    *,
    properties: Any = None,
    model: str | None = None,
    service: str | None = None,
    environment: str | None = None,
    tz: str | None = None,
    now: Callable[[], datetime] = scope.now,
) -> UserStats:
    """The per-user fields of one user (``None``: requests without a user id); NotFound if unknown."""
    q = statement(con, since, until, now, properties, model, service, environment, tz, whole_days=True)
    try:
        key: int | None = user_key(con, user_id)
    except NotFound:
        if user_id is None or not revenue.has_records(con, user_id):
            raise
        key = None  # revenue was imported for a user no request named yet
    found = _user_stats(con, q, [key]) if key is not None else {}
    stats = found[key] if key in found else _no_requests(user_id)
    if not revenue.has_source(con):
        return stats
    params: dict[str, Any] = {}
    rev = revenue.revenue_sql(con, q.window, params, keys=[] if key is None else [key], ids=[user_id or ""])
    (row,) = fetch_dicts(con, f"SELECT coalesce(sum(revenue_nanos), 0) AS n FROM ({rev})", params)
    return profit.with_margins(stats, revenue.to_usd(row["n"]))


def _no_requests(user_id: str | None) -> UserStats:
    """The fields of a user without requests in the window."""
    zero: dict[str, Any] = dict.fromkeys(_FIELD_SQL, 0)
    for name in ("cost_usd", "first_active", "last_active", "avg_requests_per_active_day"):
        zero[name] = None
    for name in ("avg_tokens_per_request", "avg_latency_ms", "error_rate", *_PERCENTILES):
        zero[name] = None
    return UserStats(user_id=user_id, **zero, models=())


def recent_requests(
    con: duckdb.DuckDBPyConnection,
    user_id: str | None,
    since: Instant = None,
    until: Instant = None,
    *,
    limit: int = 20,
    properties: Any = None,
    model: str | None = None,
    service: str | None = None,
    environment: str | None = None,
    tz: str | None = None,
    now: Callable[[], datetime] = scope.now,
) -> RecentRequests:
    """One user's latest ``limit`` requests in the window, newest first (``None``: no user id).

    The user's daily rollup says how many days back the last ``limit`` requests reach, so only
    those days of ``requests`` are read.
    """
    if not 1 <= limit <= MAX_RECENT:
        raise InvalidInput(f"limit: must be between 1 and {MAX_RECENT}, got {limit}")
    q = statement(con, since, until, now, properties, model, service, environment, tz)
    window = q.window
    key = user_key(con, user_id)
    days = fetch_dicts(
        con,
        f"SELECT t, sum(requests) AS n FROM ({q.cells(PER_USER, US_PER_DAY, [key])}) "
        "GROUP BY t ORDER BY t DESC",
        q.params,
    )
    seen, first_day = 0, None
    for day in days:
        seen, first_day = seen + int(day["n"]), int(day["t"])
        if seen >= limit:
            break
    rows: list[dict[str, Any]] = []
    if first_day is not None:
        q.begin(a=from_micros(max(window.since_us, first_day * US_PER_DAY)), b=window.until)
        who = "user_id IS NULL"
        if user_id is not None:
            q.params["user"] = user_id
            who = "user_id = $user"
        rows = fetch_dicts(
            con,
            f"""SELECT start_time, trace_id, span_id, duration_ms, session_id, service_name, environment,
                       operation, provider, model, coalesce(input_tokens, 0) AS input_tokens,
                       coalesce(output_tokens, 0) AS output_tokens, cost_usd, status, error_type,
                       streaming, properties
                FROM (SELECT *, coalesce(response_model, request_model) AS model FROM requests
                      WHERE start_time >= $a AND start_time < $b AND {who})
                WHERE {q.predicate}
                ORDER BY start_time DESC, trace_id, span_id LIMIT {limit}""",
            q.params,
        )
    records = tuple(
        RequestRecord(
            **r
            | {
                "start_time": r["start_time"].astimezone(UTC),
                "total_tokens": r["input_tokens"] + r["output_tokens"],
                "properties": dict(r["properties"] or {}),
            }
        )
        for r in rows
    )
    return RecentRequests(user_id, window.since, window.until, records)
