"""Spans through the real ingest path (mapper, pricer, DuckDB store), and the rows it stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import Service, read_requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from user_metrics.ingest.attributes import compile_conventions
from user_metrics.ingest.ingestor import Ingestor
from user_metrics.ingest.pricing import Pricer
from user_metrics.stats import Stats
from user_metrics.store.writer import Store


def stored_rows(db: Path, *requests: ExportTraceServiceRequest, clock: int) -> list[dict[str, Any]]:
    """Each request through one Ingestor (mapping, pricing, attribution, store); every stored row."""
    stats = Stats()
    store = Store(db, stats)
    ingestor = Ingestor(compile_conventions(), Pricer(), store, stats, clock=lambda: clock)
    try:
        for request in requests:
            result = ingestor.export(request)
            assert result.rejected_spans == 0, result
    finally:
        store.close()
    return read_requests(db)


def served_rows(tmp_path: Path, *requests: ExportTraceServiceRequest) -> list[dict[str, Any]]:
    """Export each request, in order, to a real service on a fresh DuckDB file; then stop it and
    return every row of `requests`. Every span must be accepted (no rejection)."""
    service = Service(tmp_path / "dialect.duckdb")
    app = service.start()
    try:
        for req in requests:
            result = app.ingestor.export(req)
            assert result.rejected_spans == 0, result.error_message
    finally:
        rows = service.rows()
    return rows


def by_span(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Rows keyed by span id (hex)."""
    return {row["span_id"]: row for row in rows}
