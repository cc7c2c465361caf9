"""``/metrics``: the store's all-time totals and the service's own counters, as exposition text.

In lake mode the store's families (``llm_*``, per user and application-wide) come from the nodes
with ``lake_store_metrics`` on (by default the reader-only ones) and the others render only
their own counters (``self_metrics.py``) and the lake's shipping figures (``lake_metrics.py``),
so that a ``sum()`` over instances counts every user once.

Each rendering reads ``snapshot`` (maintained totals: no scan of ``requests``) and the
service's own counters on one reader connection; prometheus_client writes the text format or
OpenMetrics, as the scraper's Accept header asks. The per-user families are the exception:
their thousands of samples are written by DuckDB, without the GIL (``user_samples.py``), and
only their HELP and TYPE lines come from prometheus_client. Counters are exact all-time totals,
so they never go backwards, across restarts too.

Per-user families hold at most ``metrics_max_users`` users: the most recently active ones (ties:
the user seen first). ``user_metrics_users_left_out`` says how many were not exposed. Per-model
and per-property families hold at most ``metrics_max_values`` pairs or values each, the first
seen; the rest are summed into one ``(other)`` series, and ``user_metrics_values_left_out`` says
how many were.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from user_metrics.coverage_counts import CoverageCounts
from user_metrics.query import scope
from user_metrics.query.anomalies import anomalies
from user_metrics.query.results import Anomaly
from user_metrics.query.snapshot import Snapshot, Usage, snapshot
from user_metrics.serve.coverage_metrics import CoverageFamilies
from user_metrics.serve.self_metrics import node_families
from user_metrics.serve.user_samples import TOKEN_TYPES, families, user_samples
from user_metrics.stats import Stats

log = logging.getLogger(__name__)


def _tokens(usage: Usage) -> Iterable[tuple[str, int]]:
    return zip(
        TOKEN_TYPES,
        (
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens,
            usage.cache_write_tokens,
            usage.reasoning_tokens,
        ),
        strict=True,
    )


def _text(value: str | None) -> str:
    return "" if value is None else value


ANOMALY_REFRESH_S = 60.0
# The families bounded by metrics_max_values, as a scrape names them.
MODEL_FAMILIES = (
    "llm_requests_total",
    "llm_tokens_total",
    "llm_cost_usd_total",
    "llm_unpriced_requests_total",
    "llm_request_duration_seconds",
)
PROPERTY_FAMILIES = ("llm_property_requests_total", "llm_property_cost_usd_total")


Encoder = Callable[[Collector], bytes]  # prometheus_client's generate_latest, of either format


class _Families(Collector):
    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


@dataclass(frozen=True)
class Gathered:
    """One rendering's families, read on one connection, ready for either format."""

    users: tuple[tuple[Metric, bytes], ...]  # each per-user family and its sample lines
    families: tuple[Metric, ...]  # the rest, built by prometheus_client

    def encode(self, encoder: Encoder) -> bytes:
        parts = []
        for family, lines in self.users:  # the header as the format writes it, then the lines
            parts += [encoder(_Families([family])).removesuffix(b"# EOF\n"), lines]
        parts.append(encoder(_Families(self.families)))  # (ends in # EOF in OpenMetrics)
        return b"".join(parts)


class UsageCollector(Collector):
    """The per-user, per-model, per-property and self families, built fresh on each rendering.

    ``gather`` reads everything a rendering needs; ``collect`` (a prometheus_client collector)
    yields every family but the per-user ones.
    """

    def __init__(
        self,
        open_reader: Callable[[], duckdb.DuckDBPyConnection],
        stats: Stats,
        queue: Callable[[], tuple[int, int]],
        *,
        max_users: int,
        property_keys: Sequence[str],
        max_values: int = 100,
        now: Callable[[], datetime] = scope.now,
        coverage: CoverageCounts | None = None,
        store_families: bool = True,
        more: Callable[[], Iterable[Metric]] = tuple,
    ) -> None:
        """``store_families`` False: only this node's own families (a receiver in lake mode, where
        the store's come from the nodes that render them); ``more`` adds families (the lake's)."""
        self._store_families = store_families
        self._more = more
        self._open_reader = open_reader
        self._coverage = CoverageFamilies(coverage, max_values, now)  # coverage_metrics.py
        self._now = now  # the anomalies' clock
        self._stats = stats
        self._queue = queue  # (batches, rows) waiting for the writer
        self._findings: tuple[Anomaly, ...] = ()
        self._findings_at: float | None = None
        self._max_users = max_users
        self._property_keys = tuple(property_keys)
        self._max_values = max_values

    def describe(self) -> Iterable[Metric]:
        return []  # registering must not query the database

    def collect(self) -> Iterable[Metric]:
        return self.gather().families

    def gather(self) -> Gathered:
        if not self._store_families:  # the live coverage counters are this node's; no reader
            own = (*self._coverage.collect(None), *node_families(self._stats, self._queue), *self._more())
            return Gathered((), own)
        con = self._open_reader()
        try:
            users, exposed = self._user_families(con)
            snap = snapshot(con, 0, self._property_keys, self._max_values)
            findings = self._anomalies(con)
            coverage = list(self._coverage.collect(con))
        finally:
            con.close()
        return Gathered(users, tuple(self._families(snap, findings, coverage, exposed)))

    def _user_families(self, con: duckdb.DuckDBPyConnection) -> tuple[tuple[tuple[Metric, bytes], ...], int]:
        """Each per-user family with its sample lines, and how many users they expose."""
        exposed, lines = user_samples(con, self._max_users)
        return tuple(zip(families(), lines, strict=True)), exposed

    def _families(
        self, snap: Snapshot, findings: Sequence[Anomaly], coverage: list[Metric], exposed: int
    ) -> Iterable[Metric]:
        flagged = GaugeMetricFamily(
            "llm_user_anomaly_score",
            "Users flagged in the last hour (GET /api/v1/anomalies): the finding's score",
            labels=["user_id", "metric", "method"],
        )
        for f in findings[: self._max_users]:
            flagged.add_metric([f.user_id, f.metric, f.method], f.score)
        yield flagged
        left_out = GaugeMetricFamily(
            "user_metrics_users_left_out",
            "Users with requests who are not in the per-user families (metrics_max_users)",
        )
        left_out.add_metric([], snap.users_total - exposed)
        yield left_out
        yield from self._models(snap.models, snap.duration_bounds)
        requests = CounterMetricFamily(
            "llm_property_requests",
            "LLM requests by value of a chosen property",
            labels=["property", "value"],
        )
        cost = CounterMetricFamily(
            "llm_property_cost_usd", "Cost in USD by value of a chosen property", labels=["property", "value"]
        )
        for p in snap.properties:
            requests.add_metric([p.key, p.value], p.requests)
            cost.add_metric([p.key, p.value], float(p.cost_usd))
        yield requests
        yield cost
        yield self._left_out(snap.models_left_out, snap.values_left_out)
        yield from coverage
        yield from node_families(self._stats, self._queue)
        yield from self._more()

    @staticmethod
    def _left_out(models: int, values: dict[str, int]) -> Metric:
        """How many pairs or values each bounded family sums into its (other) series."""
        gauge = GaugeMetricFamily(
            "user_metrics_values_left_out",
            "Provider/model pairs or property values summed into the (other) series of a family "
            "(metrics_max_values)",
            labels=["family", "property"],
        )
        for family in MODEL_FAMILIES:
            gauge.add_metric([family, ""], models)
        for key, count in values.items():
            for family in PROPERTY_FAMILIES:
                gauge.add_metric([family, key], count)
        return gauge

    def _anomalies(self, con: duckdb.DuckDBPyConnection) -> tuple[Anomaly, ...]:
        """The last hour's findings, computed at most once a minute (they read a week of history)."""
        if not self._max_users:
            return ()
        at = time.monotonic()
        if self._findings_at is None or at - self._findings_at >= ANOMALY_REFRESH_S:
            self._findings = anomalies(con, now=self._now).findings
            self._findings_at = at
        return self._findings

    def _models(self, models: Sequence[Any], duration_bounds: Sequence[float]) -> Iterable[Metric]:
        labels = ["provider", "model"]
        requests = CounterMetricFamily("llm_requests", "LLM requests", labels=[*labels, "status"])
        tokens = CounterMetricFamily("llm_tokens", "Tokens", labels=[*labels, "type"])
        cost = CounterMetricFamily("llm_cost_usd", "Cost in USD of priced requests", labels=labels)
        unpriced = CounterMetricFamily(
            "llm_unpriced_requests", "Requests of models with no known price", labels=labels
        )
        duration = HistogramMetricFamily(
            "llm_request_duration_seconds", "LLM request duration", labels=labels
        )
        for m in models:
            key = [_text(m.provider), _text(m.model)]
            u = m.usage
            requests.add_metric([*key, "ok"], u.requests - u.errors)
            requests.add_metric([*key, "error"], u.errors)
            for kind, count in _tokens(u):
                tokens.add_metric([*key, kind], count)
            cost.add_metric(key, float(u.cost_usd))
            unpriced.add_metric(key, u.unpriced_requests)
            cumulative, buckets = 0, []
            for bound, count in zip((*map(str, duration_bounds), "+Inf"), m.duration_counts, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            duration.add_metric(key, buckets, u.duration_ms_sum / 1000)
        yield from (requests, tokens, cost, unpriced, duration)


class RenderedMetrics:
    """The exposition, rendered in the background so that a scrape only sends bytes.

    A rendering reads the store (for 100,000 users the per-user lines are tens of MiB), so a
    thread renders every format a scraper has asked for, from one ``gather``, again whenever
    the service has taken an export or committed since, at most every ``refresh_seconds``, and
    after a rendering that took ``d`` seconds not before ``SPACING * d`` more: renderings take
    at most a tenth of the time (of DuckDB's threads and the cores ingest needs), however many
    users are exposed. A scrape answers the latest rendering, at most the wait plus one
    rendering old. ``refresh_seconds`` 0 renders on every scrape instead.
    """

    SPACING = 9.0

    def __init__(
        self,
        collector: UsageCollector,
        version: Callable[[], object],
        refresh_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._collector = collector
        self._version = version
        self._refresh = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._encoders: dict[str, Encoder] = {}  # content type -> encoder
        self._bodies: dict[str, bytes] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-render", daemon=True)

    def start(self) -> None:
        if self._refresh > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def render(self, accept: str) -> tuple[bytes, str]:
        """(body, content type) for a scraper's Accept header."""
        encoder, content_type = choose_encoder(accept)
        if self._refresh <= 0:
            return self._collector.gather().encode(encoder), content_type
        with self._lock:
            self._encoders[content_type] = encoder
            body = self._bodies.get(content_type)
        if body is None:  # the first scrape in this format renders now
            body = self._collector.gather().encode(encoder)
            with self._lock:
                self._bodies.setdefault(content_type, body)
        return body, content_type

    def _run(self) -> None:
        rendered: object = None
        wait = self._refresh
        while not self._stop.wait(wait):
            wait = self._refresh
            version = self._version()
            with self._lock:
                encoders = dict(self._encoders)
            if version == rendered or not encoders:
                continue
            started = self._clock()
            try:
                gathered = self._collector.gather()
                bodies = {content_type: gathered.encode(encode) for content_type, encode in encoders.items()}
            except Exception:  # noqa: BLE001 - keep serving the last rendering; try again next round
                log.exception("rendering /metrics failed")
                continue
            finally:
                wait = max(self._refresh, self.SPACING * (self._clock() - started))
            with self._lock:
                self._bodies.update(bodies)
            rendered = version


def registry(collector: UsageCollector) -> CollectorRegistry:
    """A registry of our own (no process-wide default, no import-time globals)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    return reg
