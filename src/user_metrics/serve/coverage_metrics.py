"""The coverage report's ``/metrics`` families (see ``query/coverage.py``).

- ``user_metrics_llm_like_spans_skipped_total`` and ``user_metrics_unread_attribute_keys_total``
  {service, scope, scope_version}: the live counters since the start (``coverage_counts.py``),
  whose entries are bounded by ``metrics_max_values`` with one ``(other)`` entry beyond it.
- ``user_metrics_coverage_share`` {service, scope, scope_version, field}: the share of the last
  24 hours' stored requests with a user id, a session, a cost. It reads ``requests``, so like the
  anomalies it is computed at most once a minute; the ``metrics_max_values`` pairs with the most
  requests have series of their own, the rest are summed into ``(other)`` before the shares.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime

import duckdb
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from user_metrics.coverage_counts import OTHER, CoverageCounts
from user_metrics.query.coverage import coverage
from user_metrics.query.results import ScopeCoverage

SHARE_REFRESH_S = 60.0
SHARE_WINDOW = "24h"
FIELDS = ("user", "session", "cost")
LABELS = ["service", "scope", "scope_version"]


def _text(value: str | None) -> str:
    return "" if value is None else value


class CoverageFamilies:
    """Builds the families on each scrape; the shares are recomputed at most once a minute."""

    def __init__(self, counts: CoverageCounts | None, max_values: int, now: Callable[[], datetime]) -> None:
        self._counts = counts
        self._max_values = max_values
        self._now = now
        self._shares: list[tuple[list[str], tuple[float, float, float]]] = []
        self._shares_at: float | None = None

    def collect(self, con: duckdb.DuckDBPyConnection | None) -> Iterable[Metric]:
        """The families; without ``con`` (no store families on this node) the live counters only."""
        skipped = CounterMetricFamily(
            "user_metrics_llm_like_spans_skipped",
            "Spans not counted as LLM calls that look like them (GET /api/v1/coverage), since the start",
            labels=LABELS,
        )
        unread = CounterMetricFamily(
            "user_metrics_unread_attribute_keys",
            "Attributes of LLM spans whose keys no convention reads (GET /api/v1/coverage), since the start",
            labels=LABELS,
        )
        if self._counts is not None:
            for key, entry in sorted(self._counts.snapshot().scopes.items(), key=lambda kv: str(kv[0])):
                labels = [_text(v) for v in key]
                skipped.add_metric(labels, entry.llm_like_skipped)
                unread.add_metric(labels, entry.unread_total)
        if con is None:
            yield from (skipped, unread)
            return
        share = GaugeMetricFamily(
            "user_metrics_coverage_share",
            "Share of the last 24 hours' stored requests with a user id, a session, a cost (refreshed "
            "at most once a minute)",
            labels=[*LABELS, "field"],
        )
        for labels, values in self._current_shares(con):
            for field, value in zip(FIELDS, values, strict=True):
                share.add_metric([*labels, field], value)
        yield from (skipped, unread, share)

    def _current_shares(
        self, con: duckdb.DuckDBPyConnection
    ) -> list[tuple[list[str], tuple[float, float, float]]]:
        at = time.monotonic()
        if self._shares_at is None or at - self._shares_at >= SHARE_REFRESH_S:
            scopes = coverage(con, SHARE_WINDOW, now=self._now).scopes
            self._shares = _bounded(scopes, self._max_values)
            self._shares_at = at
        return self._shares


def _bounded(
    scopes: Iterable[ScopeCoverage], max_values: int
) -> list[tuple[list[str], tuple[float, float, float]]]:
    """The pairs with most requests (the answer's order), and the rest summed into (other)."""
    out = []
    rest = [0, 0, 0, 0]  # requests, with user, with session, with cost
    for i, s in enumerate(scopes):
        if i < max_values:
            out.append(([_text(s.service_name), _text(s.scope_name), _text(s.scope_version)], _of(s)))
        else:
            for j, n in enumerate((s.requests, s.with_user, s.with_session, s.with_cost)):
                rest[j] += n
    if rest[0]:
        out.append(([OTHER, OTHER, ""], (rest[1] / rest[0], rest[2] / rest[0], rest[3] / rest[0])))
    return out


def _of(s: ScopeCoverage) -> tuple[float, float, float]:
    return (s.user_share, s.session_share, s.cost_share)
