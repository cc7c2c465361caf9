"""The split of an Export request into candidate and plain spans, in Python: the reference.

This is the specification the native scanner (``_otlp_scan``, written in C) is tested against, with
the same interface: ``Table(keys, prefixes, like_prefixes, like_words)`` and
``split(body, table, max_span_attributes) -> (candidates, plain, spans, plain_dropped_attributes)``.
A span is *plain* when the mapper could read nothing on it: valid ids (16 and 8 bytes, not all zero;
a parent empty or of 8 bytes not all zero) and, among its first ``max_span_attributes``
attributes, no key that the conventions read (an exact key or a property prefix) and none that
looks like an LLM key to the coverage report. Plain spans become 40-byte records
``trace_id[16] span_id[8] parent[8] ordinal:u32le count:u32le`` (parent zero when empty, ordinal
the span's place among all spans of the request, count 0); the other spans are copied verbatim into
``candidates``, a smaller request keeping every resource and scope (``span_split.py`` wires it in).

It is not the service's fallback (that is the whole request decoded and mapped): it walks the
protobuf wire format in Python, slowly and plainly. Which bodies are valid is upb's decision, so it
asks upb first (``ExportTraceServiceRequest.FromString``) and raises ValueError with its message.
Repeated occurrences of a scalar field follow protobuf (the last wins); attributes are counted in
wire order over every occurrence of the field.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterator, Sequence

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

RECORD = struct.Struct("<16s8s8sII")  # one plain span: 40 bytes

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
# Field numbers (opentelemetry-proto trace/v1, common/v1).
_REQUEST_RESOURCE_SPANS = 1
_RESOURCE, _SCOPE_SPANS, _SCHEMA_URL = 1, 2, 3  # ResourceSpans
_SCOPE, _SPANS = 1, 2  # ScopeSpans (schema_url is 3 too)
_TRACE_ID, _SPAN_ID, _PARENT_SPAN_ID, _ATTRIBUTES = 1, 2, 4, 9  # Span
_KEY = 1  # KeyValue


class Table:
    """The keys the mapper reads, compiled once (the native module's ``Table``)."""

    def __init__(
        self,
        keys: Sequence[str],
        prefixes: Sequence[str],
        like_prefixes: Sequence[str],
        like_words: Sequence[str],
    ) -> None:
        self.keys = frozenset(keys)
        self.prefixes = tuple(prefixes)
        self.like = re.compile(
            "(?:{})[^\\n]*?(?:{})".format(
                "|".join(map(re.escape, like_prefixes)), "|".join(map(re.escape, like_words))
            )
        )

    def reads(self, key: str) -> bool:
        """Whether the mapper could read (or the coverage report notice) an attribute of this key."""
        return key in self.keys or key.startswith(self.prefixes) or self.like.match(key) is not None


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, start, end) of each field of a message upb found valid; for a
    length-delimited field, start..end is its payload, else the whole field after its tag."""
    at = 0
    while at < len(data):
        tag, at = _varint(data, at)
        number, wire = tag >> 3, tag & 7
        if wire == _VARINT:
            _, end = _varint(data, at)
        elif wire == _I64:
            end = at + 8
        elif wire == _I32:
            end = at + 4
        elif wire == _LEN:
            size, at = _varint(data, at)
            end = at + size
        else:  # a group (start tag 3): skip to its end tag, nested groups included
            end = _skip_group(data, at, number)
            yield number, wire, at, end
            at = end
            continue
        yield number, wire, at, end
        at = end


def _skip_group(data: bytes, at: int, number: int) -> int:
    while True:
        tag, after = _varint(data, at)
        if tag >> 3 == number and tag & 7 == 4:
            return after
        if tag & 7 == 3:
            at = _skip_group(data, after, tag >> 3)
        elif tag & 7 == _VARINT:
            _, at = _varint(data, after)
        elif tag & 7 == _I64:
            at = after + 8
        elif tag & 7 == _I32:
            at = after + 4
        else:
            size, after = _varint(data, after)
            at = after + size


def _field_bytes(data: bytes, start: int, end: int, number: int) -> bytes:
    """The tag, length and payload of a length-delimited field, as they are."""
    return _tag(number) + _len(end - start) + data[start:end]


def _tag(number: int) -> bytes:
    return _len(number << 3 | _LEN)


def _len(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _message(number: int, payload: bytes) -> bytes:
    return _tag(number) + _len(len(payload)) + payload


def _span_ids(span: bytes, table: Table, limit: int) -> tuple[bytes, bytes, bytes, int] | None:
    """(trace_id, span_id, parent, dropped attributes) of a plain span, None for a candidate."""
    trace_id = span_id = parent = b""
    count = 0
    reads = False
    for number, wire, start, end in _fields(span):
        if wire != _LEN:
            continue
        if number == _TRACE_ID:
            trace_id = span[start:end]
        elif number == _SPAN_ID:
            span_id = span[start:end]
        elif number == _PARENT_SPAN_ID:
            parent = span[start:end]
        elif number == _ATTRIBUTES:
            count += 1
            if count <= limit and not reads:
                key = b""
                for k_number, k_wire, k_start, k_end in _fields(span[start:end]):
                    if k_number == _KEY and k_wire == _LEN:
                        key = span[start + k_start : start + k_end]
                reads = table.reads(key.decode("utf-8"))
    if reads or len(trace_id) != 16 or not any(trace_id) or len(span_id) != 8 or not any(span_id):
        return None
    if len(parent) not in (0, 8) or parent == bytes(8):  # an all-zero parent would read as none
        return None
    return trace_id, span_id, parent or bytes(8), max(0, count - limit)


def _rebuilt(data: bytes, kept: tuple[int, ...], child: int, rebuild: Callable[[bytes], bytes]) -> bytes:
    """A message's ``kept`` fields as they are, and each ``child`` field as ``rebuild`` makes it."""
    out = bytearray()
    for number, wire, start, end in _fields(data):
        if wire == _LEN and number in kept:
            out += _field_bytes(data, start, end, number)
        elif wire == _LEN and number == child:
            out += rebuild(data[start:end])
    return bytes(out)


def split(
    body: bytes | bytearray | memoryview, table: Table, max_span_attributes: int
) -> tuple[bytes, bytes, int, int]:
    """(candidates, plain, spans, plain_dropped_attributes) of one Export request body."""
    data = bytes(body)
    try:
        ExportTraceServiceRequest.FromString(data)
    except DecodeError as exc:
        raise ValueError(str(exc)) from None
    plain = bytearray()
    counts = [0, 0]  # spans, plain spans' dropped attributes

    def span(span_bytes: bytes) -> bytes:
        """The span as it is (a candidate), or b"" and its record in ``plain``."""
        ids = _span_ids(span_bytes, table, max_span_attributes)
        counts[0] += 1
        if ids is None:
            return _message(_SPANS, span_bytes)
        plain.extend(RECORD.pack(*ids[:3], counts[0] - 1, 0))
        counts[1] += ids[3]
        return b""

    def scope_spans(data: bytes) -> bytes:
        return _message(_SCOPE_SPANS, _rebuilt(data, (_SCOPE, _SCHEMA_URL), _SPANS, span))

    def resource_spans(data: bytes) -> bytes:
        kept = _rebuilt(data, (_RESOURCE, _SCHEMA_URL), _SCOPE_SPANS, scope_spans)
        return _message(_REQUEST_RESOURCE_SPANS, kept)

    candidates = _rebuilt(data, (), _REQUEST_RESOURCE_SPANS, resource_spans)
    return candidates, bytes(plain), counts[0], counts[1]
