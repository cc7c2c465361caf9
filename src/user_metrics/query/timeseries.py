"""Time series: requests, errors, tokens and cost per local hour, day, week or month, of one user or
the application."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import duckdb

from user_metrics.errors import InvalidInput
from user_metrics.query import calendar, scope
from user_metrics.query.calendar import BUCKETS
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
    tz: str | None = None,
    now: Callable[[], datetime] = scope.now,
) -> Timeseries:
    """Requests, errors, tokens and cost per local hour, day, week or month of the zone ``tz``
    (None: UTC), empty buckets included.

    ``user_id`` None means the whole application. Buckets follow the zone's calendar (weeks start
    on Monday; a day of 23 or 25 hours when daylight saving changes; the hour the clock repeats is
    two buckets); each point's ``start`` is its bucket's first instant (UTC), the first bucket's
    start at or before ``since``. Every sum is exact: each bucket is read from the day and hour
    cells wholly inside it and the request rows of its ragged edges (in a zone whose offset is
    not whole hours, e.g. Asia/Kolkata, hour buckets are request rows throughout).
    """
    if bucket not in BUCKETS:
        raise InvalidInput(f"bucket: must be one of {', '.join(BUCKETS)}, got {bucket!r}")
    q = statement(con, since, until, now, properties, model, service, environment, tz)
    window = q.window
    nominal = {"hour": US_PER_HOUR, "day": US_PER_DAY, "week": 7 * US_PER_DAY, "month": 28 * US_PER_DAY}
    if (window.until_us - window.since_us) // nominal[bucket] > MAX_PAGE:
        raise InvalidInput(
            f"the window holds more than {MAX_PAGE} {bucket}s; use a shorter window or a longer bucket"
        )
    # Local days of 23 hours (and the like) can add a few buckets beyond the nominal count.
    starts = calendar.bucket_starts(window.since_us, window.until_us, window.tz, bucket, 2 * MAX_PAGE)
    if user_id is None:
        # The hourly application rollup serves every bucket: a day is 24 of its hours.
        cells = q.bucket_cells((APP_HOUR,), starts, by_user=False)
    else:
        key = user_key(con, user_id)
        cells = q.bucket_cells((USER_HOUR,) if bucket == "hour" else PER_USER, starts, [key])
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
    for t, start in enumerate(starts[:-1]):
        r = by_bucket.get(t)
        if r is None:
            points.append(Point(from_micros(start), 0, 0, 0, 0, 0, Decimal("0E-9"), 0))
        else:
            r = ints_of(r)
            points.append(
                Point(
                    from_micros(start),
                    r["requests"],
                    r["errors"],
                    r["input_tokens"],
                    r["output_tokens"],
                    r["input_tokens"] + r["output_tokens"],
                    r["cost_usd"],
                    r["unpriced_requests"],
                )
            )
    return Timeseries(user_id, bucket, window.since, window.until, tuple(points), window.tz)
