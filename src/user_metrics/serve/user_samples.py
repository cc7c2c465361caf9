"""The per-user families of ``/metrics``, their sample lines written by DuckDB.

prometheus_client builds an object per sample and formats each one in Python: for 10,000 users
(90,000 samples) a rendering held the GIL for about a second, a second the service's mapping
threads could not use. Here the reader's query writes the lines itself, and hands back one
``bytes`` per family. DuckDB runs without the GIL, so a rendering costs the other threads only
the copy of those bytes, whatever the number of users.

The lines are exactly the ones prometheus_client writes, and these are the same in the
Prometheus text format and in OpenMetrics: a sample per user in the order of ``USERS_SQL`` (the
most recently active first), labels sorted by name, label values escaped (backslash, newline,
double quote; UTF-8 as it is), and values as ``floatToGoString`` spells them: Python's shortest
``repr`` of the float, which DuckDB's cast of a DOUBLE to text also gives, switched to an
exponent beyond six digits before the point. Only the families' HELP and TYPE lines differ
between the formats, so prometheus_client still writes those (``families()``, with no
samples). ``tests/serve/test_metrics_sql.py`` compares both renderings byte for byte.
"""

from __future__ import annotations

import duckdb
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from user_metrics.query.snapshot import USERS_SQL

TOKEN_TYPES = ("input", "output", "cache_read", "cache_write", "reasoning")


def families() -> tuple[Metric, ...]:
    """The four per-user families, without samples, in the order they are exposed."""
    return (
        CounterMetricFamily("llm_user_requests", "LLM requests per user", labels=["user_id", "status"]),
        CounterMetricFamily("llm_user_tokens", "Tokens per user", labels=["user_id", "type"]),
        CounterMetricFamily(
            "llm_user_cost_usd", "Cost in USD per user (priced requests)", labels=["user_id"]
        ),
        GaugeMetricFamily(
            "llm_user_last_active_timestamp_seconds", "Start of the user's latest request", labels=["user_id"]
        ),
    )


# (family index, sample name, the labels before user_id, value) of each sample of one user,
# in prometheus_client's order.
_SAMPLES = (
    (0, "llm_user_requests_total", 'status="ok",', "requests - errors"),
    (0, "llm_user_requests_total", 'status="error",', "errors"),
    *((1, "llm_user_tokens_total", f'type="{kind}",', f"{kind}_tokens") for kind in TOKEN_TYPES),
    (2, "llm_user_cost_usd_total", "", "cost_usd"),
    (3, "llm_user_last_active_timestamp_seconds", "", "CAST(last_us AS DOUBLE) / CAST(1000000 AS DOUBLE)"),
)

# Label value escaping of the exposition formats (SQL strings: a backslash is just a backslash).
_ESCAPED = r"""replace(replace(replace(user_id, '\', '\\'), chr(10), '\n'), '"', '\"')"""

# floatToGoString over v (DOUBLE), s (its text, which is Python's repr) and p (where the point is).
GO_FLOAT = """CASE WHEN isnan(v) THEN 'NaN'
    WHEN isinf(v) THEN CASE WHEN v > 0 THEN '+Inf' ELSE '-Inf' END
    WHEN v > 0 AND p > 7 THEN rtrim(s[1] || '.' || substr(s, 2, p - 2) || substr(s, p + 1), '0.')
        || 'e+' || lpad(CAST(p - 2 AS VARCHAR), 2, '0')
    ELSE s END"""

_STRUCTS = ", ".join(
    f"{{'family': {family}, 'i': {i}, 'head': '{name}{{{labels}', 'v': CAST({value} AS DOUBLE)}}"
    for i, (family, name, labels, value) in enumerate(_SAMPLES)
)

SAMPLES_SQL = f"""WITH picked AS ({USERS_SQL}),
    per_user AS (
        SELECT row_number() OVER (ORDER BY last_us DESC, user_key) AS ord, {_ESCAPED} AS label,
               UNNEST([{_STRUCTS}]) AS sample
        FROM picked),
    valued AS (
        SELECT ord, label, sample.family, sample.i, sample.head, sample.v AS v,
               CAST(sample.v AS VARCHAR) AS s, strpos(CAST(sample.v AS VARCHAR), '.') AS p
        FROM per_user)
    SELECT family, count(*),
        encode(string_agg(head || 'user_id="' || label || '"}} ' || ({GO_FLOAT}) || chr(10), ''
                          ORDER BY ord, i))
    FROM valued GROUP BY family"""


def user_samples(con: duckdb.DuckDBPyConnection, max_users: int) -> tuple[int, tuple[bytes, ...]]:
    """How many users, and the sample lines of each of ``families()``, of the ``max_users`` most
    recently active users."""
    lines, samples = [b""] * 4, [0] * 4
    if max_users > 0:
        for family, count, text in con.execute(SAMPLES_SQL, {"n": max_users}).fetchall():
            lines[family], samples[family] = text, count
    return samples[2], tuple(lines)  # one cost sample per user
