"""Custom properties: usage per value of one property key, and the keys recorded so far."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import duckdb

from user_metrics.errors import InvalidInput
from user_metrics.query import profit, revenue, scope
from user_metrics.query.cells import PER_USER
from user_metrics.query.folding import folded
from user_metrics.query.results import (
    DEFAULT_VALUES,
    MAX_VALUES,
    PropertyBreakdown,
    PropertyKeys,
    PropertyValue,
)
from user_metrics.query.scope import fetch_dicts, ints_of, statement
from user_metrics.query.window import Instant
from user_metrics.store import dims
from user_metrics.store.rollups import US_PER_DAY

NANO = Decimal("0.000000001")


def by_property(
    con: duckdb.DuckDBPyConnection,
    key: str,
    since: Instant = None,
    until: Instant = None,
    *,
    limit: int = DEFAULT_VALUES,
    properties: Any = None,
    model: str | None = None,
    service: str | None = None,
    environment: str | None = None,
    tz: str | None = None,
    now: Callable[[], datetime] = scope.now,
) -> PropertyBreakdown:
    """Users, requests and cost per value of property ``key``, the ``limit`` costliest values.

    ``avg_cost_per_user`` is the cost of the requests that name a user divided by those users;
    requests without the property are the value ``None``. ``total_values`` counts every value
    in the window, ``truncated`` says whether some were left out.
    """
    key = key.strip().lower()
    if not key:
        raise InvalidInput("key: name a property, e.g. plan")
    if not 1 <= limit <= MAX_VALUES:
        raise InvalidInput(f"limit: must be between 1 and {MAX_VALUES}, got {limit}")
    q = statement(con, since, until, now, properties, model, service, environment, tz, whole_days=True)
    window = q.window
    q.params["pkey"] = key
    # Values folded into (other) must be named: then the breakdown reads the request rows.
    rows_only = folded(con, [dims.property_dimension(key)])
    # Rollup cells carry dims_id, request rows their value; both meet after a first aggregation.
    extra = {"dims_id": ("c.dims_id", "NULL::INTEGER"), "pvalue": ("NULL::VARCHAR", "properties[$pkey]")}
    cells = q.cells(PER_USER, US_PER_DAY, None, extra, rows_only=rows_only, whole_days=True)
    per_user = f"""
        SELECT coalesce(c.pvalue, d.properties[$pkey]) AS pvalue, c.user_key,
               sum(c.requests) AS requests, sum(c.cost_usd) AS cost_usd,
               sum(c.unpriced_requests) AS unpriced_requests
        FROM (SELECT dims_id, pvalue, user_key, sum(requests) AS requests, sum(cost_usd) AS cost_usd,
                     sum(unpriced_requests) AS unpriced_requests
              FROM ({cells}) GROUP BY ALL) AS c
        LEFT JOIN dims AS d USING (dims_id) GROUP BY ALL"""
    rel = revenue.revenue_sql(con, window, q.params)
    # Ties between users go to the lower user key, so the answer is the same every time.
    rows = fetch_dicts(
        con,
        f"""WITH p AS ({per_user}),
            v AS (
                SELECT pvalue AS value, count(*) FILTER (user_key <> 0) AS users, sum(requests) AS requests,
                       sum(cost_usd) AS cost_usd, sum(unpriced_requests) AS unpriced_requests,
                       coalesce(sum(cost_usd) FILTER (user_key <> 0), 0) AS user_cost,
                       arg_max(user_key, (cost_usd, -user_key)) FILTER (user_key <> 0) AS top,
                       coalesce(max(cost_usd) FILTER (user_key <> 0), 0) AS most_costly_user_cost_usd,
                       arg_min(user_key, (cost_usd, user_key)) FILTER (user_key <> 0) AS bottom,
                       coalesce(min(cost_usd) FILTER (user_key <> 0), 0) AS least_costly_user_cost_usd
                FROM p GROUP BY pvalue),
            {_owned_sql(rel, q.filters.active)},
            vr AS MATERIALIZED (SELECT coalesce(v.value, o.value) AS value, coalesce(v.users, 0) AS users,
                          coalesce(v.requests, 0) AS requests,
                          CASE WHEN v.requests IS NULL THEN 0 ELSE v.cost_usd END AS cost_usd,
                          coalesce(v.unpriced_requests, 0) AS unpriced_requests,
                          coalesce(v.user_cost, 0) AS user_cost, v.top,
                          coalesce(v.most_costly_user_cost_usd, 0) AS most_costly_user_cost_usd, v.bottom,
                          coalesce(v.least_costly_user_cost_usd, 0) AS least_costly_user_cost_usd,
                          o.rev AS revenue_nanos
                   FROM v FULL JOIN owned AS o ON o.value IS NOT DISTINCT FROM v.value),
            page AS (SELECT *, (SELECT count(*) FROM vr) AS total_values FROM vr
                     ORDER BY cost_usd DESC, value NULLS LAST LIMIT {limit})
            SELECT v.* EXCLUDE (top, bottom), t.user_id AS most_costly_user, b.user_id AS least_costly_user
            FROM page AS v LEFT JOIN users AS t ON t.user_key = v.top
            LEFT JOIN users AS b ON b.user_key = v.bottom
            ORDER BY cost_usd DESC, value NULLS LAST""",
        q.params,
    )
    values = []
    total = int(rows[0]["total_values"]) if rows else 0
    for row in rows:
        row = ints_of(row)
        del row["total_values"]
        user_cost = row.pop("user_cost")
        nanos = row.pop("revenue_nanos")
        avg = (user_cost / row["users"]).quantize(NANO, ROUND_HALF_EVEN) if row["users"] else Decimal("0E-9")
        found = PropertyValue(avg_cost_per_user=avg, **row)
        values.append(profit.with_margins(found, None if rel is None else revenue.to_usd(nanos or 0)))
    return PropertyBreakdown(key, window.since, window.until, tuple(values), total, total > len(values))


def _owned_sql(rel: str | None, filtered: bool) -> str:
    """CTE ``owned`` (value, rev): revenue per value, each user's in the group of the value most of
    their requests in the window carried (ties: the smallest value); users whose requests carry
    none, and users with revenue but no request in the window, in the null group (with a filter
    active, only users with a matching request count)."""
    if rel is None:
        return "owned AS (SELECT NULL::VARCHAR AS value, NULL::HUGEINT AS rev WHERE false)"
    return f"""owner AS (SELECT user_key, pvalue FROM p WHERE user_key <> 0
                        QUALIFY row_number() OVER (PARTITION BY user_key
                                                   ORDER BY pvalue IS NULL, requests DESC, pvalue) = 1),
            owned AS (SELECT o.pvalue AS value, sum(r.revenue_nanos)::HUGEINT AS rev
                      FROM ({rel}) AS r {"JOIN" if filtered else "LEFT JOIN"} owner AS o
                      ON o.user_key = r.user_key
                      GROUP BY ALL)"""


def property_keys(con: duckdb.DuckDBPyConnection) -> PropertyKeys:
    """Every custom property key recorded so far (any time), for pickers and ``by_property``."""
    return PropertyKeys(dims.property_keys(con))
