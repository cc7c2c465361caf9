"""All-time totals for ``/metrics``: read from the totals the store maintains, never from ``requests``.

Every value is the exact all-time sum over stored requests, so it can only grow: a restart, a
replay or a late batch never makes a counter go backwards.

Per-model and per-property totals are bounded: at most ``max_values`` (provider, model) pairs,
and values per property key, have their own; the rest are summed under ``(other)``. Which ones
is first come, first served (the smallest ``dims_id`` of each), so a pair or value never moves
between its own series and ``(other)``, and neither series can go backwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import duckdb

from user_metrics.query.scope import fetch_dicts
from user_metrics.store.dims import MODEL_SQL, OTHER
from user_metrics.store.rollups import DURATION_BOUNDS, METRIC_NAMES, SUMS, aggregate

# The same, typed for a fast fetch: BIGINT counts, cost as DOUBLE (Prometheus values are floats).
_FAST_SUMS = ", ".join(
    f"{aggregate(name)}::{'DOUBLE' if name in ('cost_usd', 'duration_sum') else 'BIGINT'} AS {name}"
    for name in METRIC_NAMES
)

# The $n most recently active users' totals (user_id, user_key, then _FAST_SUMS), the latest
# first, ties the older user_key first. The users are chosen on one aggregate, then only theirs
# are summed. /metrics formats the same rows in SQL (serve/user_samples.py).
USERS_SQL = f"""WITH chosen AS (
        SELECT user_key FROM user_totals WHERE user_key <> 0 GROUP BY user_key
        ORDER BY max(last_us) DESC, user_key LIMIT $n)
    SELECT u.user_id, t.* FROM (
        SELECT user_key, {_FAST_SUMS} FROM user_totals
        WHERE user_key IN (SELECT user_key FROM chosen) GROUP BY user_key) AS t
    JOIN users AS u USING (user_key) ORDER BY t.last_us DESC, user_key"""


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
    models: tuple[ModelTotals, ...]  # at most max_values pairs, and one (other)
    properties: tuple[PropertyTotals, ...]  # per key at most max_values values, and one (other)
    models_left_out: int  # (provider, model) pairs summed under (other)
    values_left_out: dict[str, int]  # per property key: values summed under (other)
    duration_bounds: tuple[float, ...]  # upper bounds (seconds) of the duration_counts buckets but +Inf


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


def _labelled(exprs: Sequence[str], max_values: int, where: str = "TRUE") -> str:
    """Each dims_id with the labels of its series: label0, label1... are the ``exprs`` (over dims)
    for the first ``max_values`` groups of equal values, by their smallest dims_id, and (other) for
    the later ones; ``groups`` is how many groups there are in all."""
    labels = ", ".join(
        f"CASE WHEN k <= {int(max_values)} THEN g{i} ELSE '{OTHER}' END AS label{i}"
        for i in range(len(exprs))
    )
    grouped = ", ".join(f"{e} AS g{i}" for i, e in enumerate(exprs))
    partition = ", ".join(f"g{i}" for i in range(len(exprs)))
    # max(k) by a scalar subquery: DuckDB 1.5.5's whole-partition window aggregates can fail
    # (duckdb/duckdb#22352, users.py).
    return f"""WITH ranked AS MATERIALIZED (
            SELECT *, dense_rank() OVER (ORDER BY first_id) AS k FROM (
                SELECT *, min(dims_id) OVER (PARTITION BY {partition}) AS first_id
                FROM (SELECT dims_id, {grouped} FROM dims WHERE {where})))
        SELECT dims_id, {labels}, (SELECT max(k) FROM ranked) AS groups FROM ranked"""


def snapshot(
    con: duckdb.DuckDBPyConnection, max_users: int, property_keys: Sequence[str], max_values: int = 100
) -> Snapshot:
    """Per-user totals of the ``max_users`` most recently active users (ties: the older user
    first), per provider/model totals with a duration histogram, and per-value totals of the
    given properties (``max_values`` pairs or values each, the rest under ``(other)``)."""
    users: list[UserTotals] = []
    if max_users > 0:
        columns = con.execute(USERS_SQL, {"n": max_users}).fetchnumpy()
        names = [n for n in columns if n not in ("user_id", "user_key")]
        for i, user_id in enumerate(columns["user_id"].tolist()):
            users.append(UserTotals(user_id, _usage({n: columns[n][i] for n in names})))
    (count,) = con.execute(
        "SELECT count(DISTINCT user_key) FROM user_totals WHERE user_key <> 0"
    ).fetchone() or (0,)
    pairs = _labelled(("provider", MODEL_SQL), max_values)
    counts: dict[tuple[str | None, str | None], list[int]] = {}
    for row in fetch_dicts(
        con,
        f"SELECT d.label0 AS provider, d.label1 AS model, t.le, sum(t.n) AS n FROM dims_durations AS t "
        f"JOIN ({pairs}) AS d USING (dims_id) GROUP BY ALL",
    ):
        buckets = counts.setdefault((row["provider"], row["model"]), [0] * (len(DURATION_BOUNDS) + 1))
        buckets[row["le"]] += int(row["n"])
    models = []
    groups = 0
    for row in fetch_dicts(
        con,
        f"SELECT d.label0 AS provider, d.label1 AS model, max(d.groups) AS groups, {SUMS} "
        f"FROM dims_totals AS t JOIN ({pairs}) AS d USING (dims_id) GROUP BY ALL ORDER BY ALL",
    ):
        pair = (row["provider"], row["model"])
        empty = [0] * (len(DURATION_BOUNDS) + 1)
        models.append(ModelTotals(*pair, _usage(row), tuple(counts.get(pair, empty))))
        groups = max(groups, int(row["groups"]))
    properties = []
    left_out = {}
    for key in property_keys:
        key = key.lower()
        left_out[key] = 0
        values = _labelled(("properties[$key]",), max_values, "properties[$key] IS NOT NULL")
        for row in fetch_dicts(
            con,
            f"""SELECT d.label0 AS value, max(d.groups) AS groups, sum(t.requests) AS requests,
                       sum(t.cost_usd) AS cost_usd
                FROM dims_totals AS t JOIN ({values}) AS d USING (dims_id) GROUP BY ALL ORDER BY ALL""",
            {"key": key},
        ):
            properties.append(PropertyTotals(key, row["value"], int(row["requests"]), row["cost_usd"]))
            left_out[key] = max(left_out[key], int(row["groups"]) - max_values)
    return Snapshot(
        tuple(users),
        int(count),
        tuple(models),
        tuple(properties),
        max(0, groups - max_values),
        left_out,
        DURATION_BOUNDS,
    )
