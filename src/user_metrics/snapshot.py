"""All-time totals for ``/metrics``: read from the totals the store maintains, never from ``requests``.

Every value is the exact all-time sum over stored requests, so it can only grow: a restart, a
replay or a late batch never makes a counter go backwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import duckdb

from user_metrics.query import fetch_dicts
from user_metrics.rollups import DURATION_BOUNDS, METRIC_NAMES, SUMS, aggregate

# The same, typed for a fast fetch: BIGINT counts, cost as DOUBLE (Prometheus values are floats).
_FAST_SUMS = ", ".join(
    f"{aggregate(name)}::{'DOUBLE' if name in ('cost_usd', 'duration_sum') else 'BIGINT'} AS {name}"
    for name in METRIC_NAMES
)


@dataclass(frozen=True)
class Usage:
    """Counts, tokens and cost of a group of requests."""

    requests: int
    errors: int
    unpriced_requests: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    cost_usd: Decimal | float  # Decimal, or float where only a Prometheus value needs it
    duration_ms_sum: float
    last_active_us: int


@dataclass(frozen=True)
class UserTotals:
    user_id: str
    usage: Usage


@dataclass(frozen=True)
class ModelTotals:
    provider: str | None
    model: str | None
    usage: Usage
    duration_counts: tuple[int, ...]  # requests per DURATION_BOUNDS bucket, then +Inf (not cumulative)


@dataclass(frozen=True)
class PropertyTotals:
    key: str
    value: str
    requests: int
    cost_usd: Decimal


@dataclass(frozen=True)
class Snapshot:
    users: tuple[UserTotals, ...]  # the most recently active, at most max_users
    users_total: int  # every user with a request (requests without a user id are not a user)
    models: tuple[ModelTotals, ...]
    properties: tuple[PropertyTotals, ...]


def _usage(row: dict[str, Any]) -> Usage:
    return Usage(
        requests=int(row["requests"]),
        errors=int(row["errors"]),
        unpriced_requests=int(row["unpriced_requests"]),
        input_tokens=int(row["input_tokens"]),
        output_tokens=int(row["output_tokens"]),
        cache_read_tokens=int(row["cache_read_tokens"]),
        cache_write_tokens=int(row["cache_write_tokens"]),
        reasoning_tokens=int(row["reasoning_tokens"]),
        cost_usd=row["cost_usd"],
        duration_ms_sum=float(row["duration_sum"]),
        last_active_us=int(row["last_us"]),
    )


def snapshot(con: duckdb.DuckDBPyConnection, max_users: int, property_keys: Sequence[str]) -> Snapshot:
    """Per-user totals of the ``max_users`` most recently active users (ties: the older user
    first), per provider/model totals with a duration histogram, and per-value totals of the
    given properties."""
    users: list[UserTotals] = []
    if max_users > 0:
        # Choose the users on one aggregate, then sum only theirs; fetch columns, not row objects.
        columns = con.execute(
            f"""WITH chosen AS (
                    SELECT user_key FROM user_totals WHERE user_key <> 0 GROUP BY user_key
                    ORDER BY max(last_us) DESC, user_key LIMIT $n)
                SELECT u.user_id, t.* FROM (
                    SELECT user_key, {_FAST_SUMS} FROM user_totals
                    WHERE user_key IN (SELECT user_key FROM chosen) GROUP BY user_key) AS t
                JOIN users AS u USING (user_key) ORDER BY t.last_us DESC, user_key""",
            {"n": max_users},
        ).fetchnumpy()
        names = [n for n in columns if n not in ("user_id", "user_key")]
        for i, user_id in enumerate(columns["user_id"].tolist()):
            users.append(UserTotals(user_id, _usage({n: columns[n][i] for n in names})))
    (count,) = con.execute(
        "SELECT count(DISTINCT user_key) FROM user_totals WHERE user_key <> 0"
    ).fetchone() or (0,)
    counts: dict[tuple[str | None, str | None], list[int]] = {}
    for row in fetch_dicts(
        con,
        "SELECT d.provider, coalesce(d.request_model, d.response_model) AS model, t.le, sum(t.n) AS n "
        "FROM dims_durations AS t "
        "JOIN dims AS d USING (dims_id) GROUP BY ALL",
    ):
        buckets = counts.setdefault((row["provider"], row["model"]), [0] * (len(DURATION_BOUNDS) + 1))
        buckets[row["le"]] += int(row["n"])
    models = [
        ModelTotals(
            row["provider"],
            row["model"],
            _usage(row),
            tuple(counts.get((row["provider"], row["model"]), [0] * (len(DURATION_BOUNDS) + 1))),
        )
        for row in fetch_dicts(
            con,
            f"SELECT d.provider, coalesce(d.request_model, d.response_model) AS model, {SUMS} "
            "FROM dims_totals AS t JOIN dims AS d USING (dims_id) "
            "GROUP BY ALL ORDER BY ALL",
        )
    ]
    properties = []
    for key in property_keys:
        for row in fetch_dicts(
            con,
            """SELECT d.properties[$key] AS value, sum(t.requests) AS requests, sum(t.cost_usd) AS cost_usd
               FROM dims_totals AS t JOIN dims AS d USING (dims_id)
               WHERE d.properties[$key] IS NOT NULL GROUP BY ALL ORDER BY ALL""",
            {"key": key.lower()},
        ):
            properties.append(
                PropertyTotals(key.lower(), row["value"], int(row["requests"]), row["cost_usd"])
            )
    return Snapshot(tuple(users), int(count), tuple(models), tuple(properties))
