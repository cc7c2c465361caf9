"""The ingest core, shared by every receiver: decode -> map -> price -> store (durable)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from user_metrics.batches import to_arrow
from user_metrics.errors import InvalidInput
from user_metrics.mapping import Conventions, Rejection, map_request
from user_metrics.pricing import Pricer
from user_metrics.stats import Stats
from user_metrics.store import Store

MAX_REJECTIONS_NAMED = 5


@dataclass(frozen=True)
class ExportResult:
    """What an Export answers: OTLP partial success when spans were rejected."""

    rejected_spans: int = 0
    error_message: str = ""


def decode_protobuf(body: bytes) -> ExportTraceServiceRequest:
    """Parse a binary ExportTraceServiceRequest; InvalidInput when it is not one."""
    try:
        return ExportTraceServiceRequest.FromString(body)
    except DecodeError as exc:
        raise InvalidInput(f"the body is not an OTLP ExportTraceServiceRequest: {exc}") from exc


def describe_rejections(rejected: list[Rejection]) -> str:
    """One message naming each rejected span (the first few) and its problem."""
    parts = [f"span {r.span_id} ({r.name!r}) in trace {r.trace_id}: {r.reason}" for r in rejected]
    extra = len(parts) - MAX_REJECTIONS_NAMED
    text = "; ".join(parts[:MAX_REJECTIONS_NAMED])
    if extra > 0:
        text += f"; and {extra} more"
    return f"rejected {len(rejected)} LLM span(s): {text}"


class Ingestor:
    """Maps, prices and stores Export requests; returns once the records are committed."""

    def __init__(
        self,
        conventions: Conventions,
        pricer: Pricer,
        store: Store,
        stats: Stats,
        clock: Callable[[], int] = time.time_ns,
        mapping_concurrency: int = 2,
    ) -> None:
        self._conventions = conventions
        self._pricer = pricer
        self._store = store
        self._stats = stats
        self._clock = clock
        # Mapping is pure Python and holds the GIL: more mappers at once than cores cannot run
        # faster, and they compete with the store's writer thread for the GIL.
        self._mapping_slots = threading.BoundedSemaphore(mapping_concurrency)

    def export(self, request: ExportTraceServiceRequest) -> ExportResult:
        """Store the request's LLM spans; raises Unavailable when they could not be committed."""
        with self._mapping_slots:
            mapped = map_request(request, self._conventions, now_unix_nano=self._clock())
        received = len(mapped.records) + len(mapped.rejected) + mapped.skipped
        self._stats.add(
            exports=1,
            spans_received=received,
            spans_skipped=mapped.skipped,
            values_truncated=mapped.truncated_values,
        )
        for rejection in mapped.rejected:
            self._stats.reject(rejection.reason.split(":")[0])
        if mapped.records:
            with self._mapping_slots:
                costs, sources = self._pricer.price(mapped.records)
                table = to_arrow(mapped.records, costs, sources)
            self._store.write(table).result()
        if not mapped.rejected:
            return ExportResult()
        return ExportResult(len(mapped.rejected), describe_rejections(mapped.rejected))
