"""Unusual users: the recent window against each user's own history, and against the population.

For every user active in the window (default: the last hour) four metrics are observed:
``requests``, ``cost_usd``, ``tokens_per_request`` and ``error_rate``. The history is the
``history`` before the window (default 7 days), cut into buckets as long as the window (in whole
hours), and only the buckets where the user was active count.

- **Own history** (users with at least ``min_history`` active buckets): a robust z-score,
  ``(observed - median) / scale`` with ``scale = max(1.4826 * MAD, 20 % of the median, a floor)``.
  The floors (1 request, $0.0001, 100 tokens per request, 10 % error rate) keep a very regular user
  from being flagged for a tiny change. Only rises are findings: falls are not abuse. The ratio
  metrics need ``min_requests`` requests in the window, or one error in three requests would do.
  Requests and cost below the population's 90th percentile per bucket are too small to report.
- **Population** (new or rarely active users, with less history than that): requests and cost
  above the 99.9th percentile of every (user, bucket) value of the history; the score is the
  observed value over that percentile.

A finding is flagged when its score reaches ``threshold`` (own history) or 1 (population). Every
figure comes from the same exact cells as the other queries.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import duckdb

from user_metrics.errors import InvalidInput
from user_metrics.query import calendar, scope
from user_metrics.query.cells import PER_USER, US_PER_HOUR, USER_HOUR, CellSql
from user_metrics.query.results import Anomalies, Anomaly
from user_metrics.query.scope import fetch_dicts
from user_metrics.query.window import Filters, Window, from_micros, parse_instant

DEFAULT_WINDOW = timedelta(hours=1)
DEFAULT_HISTORY = "7d"
DEFAULT_THRESHOLD = 6.0
METRICS = ("requests", "cost_usd", "tokens_per_request", "error_rate")
RATIOS = ("tokens_per_request", "error_rate")
FLOORS = {"requests": 1.0, "cost_usd": 0.0001, "tokens_per_request": 100.0, "error_rate": 0.10}
RELATIVE_FLOOR = 0.2
POPULATION_QUANTILE = 0.999
MATERIAL_QUANTILE = 0.9


def anomalies(
    con: duckdb.DuckDBPyConnection,
    since: Any = None,
    until: Any = None,
    *,
    history: Any = DEFAULT_HISTORY,
    threshold: float = DEFAULT_THRESHOLD,
    min_history: int = 6,
    min_requests: int = 10,
    tz: str | None = None,
    now: Callable[[], datetime] = scope.now,
) -> Anomalies:
    """Users whose recent usage is far from their own history or above the population's.

    ``tz`` (None: UTC): the zone a calendar period as ``since`` and instants without an offset are
    read in; the history's buckets are whole hours back from the window, in any zone.
    """
    at = now()
    if calendar.is_period(since):
        window = Window.parse(since, until, at, tz)
    else:
        end = parse_instant(until, at, "until", tz) or at
        window = Window.parse(since if since is not None else end - DEFAULT_WINDOW, end, at, tz)
    span_us = window.until_us - window.since_us
    hours = max(1, round(span_us / US_PER_HOUR))
    back = parse_instant(history, window.since, "history")
    if back is None or back >= window.since:
        raise InvalidInput(f"history: must be a duration before the window, like 7d, got {history!r}")
    if not 0 < threshold <= 1000:  # (NaN fails this too)
        raise InvalidInput(f"threshold: must be above 0 and at most 1000, got {threshold}")
    if min_history < 1 or min_requests < 1:
        raise InvalidInput("min_history and min_requests must be at least 1")
    # The history ends where the window starts, on a whole hour, in buckets of `hours` hours.
    bucket_us = hours * US_PER_HOUR
    history_end = window.since_us // US_PER_HOUR * US_PER_HOUR
    history_start = max(back.timestamp() * 1e6, 0)
    n_buckets = max(1, int((history_end - history_start) // bucket_us))
    history_window = Window(from_micros(history_end - n_buckets * bucket_us), from_micros(history_end))
    observed = [r for r in _per_user(con, window) if r["user_id"] is not None]  # no id: nobody's abuse
    buckets: dict[int, list[dict[str, float]]] = defaultdict(list)
    if observed:
        for row in _per_user(con, history_window, bucket_us, [r["user_key"] for r in observed]):
            buckets[row["user_key"]].append(row)
    population = _population(con, history_window, bucket_us)

    findings = []
    for row in observed:
        now_values = {m: _value(m, row) for m in METRICS}
        own = buckets.get(row["user_key"], [])
        if len(own) >= min_history:
            for metric in METRICS:
                x = now_values[metric]
                if x is None or (metric in RATIOS and row["requests"] < min_requests):
                    continue
                if metric not in RATIOS and x < population[metric][0]:
                    continue  # less than a typical busy user's bucket: not worth an operator's time
                values = [v for v in (_value(metric, b) for b in own) if v is not None]
                if len(values) < min_history:
                    continue
                median = statistics.median(values)
                mad = statistics.median(abs(v - median) for v in values)
                scale = max(1.4826 * mad, RELATIVE_FLOOR * abs(median), FLOORS[metric])
                score = (x - median) / scale
                if score >= threshold:
                    findings.append(
                        Anomaly(row["user_id"], metric, "own_history", x, median, score, len(own))
                    )
        else:
            for metric in ("requests", "cost_usd"):
                x, limit = now_values[metric], population[metric][1]
                if x is not None and x > limit:
                    findings.append(
                        Anomaly(
                            row["user_id"], metric, "population", x, limit, x / max(limit, 1e-12), len(own)
                        )
                    )
    findings.sort(key=lambda f: (-f.score, f.user_id, f.metric))
    return Anomalies(window.since, window.until, history_window.since, hours, tuple(findings))


def _per_user(
    con: duckdb.DuckDBPyConnection,
    window: Window,
    bucket_us: int | None = None,
    users: list[int] | None = None,
) -> list[dict[str, Any]]:
    """Requests, errors, cost and tokens per user (and per bucket of the window), from exact cells."""
    q = CellSql(window, Filters.of(None, None, None, None))
    # Day cells cannot be cut into hours: buckets read the hourly rollup only.
    cells = q.cells((USER_HOUR,) if bucket_us else PER_USER, US_PER_HOUR, users)
    bucket = f"(t * {US_PER_HOUR} - {window.since_us}) // {bucket_us} AS bucket, " if bucket_us else ""
    rows = fetch_dicts(
        con,
        f"""SELECT c.user_key, u.user_id, {bucket}sum(requests) AS requests, sum(errors) AS errors,
                   sum(cost_usd)::DOUBLE AS cost, sum(input_tokens) + sum(output_tokens) AS tokens
            FROM ({cells}) AS c LEFT JOIN users AS u ON u.user_key = c.user_key
            WHERE c.user_key <> 0 GROUP BY ALL HAVING sum(requests) > 0""",
        q.params,
    )
    return [{**r, **{k: float(r[k] or 0) for k in ("requests", "errors", "cost", "tokens")}} for r in rows]


def _population(
    con: duckdb.DuckDBPyConnection, window: Window, bucket_us: int
) -> dict[str, tuple[float, float]]:
    """(90th, 99.9th) percentile of every active (user, bucket) of the history: requests and cost."""
    q = CellSql(window, Filters.of(None, None, None, None))
    quantiles = f"[{MATERIAL_QUANTILE}, {POPULATION_QUANTILE}]"
    row = con.execute(
        f"""SELECT quantile_disc(requests, {quantiles}), quantile_disc(cost, {quantiles}) FROM (
                SELECT user_key, (t * {US_PER_HOUR} - {window.since_us}) // {bucket_us} AS bucket,
                       sum(requests)::DOUBLE AS requests, sum(cost_usd)::DOUBLE AS cost
                FROM ({q.cells((USER_HOUR,), US_PER_HOUR)}) WHERE user_key <> 0 GROUP BY ALL
                HAVING sum(requests) > 0)""",
        q.params,
    ).fetchone()
    requests, cost = row if row is not None else (None, None)
    # No history at all: every amount is material, and nothing is above a population.
    return {
        "requests": (requests[0], requests[1]) if requests else (0.0, math.inf),
        "cost_usd": (cost[0], cost[1]) if cost else (0.0, math.inf),
    }


def _value(metric: str, sums: dict[str, Any]) -> float | None:
    requests = sums["requests"]
    if metric == "requests":
        return float(requests)
    if metric == "cost_usd":
        return float(sums["cost"])
    if not requests:
        return None
    return float(sums["tokens"] if metric == "tokens_per_request" else sums["errors"]) / requests
