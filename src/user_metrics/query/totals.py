"""Totals: the whole application in a window."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import duckdb

from user_metrics.query import profit, revenue, scope
from user_metrics.query.cells import APP_HOUR, PER_USER, CellSql
from user_metrics.query.results import Totals
from user_metrics.query.scope import fetch_dicts, ints_of, statement
from user_metrics.query.window import Instant
from user_metrics.store.rollups import METRIC_NAMES, US_PER_DAY, US_PER_HOUR


def totals(
    con: duckdb.DuckDBPyConnection,
    since: Instant = None,
    until: Instant = None,
    *,
    properties: Any = None,
    model: str | None = None,
    service: str | None = None,
    environment: str | None = None,
    tz: str | None = None,
    now: Callable[[], datetime] = scope.now,
) -> Totals:
    """The whole application in the window."""
    q = statement(con, since, until, now, properties, model, service, environment, tz, whole_days=True)
    window = q.window
    sums = ", ".join(
        f"coalesce(sum({m}), 0) AS {m}" for m in METRIC_NAMES if m not in ("first_us", "last_us")
    )
    # Sums from the application's hourly rollup; who was active needs the per-user cells.
    (row,) = fetch_dicts(
        con, f"SELECT {sums} FROM ({q.cells((APP_HOUR,), US_PER_HOUR, by_user=False)})", q.params
    )
    q.begin()
    (who,) = fetch_dicts(
        con,
        f"""SELECT count(DISTINCT user_key) FILTER (user_key <> 0) AS users,
                   coalesce(sum(requests) FILTER (user_key = 0), 0) AS anonymous_requests
            FROM ({q.cells(PER_USER, US_PER_DAY, whole_days=True)})""",
        q.params,
    )
    row |= who
    row = ints_of(row)
    count = row.pop("duration_count")
    duration = row.pop("duration_sum")
    row.pop("priced_requests")
    result = Totals(
        since=window.since,
        until=window.until,
        total_tokens=row["input_tokens"] + row["output_tokens"],
        avg_latency_ms=float(duration) / count if count else None,
        **row,
    )
    return profit.with_margins(result, _revenue(con, q))


def _revenue(con: duckdb.DuckDBPyConnection, q: CellSql) -> Decimal | None:
    """Revenue in the window: every user's, or with a filter active only that of the users with a
    matching request (so that it is the sum over ``users()``); None without a revenue source."""
    q.begin()
    rel = revenue.revenue_sql(con, q.window, q.params, total=not q.filters.active)
    if rel is None:
        return None
    where = ""
    if q.filters.active:
        where = (
            f" WHERE user_key IN (SELECT user_key FROM ({q.cells(PER_USER, US_PER_DAY, whole_days=True)}))"
        )
    (row,) = fetch_dicts(con, f"SELECT coalesce(sum(revenue_nanos), 0) AS n FROM ({rel}){where}", q.params)
    return revenue.to_usd(row["n"])
