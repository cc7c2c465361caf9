"""The coverage report: how well the stored requests of each service and instrumentation scope are
attributed and priced, and what the running service saw that no convention reads.

``coverage`` answers, for a window and the usual filters, per (service, scope name, scope version)
the requests and how many have a user id, a session and a cost (one statement over ``requests``;
rollups know no scope). Given the live counters' snapshot (``coverage_counts.py``: the running
service's, since it started, not windowed; the service filter applies to it, the others do
not), it adds per scope the spans that look like LLM calls but were skipped and the attribute keys
no convention reads, most frequent first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import duckdb

from user_metrics.coverage_counts import MAX_KEYS, CoverageSnapshot, ScopeCounts
from user_metrics.errors import InvalidInput
from user_metrics.query import scope
from user_metrics.query.results import Coverage, KeyCount, ScopeCoverage, ScopeKeys
from user_metrics.query.scope import fetch_dicts
from user_metrics.query.window import Filters, Instant, Window

DEFAULT_KEYS = 100  # keys (and span names) per list in an answer unless asked otherwise

SQL = """
SELECT service_name, scope_name, scope_version,
       count(*) AS requests,
       count(user_id) AS with_user,
       count(session_id) AS with_session,
       count(cost_usd) AS with_cost
FROM (SELECT * FROM requests WHERE start_time >= $since AND start_time < $until)
WHERE {predicate}
GROUP BY ALL
ORDER BY requests DESC, service_name NULLS LAST, scope_name NULLS LAST, scope_version NULLS LAST
"""


def coverage(
    con: duckdb.DuckDBPyConnection,
    since: Instant = None,
    until: Instant = None,
    *,
    properties: Any = None,
    model: str | None = None,
    service: str | None = None,
    environment: str | None = None,
    limit: int = DEFAULT_KEYS,
    live: CoverageSnapshot | None = None,
    tz: str | None = None,
    now: Callable[[], datetime] = scope.now,
) -> Coverage:
    """Per service and scope: stored shares in the window; with ``live``, the key report.

    ``limit``: most keys and span names per list (1 to the live counters' bound per list);
    ``tz`` (None: UTC): the zone of a calendar period as ``since`` and of naive instants.
    """
    if not 1 <= limit <= MAX_KEYS:
        raise InvalidInput(f"limit: must be between 1 and {MAX_KEYS}, got {limit}")
    window = Window.parse(since, until, now(), tz)
    filters = Filters.of(properties, model, service, environment)
    params: dict[str, object] = {"since": window.since, "until": window.until}
    rows = fetch_dicts(con, SQL.format(predicate=filters.predicate(params)), params)
    scopes = tuple(_shares(row) for row in rows)
    spans: tuple[ScopeKeys, ...] = ()
    live_since = None
    if live is not None:
        live_since = datetime.fromtimestamp(live.started_unix, UTC)
        entries = [
            _keys(key, counts, limit)
            for key, counts in live.scopes.items()
            if filters.service is None or key[0] == filters.service
        ]
        spans = tuple(
            sorted(
                entries,
                key=lambda e: (-e.llm_like_skipped, -sum(k.count for k in e.unread_keys), _order(e)),
            )
        )
    return Coverage(window.since, window.until, scopes, live is not None, live_since, spans)


def _shares(row: dict[str, Any]) -> ScopeCoverage:
    counts = {k: int(row[k]) for k in ("requests", "with_user", "with_session", "with_cost")}
    n = counts["requests"]
    return ScopeCoverage(
        row["service_name"],
        row["scope_name"],
        row["scope_version"],
        **counts,
        user_share=counts["with_user"] / n,
        session_share=counts["with_session"] / n,
        cost_share=counts["with_cost"] / n,
    )


def _top(counter: Counter[str], limit: int) -> tuple[KeyCount, ...]:
    """Most frequent first; ties by key."""
    ranked = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
    return tuple(KeyCount(key, count) for key, count in ranked[:limit])


def _keys(key: tuple[str | None, str | None, str | None], counts: ScopeCounts, limit: int) -> ScopeKeys:
    return ScopeKeys(
        *key,
        llm_spans=counts.llm_spans,
        llm_like_skipped=counts.llm_like_skipped,
        skipped_span_names=_top(counts.skipped_names, limit),
        skipped_keys=_top(counts.skipped_keys, limit),
        unread_keys=_top(counts.unread_keys, limit),
    )


def _order(entry: ScopeKeys) -> tuple[str, str, str]:
    return (entry.service_name or "", entry.scope_name or "", entry.scope_version or "")
