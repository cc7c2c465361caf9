"""Time series: requests, errors, tokens and cost per UTC hour or day, of one user or the application."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import duckdb

from user_metrics.errors import InvalidInput
from user_metrics.query import scope
from user_metrics.query.cells import APP_HOUR, PER_USER, USER_HOUR
from user_metrics.query.results import Point, Timeseries
from user_metrics.query.scope import MAX_PAGE, fetch_dicts, ints_of, statement, user_key
from user_metrics.query.window import Instant, from_micros
from user_metrics.store.rollups import US_PER_DAY, US_PER_HOUR


def timeseries(
    con: duckdb.DuckDBPyConnection,
    user_id: str | None = None,
    since: Instant = None,
    until: Instant = None,
    *,
    bucket: str = "day",
    properties: Any = None,
    model: str | None = None,
    service: str | None = None,
    environment: str | None = None,
    now: Callable[[], datetime] = scope.now,
) -> Timeseries:
    """Requests, errors, tokens and cost per UTC hour or day, empty buckets included.

    ``user_id`` None means the whole application.
    """
    units = {"hour": US_PER_HOUR, "day": US_PER_DAY}
    if bucket not in units:
        raise InvalidInput(f"bucket: must be hour or day, got {bucket!r}")
    unit = units[bucket]
    q = statement(con, since, until, now, properties, model, service, environment)
    window = q.window
    if (window.until_us - window.since_us) // unit > MAX_PAGE:
        raise InvalidInput(
            f"the window holds more than {MAX_PAGE} {bucket}s; use a shorter window or bucket=day"
        )
    if user_id is None:
        # The hourly application rollup serves both buckets: a day is 24 of its hours.
        cells = q.cells((APP_HOUR,), unit, by_user=False)
    else:
        key = user_key(con, user_id)
        cells = q.cells(PER_USER if bucket == "day" else (USER_HOUR,), unit, [key])
    rows = fetch_dicts(
        con,
        f"""SELECT t, sum(requests) AS requests, sum(errors) AS errors,
                   sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
                   sum(cost_usd) AS cost_usd, sum(unpriced_requests) AS unpriced_requests
            FROM ({cells}) GROUP BY 1""",
        q.params,
    )
    by_bucket = {r["t"]: r for r in rows}
    points = []
    for t in range(window.since_us // unit, -(-window.until_us // unit)):
        r = by_bucket.get(t)
        if r is None:
            points.append(Point(from_micros(t * unit), 0, 0, 0, 0, 0, Decimal("0E-9"), 0))
        else:
            r = ints_of(r)
            points.append(
                Point(
                    from_micros(t * unit),
                    r["requests"],
                    r["errors"],
                    r["input_tokens"],
                    r["output_tokens"],
                    r["input_tokens"] + r["output_tokens"],
                    r["cost_usd"],
                    r["unpriced_requests"],
                )
            )
    return Timeseries(user_id, bucket, window.since, window.until, tuple(points))
