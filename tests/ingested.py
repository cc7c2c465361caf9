"""Export requests through the real Ingestor into a real DuckDB file, and read the rows it stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import read_requests
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
