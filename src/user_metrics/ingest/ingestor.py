"""The ingest core, shared by every receiver: decode -> map -> price -> store (durable).

Binary bodies go through ``export_body``: where the native scanner is built, it splits the body
first (``span_split.py``, the GIL released) and only the candidate spans are decoded and mapped in
Python, the plain ones riding along as id records (``plain_spans.py``); otherwise, or with
``USER_METRICS_INGEST_PATH=python``, the whole body is decoded and mapped (the Python path).
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from user_metrics.coverage_counts import CoverageCounts
from user_metrics.errors import InvalidInput, Overloaded
from user_metrics.ingest import plain_spans, span_split
from user_metrics.ingest.attributes import Conventions
from user_metrics.ingest.fair_slots import FairSlots
from user_metrics.ingest.inheritance import Wait
from user_metrics.ingest.mapping import INTERNAL_ERROR, PAUSE_EVERY, Rejection, map_request
from user_metrics.ingest.pricing import Pricer, Prices
from user_metrics.ingest.property_keys import PropertyKeyBudget
from user_metrics.stats import Stats
from user_metrics.store.batches import facts_table, plain_facts_table, to_arrow
from user_metrics.store.records import RequestRecord, SpanFact
from user_metrics.store.writer import Store

log = logging.getLogger(__name__)

MAX_REJECTIONS_NAMED = 5


@dataclass(frozen=True)
class ExportResult:
    """What an Export answers: OTLP partial success when spans were rejected."""

    rejected_spans: int = 0
    error_message: str = ""

    def to_response(self) -> ExportTraceServiceResponse:
        """The OTLP response message, the same for every transport."""
        if not self.rejected_spans:
            return ExportTraceServiceResponse()
        return ExportTraceServiceResponse(
            partial_success=ExportTracePartialSuccess(
                rejected_spans=self.rejected_spans, error_message=self.error_message
            )
        )


def decode_protobuf(body: bytes | bytearray) -> ExportTraceServiceRequest:
    """Parse a binary ExportTraceServiceRequest; InvalidInput when it is not one."""
    try:
        return ExportTraceServiceRequest.FromString(body)
    except DecodeError as exc:
        raise InvalidInput(f"the body is not an OTLP ExportTraceServiceRequest: {exc}") from exc


# The OTLP JSON mapping writes these bytes fields as hex, where the proto3 JSON mapping uses base64.
_HEX_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def decode_json(body: bytes | bytearray) -> ExportTraceServiceRequest:
    """Parse an OTLP/JSON ExportTraceServiceRequest; InvalidInput when it is not one.

    OTLP/JSON is the proto3 JSON mapping except that trace and span ids are hex; lowerCamelCase
    names, integer enums, 64-bit integers as strings or numbers are proto3's own rules, and
    unknown fields are ignored (as the OTLP specification requires of receivers).
    """
    return decode_json_bounded(body, None)[0]


def decode_json_bounded(
    body: bytes | bytearray, max_attributes: int | None
) -> tuple[ExportTraceServiceRequest, int]:
    """``decode_json`` keeping at most ``max_attributes`` attributes of each span and resource (the
    first), and how many it left out. Building the message costs far more per attribute than
    mapping it, so the mapper's bound (``max_span_attributes``) is applied before, here."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise InvalidInput(f"the body is not JSON: {_utf8(str(exc)[:200])}") from None
    if not isinstance(document, dict):
        raise InvalidInput("the body is not an OTLP ExportTraceServiceRequest: not a JSON object")
    dropped = 0
    for span in _json_spans(document):
        _hex_ids_to_base64(span)
        for link in _json_list(span, "links"):
            _hex_ids_to_base64(link)
        if max_attributes is not None:
            dropped += _cut_attributes(span, max_attributes)
    if max_attributes is not None:
        for resource_spans in _json_list(document, "resourceSpans"):
            resource = resource_spans.get("resource")
            if isinstance(resource, dict):
                dropped += _cut_attributes(resource, max_attributes)
    try:
        request = json_format.ParseDict(document, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    # upb raises SystemError for some invalid text (a lone surrogate in a map key).
    except (json_format.ParseError, RecursionError, ValueError, TypeError, SystemError) as exc:
        what = _utf8(str(exc)[:300])
        raise InvalidInput(f"the body is not an OTLP ExportTraceServiceRequest: {what}") from None
    return request, dropped


def _utf8(text: str) -> str:
    """``text`` as UTF-8 can carry it (a google.rpc.Status message): json.loads lets lone
    surrogates through, and the parser's message may quote one; those are written escaped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _cut_attributes(item: dict[str, Any], limit: int) -> int:
    attributes = item.get("attributes")
    if not isinstance(attributes, list) or len(attributes) <= limit:
        return 0
    item["attributes"] = attributes[:limit]
    return len(attributes) - limit


def _json_list(parent: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The objects of a repeated field (ParseDict reports a field of the wrong type)."""
    value = parent.get(name)
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _json_spans(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        span
        for resource_spans in _json_list(document, "resourceSpans")
        for scope_spans in _json_list(resource_spans, "scopeSpans")
        for span in _json_list(scope_spans, "spans")
    ]


def _hex_ids_to_base64(item: dict[str, Any]) -> None:
    for name in _HEX_ID_FIELDS:
        value = item.get(name)
        if not isinstance(value, str):
            continue  # absent, or a type ParseDict will reject
        try:
            item[name] = base64.b64encode(bytes.fromhex(value)).decode("ascii")
        except ValueError:
            raise InvalidInput(f"{name} must be hex, got {value[:64]!r}") from None


def describe_rejections(rejected: list[Rejection]) -> str:
    """One message naming each rejected span (the first few) and its problem."""
    parts = [f"span {r.span_id} ({r.name!r}) in trace {r.trace_id}: {r.reason}" for r in rejected]
    extra = len(parts) - MAX_REJECTIONS_NAMED
    text = "; ".join(parts[:MAX_REJECTIONS_NAMED])
    if extra > 0:
        text += f"; and {extra} more"
    return f"rejected {len(rejected)} LLM span(s): {text}"


class Ingestor:
    """Maps, prices and stores Export requests; returns once the records are committed.

    One span that cannot be mapped, priced or converted is rejected alone (OTLP partial success,
    counted); the rest of its request is stored. An export fails whole only when the store does
    (retryable), or when it is refused whole (undecodable, too large, the queue full).
    """

    def __init__(
        self,
        conventions: Conventions,
        pricer: Pricer,
        store: Store,
        stats: Stats,
        clock: Callable[[], int] = time.time_ns,
        mapping_concurrency: int = 2,
        max_property_keys: int = 1000,
        attribution_window_seconds: float = 30.0,
        coverage: CoverageCounts | None = None,
        split: span_split.SpanSplit | None = None,
    ) -> None:
        """``coverage``: the coverage report's live counters, given each request's tally.
        ``split``: the split of binary bodies (default: ``span_split.load``, native when built)."""
        self.split = split if split is not None else span_split.load(conventions)
        self._conventions = conventions
        self._coverage = coverage
        self._pricer = pricer
        self._store = store
        self._stats = stats
        self._clock = clock
        self._property_keys = PropertyKeyBudget(store.property_keys(), max_property_keys)
        self._attribution_window_us = int(attribution_window_seconds * 1e6)
        # Mapping is pure Python and holds the GIL: more mappers at once than cores cannot run
        # faster, and they compete with the store's writer thread for the GIL. Served in order,
        # a big export giving way every few hundred spans (FairSlots.turn).
        self._mapping_slots = FairSlots(mapping_concurrency)

    @property
    def max_span_attributes(self) -> int:
        """The attributes read of one span or resource (decoders may apply it first)."""
        return self._conventions.max_span_attributes

    def export_body(self, body: bytes | bytearray) -> ExportResult:
        """``export`` of a binary ExportTraceServiceRequest; InvalidInput when it is not one."""
        if not self.split.splits:
            return self.export(decode_protobuf(body))
        try:  # native: no GIL held, so not in a mapping slot
            split = self.split.split(body)
        except ValueError as exc:
            raise InvalidInput(f"the body is not an OTLP ExportTraceServiceRequest: {exc}") from None
        plain = plain_spans.PlainSpans(split.plain, split.plain_dropped_attributes)
        return self._export(decode_protobuf(split.candidates), split.spans, plain, 0)

    def export(self, request: ExportTraceServiceRequest, *, dropped_attributes: int = 0) -> ExportResult:
        """Store the request's LLM spans; raises Unavailable when they could not be committed.

        ``dropped_attributes``: attributes a decoder already left out (max_span_attributes).
        """
        return self._export(request, _span_count(request), None, dropped_attributes)

    def _export(
        self,
        request: ExportTraceServiceRequest,
        spans: int,
        plain: plain_spans.PlainSpans | None,
        dropped_attributes: int,
    ) -> ExportResult:
        small = spans <= PAUSE_EVERY  # mapped faster than a big export's part
        with self._mapping_slots.held(small):
            mapped = map_request(
                request,
                self._conventions,
                now_unix_nano=self._clock(),
                pause=self._mapping_slots.turn,
                plain=plain,
            )
        received = len(mapped.records) + len(mapped.rejected) + mapped.skipped
        self._stats.add(
            exports=1,
            spans_received=received,
            spans_skipped=mapped.skipped,
            spans_cache_added_to_input=sum(r.cache_added_to_input for r in mapped.records),
        )
        if self._coverage is not None and mapped.coverage.scopes:
            self._coverage.add(mapped.coverage.scopes)
        self._stats.cut("max_value_length", mapped.truncated_values)
        self._stats.cut("framework_candidates", mapped.framework_cut)
        self._stats.cut("max_properties", mapped.dropped_properties)
        self._stats.cut("max_span_attributes", mapped.dropped_attributes + dropped_attributes)
        rejected = list(mapped.rejected)
        parts = None
        plain_facts = mapped.plain if mapped.plain is not None and mapped.plain.records else None
        if mapped.records or mapped.facts or plain_facts:
            records, dropped = self._property_keys.admit(mapped.records)
            self._stats.cut("max_property_keys", dropped)
            now_us = self._clock() // 1000
            with self._mapping_slots.held(small):
                tables = self._prepare(records, mapped.waits, rejected, now_us)
                parts = (*tables, _facts(mapped.facts, plain_facts, now_us))
        for rejection in rejected:  # counted with what was received, before the wait for the store
            self._stats.reject(rejection.reason.split(":")[0])
        internal = [r for r in rejected if r.internal]
        if internal:
            log.error("%d span(s) rejected by an internal error; the first: %s", len(internal), internal[0])
        if parts is not None:
            self._write(*parts)
        if not rejected:
            return ExportResult()
        return ExportResult(len(rejected), describe_rejections(rejected))

    def _prepare(
        self,
        records: list[RequestRecord],
        waits: list[Wait | None],
        rejected: list[Rejection],
        now_us: int,
    ) -> tuple[pa.Table, pa.Table | None]:
        """Price the records and build the Arrow rows of the final and the waiting ones.

        A record that fails (an unexpected error pricing it, a value Arrow cannot hold) is moved
        to ``rejected``; the others are kept.
        """
        try:
            prices = self._pricer.price(records)
            return self._tables(records, prices, waits, now_us)
        except Exception:  # noqa: BLE001 - find the record(s) at fault, one by one
            pass
        kept: list[RequestRecord] = []
        kept_waits: list[Wait | None] = []
        prices = Prices([], [], [], [])
        for record, wait in zip(records, waits, strict=True):
            try:
                one = self._pricer.price([record])
                to_arrow([record], *one)
            except Exception as exc:  # noqa: BLE001 - a bug or a value DuckDB cannot hold
                rejected.append(
                    Rejection(
                        record.trace_id,
                        record.span_id,
                        "",
                        f"{INTERNAL_ERROR}: pricing or storing the span failed: "
                        f"{type(exc).__name__}: {str(exc)[:200]}",
                        internal=True,
                    )
                )
                continue
            kept.append(record)
            kept_waits.append(wait)
            prices.costs.extend(one.costs)
            prices.sources.extend(one.sources)
            prices.providers.extend(one.providers)
            prices.splits.extend(one.splits)
        return self._tables(kept, prices, kept_waits, now_us)

    def _tables(
        self,
        records: list[RequestRecord],
        prices: Prices,
        waits: list[Wait | None],
        now_us: int,
    ) -> tuple[pa.Table, pa.Table | None]:
        final = [i for i, w in enumerate(waits) if w is None]
        waiting = [i for i, w in enumerate(waits) if w is not None]

        def rows(picked: list[int]) -> pa.Table:
            if len(picked) == len(records):  # the usual case: every record is final
                return to_arrow(records, *prices)
            costs, sources, providers, splits = prices
            return to_arrow(
                [records[i] for i in picked],
                [costs[i] for i in picked],
                [sources[i] for i in picked],
                [providers[i] for i in picked],
                [splits[i] for i in picked],
            )

        pending = None
        if waiting:
            why = [w for w in waits if w is not None]
            deadline = now_us + self._attribution_window_us
            pending = rows(waiting)
            for name, values, kind in (
                ("waiting_for", [w.ancestor for w in why], pa.string()),
                ("deadline_us", [deadline] * len(why), pa.int64()),
                ("counterpart", [w.counterpart for w in why], pa.bool_()),
                ("conversation", [w.conversation for w in why], pa.bool_()),
            ):
                pending = pending.append_column(name, pa.array(values, kind))
        return rows(final), pending

    def _write(self, table: pa.Table, pending: pa.Table | None, facts: pa.Table | None) -> None:
        """Hand the rows to the store and wait until they are durable.

        A big export is written in parts of WRITE_PART_ROWS, each committed before the next is
        queued, so the exports that arrive meanwhile are committed between its parts instead of
        after all of it. Re-sending a partly stored export stores the rest once.
        """
        parts = _parts(table, pending, facts)
        try:
            for part in parts:
                self._store.write(*part).result()
        except Overloaded:
            self._stats.refuse("queue_full")
            raise


def _facts(facts: list[SpanFact], plain: plain_spans.PlainFacts | None, now_us: int) -> pa.Table | None:
    """The ``span_facts`` rows of the mapped spans and of the plain ones."""
    tables = [facts_table(facts, now_us)] if facts else []
    if plain is not None:
        tables.append(plain_facts_table(plain.records, plain.llm, now_us))
    return pa.concat_tables(tables) if len(tables) > 1 else (tables[0] if tables else None)


def _span_count(request: ExportTraceServiceRequest) -> int:
    return sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)


# Rows per part of one export's write (see Ingestor._write).
WRITE_PART_ROWS = 8192


def _parts(
    table: pa.Table, pending: pa.Table | None, facts: pa.Table | None
) -> list[tuple[pa.Table, pa.Table | None, pa.Table | None]]:
    """The three tables cut into parts of at most WRITE_PART_ROWS rows each."""
    sizes = [t.num_rows for t in (table, pending, facts) if t is not None]
    count = max(1, -(-max(sizes, default=0) // WRITE_PART_ROWS))
    if count == 1:
        return [(table, pending, facts)]

    def part(t: pa.Table | None, i: int) -> pa.Table | None:
        if t is None:
            return None
        piece = t.slice(i * WRITE_PART_ROWS, WRITE_PART_ROWS)
        return piece if piece.num_rows else None

    out = []
    for i in range(count):
        rows = part(table, i)
        out.append((rows if rows is not None else table.slice(0, 0), part(pending, i), part(facts, i)))
    return out
