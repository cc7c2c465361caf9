"""The node's own ``/metrics`` families (``user_metrics_*``): what this process received, stored,
refused and cut, its reader queries stopped, its commits and write queue, from its ``Stats``.

Every node renders them, in lake mode too: they count what happened in this process, so a
``sum()`` over instances is the whole deployment's. The store's families (``llm_*``) are
``metrics.py``'s; the lake shipping figures are ``lake_metrics.py``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily

from user_metrics.stats import LIMITS, READ_LIMITS, REFUSALS, Stats


def node_families(stats: Stats, queue_depth: Callable[[], tuple[int, int]]) -> Iterable[Metric]:
    """The families of ``stats``; ``queue_depth`` gives the (batches, rows) waiting for the writer."""
    s = stats
    spans = [
        _counter(name, text, getattr(s, f"spans_{name}"))
        for name, text in (
            ("received", "Spans received in OTLP exports"),
            ("stored", "LLM spans stored as request records"),
            ("duplicate", "LLM spans already stored (re-sent)"),
            ("past_horizon", "LLM spans older than the dedupe horizon (48 h), checked against requests"),
            ("skipped", "Spans that are not LLM calls"),
            ("cache_added_to_input", "LLM spans whose input excluded cache: cache read and write added"),
        )
    ]
    rejected = CounterMetricFamily("user_metrics_spans_rejected", "LLM spans rejected", labels=["reason"])
    for reason, count in sorted(s.spans_rejected.items()):
        rejected.add_metric([reason], count)
    cuts = CounterMetricFamily(
        "user_metrics_limit_cuts",
        "Values, properties and requests cut or refused by a configured limit",
        labels=["limit"],
    )
    refused = CounterMetricFamily(
        "user_metrics_exports_refused",
        "Exports (and HTTP API requests) answered retry-later (gRPC UNAVAILABLE, HTTP 503) or closed",
        labels=["reason"],
    )
    reads = CounterMetricFamily(
        "user_metrics_reads_limited",
        "Queries of the HTTP API and SQL stopped, refused or cut by a bound",
        labels=["limit"],
    )
    for family, counts, labels in (
        (cuts, s.limit_cuts, LIMITS),
        (refused, s.exports_refused, REFUSALS),
        (reads, s.reads_limited, READ_LIMITS),
    ):
        for label in labels:  # every label always, 0 until it happens
            family.add_metric([label], counts[label])
    stopped = CounterMetricFamily(
        "user_metrics_reader_queries_stopped",
        "Reader queries interrupted to keep the writer's memory: memory (the guard), writer "
        "(held back for a checkpoint or a retried write)",
        labels=["reason"],
    )
    for reason in ("memory", "writer"):
        stopped.add_metric([reason], s.readers_stopped[reason])
    retries = CounterMetricFamily(
        "user_metrics_writer_memory_retries",
        "Writes that ran out of DuckDB's memory and were retried with readers held back",
    )
    retries.add_metric([], s.writer_memory_retries)
    reopens = CounterMetricFamily(
        "user_metrics_store_reopens",
        "Times the database was closed and opened again after a failed COMMIT, ROLLBACK or checkpoint, "
        "or a catalog entry a failed statement left behind",
    )
    reopens.add_metric([], s.store_reopens)
    batch = SummaryMetricFamily("user_metrics_export_spans", "Spans per OTLP export")
    batch.add_metric([], s.exports, s.spans_received)
    commit = SummaryMetricFamily("user_metrics_commit_duration_seconds", "Time to store and commit a group")
    commit.add_metric([], s.commits, s.commit_seconds)
    queue = GaugeMetricFamily("user_metrics_queue_depth", "Batches waiting for the store's writer")
    batches, rows = queue_depth()
    queue.add_metric([], batches)
    queued = GaugeMetricFamily("user_metrics_write_queue_rows", "Rows waiting for the store's writer")
    queued.add_metric([], rows)
    yield from (
        *spans,
        rejected,
        cuts,
        refused,
        stopped,
        retries,
        reopens,
        reads,
        batch,
        commit,
        queue,
        queued,
    )


def _counter(name: str, text: str, value: int) -> CounterMetricFamily:
    family = CounterMetricFamily(f"user_metrics_spans_{name}", text)
    family.add_metric([], value)
    return family
