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


# (family index, sample name, the labels before user_id, value, whether it is a BIGINT) of each
# sample of one user, in prometheus_client's order.
_SAMPLES = (
    (0, "llm_user_requests_total", 'status="ok",', "requests - errors", True),
    (0, "llm_user_requests_total", 'status="error",', "errors", True),
    *((1, "llm_user_tokens_total", f'type="{kind}",', f"{kind}_tokens", True) for kind in TOKEN_TYPES),
    (2, "llm_user_cost_usd_total", "", "CAST(cost_usd AS DOUBLE)", False),
    (
        3,
        "llm_user_last_active_timestamp_seconds",
        "",
        "CAST(last_us AS DOUBLE) / CAST(1000000 AS DOUBLE)",
        False,
    ),
)

# Label value escaping of the exposition formats (SQL strings: a backslash is just a backslash).
_ESCAPED = r"""replace(replace(replace(user_id, '\', '\\'), chr(10), '\n'), '"', '\"')"""


def go_float(v: str, s: str, p: str) -> str:
    """floatToGoString of the DOUBLE ``v``, whose text is ``s`` (Python's repr: the shortest that
    reads back the same) with its point at ``p`` (0: none)."""
    return f"""CASE WHEN isnan({v}) THEN 'NaN'
        WHEN isinf({v}) THEN CASE WHEN {v} > 0 THEN '+Inf' ELSE '-Inf' END
        WHEN {v} > 0 AND {p} > 7
            THEN rtrim({s}[1] || '.' || substr({s}, 2, {p} - 2) || substr({s}, {p} + 1), '0.')
                || 'e+' || lpad(CAST({p} - 2 AS VARCHAR), 2, '0')
        ELSE {s} END"""


def go_int(n: str, t: str) -> str:
    """floatToGoString(float(n)) of the BIGINT ``n``, whose text is ``t``: its digits and ".0"
    below a million, an exponent from its digits up to 2**53, where float(n) is n; beyond, through
    the DOUBLE."""
    double = f"CAST({n} AS DOUBLE)"
    text = f"CAST({double} AS VARCHAR)"
    return f"""CASE WHEN {n} > -{2**53} AND {n} < 1000000 THEN {t} || '.0'
        WHEN {n} >= 1000000 AND {n} < {2**53} THEN rtrim({t}[1] || '.' || {t}[2:], '0.')
            || 'e+' || lpad(CAST(length({t}) - 1 AS VARCHAR), 2, '0')
        ELSE {go_float(double, text, f"strpos({text}, '.')")} END"""


def _line(i: int) -> str:
    _, name, labels, _, integer = _SAMPLES[i]
    value = go_int(f"x{i}", f"t{i}") if integer else go_float(f"x{i}", f"t{i}", f"strpos(t{i}, '.')")
    return f"'{name}{{{labels}' || label || ({value}) || chr(10)"


def _family(family: int) -> str:
    lines = " || ".join(_line(i) for i, sample in enumerate(_SAMPLES) if sample[0] == family)
    return f"encode(coalesce(string_agg({lines}, '' ORDER BY ord), ''))"


# One row: how many users, then each family's lines, user after user.
SAMPLES_SQL = f"""WITH picked AS ({USERS_SQL}),
    valued AS (
        SELECT row_number() OVER (ORDER BY last_us DESC, user_key) AS ord,
            'user_id="' || {_ESCAPED} || '"}} ' AS label,
            {", ".join(f"{sample[3]} AS x{i}" for i, sample in enumerate(_SAMPLES))}
        FROM picked),
    texts AS (
        SELECT *, {", ".join(f"CAST(x{i} AS VARCHAR) AS t{i}" for i in range(len(_SAMPLES)))} FROM valued)
    SELECT count(*), {", ".join(_family(f) for f in range(4))} FROM texts"""


def user_samples(con: duckdb.DuckDBPyConnection, max_users: int) -> tuple[int, tuple[bytes, ...]]:
    """How many users, and the sample lines of each of ``families()``, of the ``max_users`` most
    recently active users."""
    if max_users <= 0:
        return 0, (b"",) * 4
    row = con.execute(SAMPLES_SQL, {"n": max_users}).fetchone()
    assert row is not None  # an aggregate: one row
    return int(row[0]), tuple(row[1:])
