"""The native split's contract read straightforwardly in Python with upb, for the native tests.

``expected_split`` parses a body with ``ExportTraceServiceRequest.FromString``, classifies every span
with the plain rule of the contract (ids well formed, none of the first ``max_span_attributes`` keys
an exact key of the conventions, under a property prefix or LLM-like by coverage_scan's own regex)
and builds what ``_otlp_scan.split`` must return. ``assert_split_matches`` compares the two.
Also: protobuf wire-format helpers for hand-made bodies and Hypothesis strategies of requests that
mix plain spans (HTTP/DB attributes) with every kind of candidate.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from user_metrics.ingest import conventions as c
from user_metrics.ingest.attributes import Conventions, compile_conventions
from user_metrics.ingest.coverage_scan import _LLM_LIKE_KEY

try:
    from user_metrics.ingest import _otlp_scan
except ImportError:  # not built: the Python path runs
    _otlp_scan = None

REQUIRE_NATIVE = os.environ.get("USER_METRICS_REQUIRE_NATIVE") == "1"


def native_module() -> Any:
    """The built module; the test is skipped without it, or fails when CI requires it."""
    if _otlp_scan is None:
        reason = "user_metrics.ingest._otlp_scan is not built (no C compiler at install time?)"
        if REQUIRE_NATIVE:
            pytest.fail(f"{reason}, and USER_METRICS_REQUIRE_NATIVE=1")
        pytest.skip(reason)
    return _otlp_scan


@dataclass(frozen=True)
class Lists:
    """What a Table is built from (the contract: keys, prefixes, LLM-like prefixes and words)."""

    keys: list[str]
    prefixes: list[str]
    like_prefixes: list[str]
    like_words: list[str]

    def table(self, module: Any) -> Any:
        return module.Table(self.keys, self.prefixes, self.like_prefixes, self.like_words)


def lists(conv: Conventions | None = None) -> Lists:
    conv = conv or compile_conventions()
    return Lists(
        sorted({*conv.by_key, *conv.bare_property_keys, *conv.property_json_keys}),
        list(conv.property_prefixes),
        list(c.LLM_LIKE_PREFIXES),
        list(c.LLM_LIKE_WORDS),
    )


def hits(table: Lists, key: str) -> bool:
    """The plain rule's key test; for the real conventions, LLM-like is coverage_scan's regex."""
    if key in table.keys or key.startswith(tuple(table.prefixes)):
        return True
    if table.like_prefixes == list(c.LLM_LIKE_PREFIXES) and table.like_words == list(c.LLM_LIKE_WORDS):
        return _LLM_LIKE_KEY.match(key) is not None
    pattern = "(?:{})[^\\n]*?(?:{})".format(
        "|".join(map(re.escape, table.like_prefixes)), "|".join(map(re.escape, table.like_words))
    )
    return bool(table.like_prefixes and table.like_words and re.match(pattern, key))


def is_plain(span: Span, table: Lists, limit: int) -> bool:
    if len(span.trace_id) != 16 or not any(span.trace_id):
        return False
    if len(span.span_id) != 8 or not any(span.span_id):
        return False
    if len(span.parent_span_id) not in (0, 8) or span.parent_span_id == bytes(8):
        return False
    return not any(hits(table, kv.key) for kv in span.attributes[:limit])


@dataclass
class Expected:
    candidates: ExportTraceServiceRequest
    plain: bytes
    spans: int
    plain_dropped: int


def expected_split(body: bytes, table: Lists, limit: int) -> Expected:
    req = ExportTraceServiceRequest.FromString(body)
    out = ExportTraceServiceRequest()
    plain: list[bytes] = []
    ordinal = dropped = 0
    for rs in req.resource_spans:
        rs_out = out.resource_spans.add()
        if rs.HasField("resource"):
            rs_out.resource.CopyFrom(rs.resource)
        rs_out.schema_url = rs.schema_url
        for ss in rs.scope_spans:
            ss_out = rs_out.scope_spans.add()
            if ss.HasField("scope"):
                ss_out.scope.CopyFrom(ss.scope)
            ss_out.schema_url = ss.schema_url
            for span in ss.spans:
                if is_plain(span, table, limit):
                    parent = span.parent_span_id or bytes(8)
                    plain.append(span.trace_id + span.span_id + parent + struct.pack("<II", ordinal, 0))
                    dropped += max(len(span.attributes) - limit, 0)
                else:
                    ss_out.spans.add().CopyFrom(span)
                ordinal += 1
    return Expected(out, b"".join(plain), ordinal, dropped)


def assert_split_matches(module: Any, body: bytes, table: Lists, limit: int = 1024) -> None:
    """split(body) equals the reference reading of the same body (structure, spans, records, counts)."""
    candidates, plain, spans, dropped = module.split(body, table.table(module), limit)
    want = expected_split(body, table, limit)
    got = ExportTraceServiceRequest.FromString(candidates)
    assert (spans, dropped) == (want.spans, want.plain_dropped)
    assert plain == want.plain
    assert len(got.resource_spans) == len(want.candidates.resource_spans)
    for rs, rs_want in zip(got.resource_spans, want.candidates.resource_spans, strict=True):
        assert rs.HasField("resource") == rs_want.HasField("resource")
        assert (rs.resource, rs.schema_url) == (rs_want.resource, rs_want.schema_url)
        assert len(rs.scope_spans) == len(rs_want.scope_spans)
        for ss, ss_want in zip(rs.scope_spans, rs_want.scope_spans, strict=True):
            assert ss.HasField("scope") == ss_want.HasField("scope")
            assert (ss.scope, ss.schema_url) == (ss_want.scope, ss_want.schema_url)
            assert list(ss.spans) == list(ss_want.spans)
            # verbatim: each candidate span's bytes are the input's
            assert [s.SerializeToString() for s in ss.spans] == [s.SerializeToString() for s in ss_want.spans]


# ---- wire format ----------------------------------------------------------------------------------


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if not n:
            return bytes(out + bytes([byte]))
        out.append(byte | 0x80)


def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def ld(number: int, payload: bytes) -> bytes:
    return tag(number, 2) + varint(len(payload)) + payload


def group(number: int, payload: bytes = b"") -> bytes:
    return tag(number, 3) + payload + tag(number, 4)


def in_span(span_fields: bytes, resource: bytes = b"") -> bytes:
    """A request of one ResourceSpans (with ``resource`` fields) > one ScopeSpans > one span."""
    return ld(1, resource + ld(2, ld(2, span_fields)))


IDS = ld(1, b"\x01" * 16) + ld(2, b"\x02" * 8)


def attr(key: bytes, value: bytes = b"") -> bytes:
    return ld(9, ld(1, key) + ld(2, value))


# ---- Hypothesis -----------------------------------------------------------------------------------

PLAIN_KEYS = [
    "http.request.method",
    "http.route",
    "url.path",
    "server.address",
    "server.port",
    "db.system.name",
    "db.query.text",
    "user_agent.original",
    "llm",
    "ai",
    "gen_ai",
    "x.model",
    "ai.\nmodel",
    "gen_ai.x\ntoken",
    "gen_ai.\ntoken",  # a '\n' between the prefix's end and the word
]
CANDIDATE_KEYS = [
    "user.id",
    "session.id",
    "gen_ai.request.model",
    "llm.token_count.prompt",
    "metadata",
    "property.plan",
    "traceloop.association.properties.user_id",
    "ai.telemetry.metadata.userId",
    "ai.foo.usage",
    "gen_ai.anything_cost",
    "langfuse.observation.xmodel",
    "embedding.vector_model",
]


def ids(length: int) -> st.SearchStrategy[bytes]:
    """Ids of the right length mostly; empty, short, long and all-zero ones too."""
    return st.one_of(
        st.binary(min_size=length, max_size=length),
        st.sampled_from([b"", b"\x01", b"\x00" * length, b"\x01" * (length - 1), b"\x01" * (length + 1)]),
    )


scalars = st.one_of(
    st.text(max_size=12).map(lambda s: AnyValue(string_value=s)),
    st.integers(-(2**63), 2**63 - 1).map(lambda n: AnyValue(int_value=n)),
    st.booleans().map(lambda b: AnyValue(bool_value=b)),
    st.binary(max_size=8).map(lambda b: AnyValue(bytes_value=b)),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda vs: AnyValue(array_value={"values": vs})),
        st.lists(st.tuples(st.text(max_size=5), inner), max_size=3).map(
            lambda kvs: AnyValue(kvlist_value={"values": [KeyValue(key=k, value=v) for k, v in kvs]})
        ),
    ),
    max_leaves=4,
)
keys = st.one_of(st.sampled_from(PLAIN_KEYS), st.sampled_from(CANDIDATE_KEYS), st.text(max_size=20))


@st.composite
def spans(draw: st.DrawFn) -> Span:
    plain_ids = draw(st.booleans())
    span = Span(
        trace_id=draw(st.binary(min_size=16, max_size=16) if plain_ids else ids(16)),
        span_id=draw(st.binary(min_size=8, max_size=8) if plain_ids else ids(8)),
        parent_span_id=draw(st.one_of(st.just(b""), ids(8))),
        name=draw(st.text(max_size=20)),
        kind=draw(st.integers(0, 5)),
        start_time_unix_nano=draw(st.integers(0, 2**64 - 1)),
    )
    plain_keys = st.sampled_from(PLAIN_KEYS)
    attribute_keys = plain_keys if draw(st.integers(0, 2)) == 0 else keys
    for key in draw(st.lists(attribute_keys, max_size=8)):
        span.attributes.add(key=key).value.CopyFrom(draw(values))
    if draw(st.booleans()):
        span.status.code = draw(st.integers(0, 2))  # type: ignore[assignment]
        span.status.message = draw(st.text(max_size=8))
    if draw(st.integers(0, 4)) == 0:
        event = span.events.add(name=draw(st.text(max_size=8)))
        event.attributes.add(key=draw(keys)).value.CopyFrom(draw(values))
    if draw(st.integers(0, 4)) == 0:
        span.links.add(trace_id=draw(ids(16)), span_id=draw(ids(8)), trace_state=draw(st.text(max_size=8)))
    return span


@st.composite
def requests(draw: st.DrawFn) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(0, 2))):
        rs = req.resource_spans.add(schema_url=draw(st.text(max_size=6)))
        if draw(st.booleans()):
            rs.resource.attributes.add(key=draw(keys)).value.CopyFrom(draw(values))
        for _ in range(draw(st.integers(0, 2))):
            ss = rs.scope_spans.add(schema_url=draw(st.text(max_size=6)))
            if draw(st.booleans()):
                ss.scope.name = draw(st.text(max_size=10))
            ss.spans.extend(draw(st.lists(spans(), max_size=4)))
    return req
