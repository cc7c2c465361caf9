"""The split path maps exactly as the Python path: captures and Hypothesis-made requests.

Each request goes through (a) ``decode_protobuf`` + ``map_request`` on the whole request (the
Python path, the reference) and (b) the split (``split_reference``, and the native ``_otlp_scan``
when it is built) + ``map_request`` of the candidates with the plain span records. The two
``MappedRequest``s must be identical: records, rejections, waits, skipped and cut counts, the
``span_facts`` rows (as a multiset: the split path writes the plain spans' rows after the others,
and ``span_facts`` has no order), and every coverage tally. Bodies the split refuses, upb refuses.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import replace
from types import ModuleType
from typing import Any

import pyarrow as pa
import pytest
from conftest import CAPTURE_NAMES, capture_requests, capture_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from otlp import any_value

from user_metrics.ingest import plain_spans, split_reference
from user_metrics.ingest.attributes import Conventions, compile_conventions
from user_metrics.ingest.mapping import MappedRequest, map_request
from user_metrics.ingest.span_split import scan_table
from user_metrics.settings import Settings
from user_metrics.store.batches import facts_table, plain_facts_table

NOW = 1_800_000_000 * 10**9


def _modules() -> list[ModuleType]:
    modules = [split_reference]
    with contextlib.suppress(ImportError):
        modules.append(importlib.import_module("user_metrics.ingest._otlp_scan"))
    return modules


SPLITS = pytest.mark.parametrize("module", _modules(), ids=lambda m: m.__name__.rsplit(".", 1)[-1])


def both_paths(
    body: bytes, conv: Conventions, module: ModuleType
) -> tuple[MappedRequest, MappedRequest, int]:
    """The whole request mapped, the split one mapped, and how many spans the split made plain."""
    request = ExportTraceServiceRequest.FromString(body)
    whole = map_request(request, conv, now_unix_nano=NOW)
    candidates, plain, spans, dropped = module.split(body, scan_table(conv, module), conv.max_span_attributes)
    assert len(plain) % plain_spans.RECORD_SIZE == 0
    split = map_request(
        ExportTraceServiceRequest.FromString(candidates),
        conv,
        now_unix_nano=NOW,
        plain=plain_spans.PlainSpans(plain, dropped),
    )
    assert spans == sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
    return whole, split, len(plain) // plain_spans.RECORD_SIZE


def _fact_rows(mapped: MappedRequest) -> list[str]:
    tables = [facts_table(mapped.facts, 7)] if mapped.facts else []
    if mapped.plain is not None and mapped.plain.records:
        tables.append(plain_facts_table(mapped.plain.records, mapped.plain.llm, 7))
    if not tables:
        return []
    return sorted(repr(row) for row in pa.concat_tables(tables).to_pylist())


def _tallies(mapped: MappedRequest) -> list[tuple[Any, ...]]:
    return [
        (key, t.llm_spans, t.llm_like_skipped, t.skipped_names, t.skipped_keys, t.unread_keys)
        for key, t in mapped.coverage.scopes.items()
    ]


def assert_same(whole: MappedRequest, split: MappedRequest) -> None:
    assert split.records == whole.records
    assert split.rejected == whole.rejected
    assert split.waits == whole.waits
    for name in ("skipped", "truncated_values", "dropped_properties", "dropped_attributes", "framework_cut"):
        assert getattr(split, name) == getattr(whole, name), name
    assert _fact_rows(split) == _fact_rows(whole)
    assert _tallies(split) == _tallies(whole)


def _capture_conventions(name: str) -> Conventions:
    s = replace(Settings(), **capture_settings(name))
    return compile_conventions(
        s.property_keys,
        user_id_keys=s.user_id_keys,
        session_id_keys=s.session_id_keys,
        property_prefixes=s.property_prefixes,
    )


@SPLITS
@pytest.mark.parametrize("name", CAPTURE_NAMES)
def test_every_capture_maps_the_same_on_both_paths(name: str, module: ModuleType) -> None:
    conv = _capture_conventions(name)
    for body in capture_requests(name):
        whole, split, _plain = both_paths(body, conv, module)
        assert_same(whole, split)


@SPLITS
def test_the_captures_have_plain_spans_the_split_finds(module: ModuleType) -> None:
    """Not every span is a candidate: the comparison above covers plain spans too."""
    found = {
        name: sum(both_paths(body, _capture_conventions(name), module)[2] for body in capture_requests(name))
        for name in CAPTURE_NAMES
    }
    assert sum(1 for count in found.values() if count) >= 5, found


# ---- Hypothesis-made requests ------------------------------------------------------------------

TRACES = [bytes(range(1, 17)), bytes(range(2, 18))]
SPAN_IDS = [bytes([i]) * 8 for i in range(1, 6)]
ODD_IDS = [b"", bytes(8), b"\x01" * 7, b"\x02" * 9]  # no id, all zero, too short, too long
PLAIN_KEYS = ["http.route", "url.path", "db.system.name", "http.response.status_code", "net.peer.name"]
IDENTITY_KEYS = ["user.id", "session.id", "gen_ai.conversation.id", "property.plan", "metadata", "tier"]
IDENTITY_KEYS += [
    "traceloop.association.properties.feature",
    "enduser.id",
    "http.request.header.helicone-user-id",
]
LLM_KEYS = [
    "gen_ai.operation.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "llm.request.type",
    "openinference.span.kind",
    "ai.operationId",
    "langfuse.observation.type",
    "gen_ai.system",
    "server.address",
    "error.type",
]
LIKE_KEYS = [
    "gen_ai.custom.model_name",
    "ai.usage.extra",
    "llm.token_count.x",
    "embedding.cost",
    "gen_ai.\nmodel",
]
LIKE_KEYS += ["langfuse.observation.usage_details", "gen_ai.prompt.0.content", "llm.invocation_parameters"]
VALUES: dict[str, list[Any]] = {
    "gen_ai.operation.name": ["chat", "embeddings", "invoke_agent", "execute_tool"],
    "llm.request.type": ["chat", "completion"],
    "openinference.span.kind": ["LLM", "EMBEDDING", "CHAIN"],
    "ai.operationId": ["ai.generateText.doGenerate", "ai.generateText", "ai.streamText"],
    "langfuse.observation.type": ["generation", "span"],
    "gen_ai.usage.input_tokens": [0, 12, -3, "40"],
    "gen_ai.usage.output_tokens": [7, 2**62, 1.5],
    "metadata": ['{"plan": "pro", "team": "a"}', "not json", '{"nested": {"x": 1}}'],
}
SCOPES = ["opentelemetry.instrumentation.fastapi", "com.anthropic.sdk.python"]
SCOPES += ["openinference.instrumentation.langchain", "opentelemetry.instrumentation.openai_v2", ""]

# Every key the conventions know (the split reads only some: span_split.scan_table), and others.
ALL_KEYS = sorted(compile_conventions(["tier"]).by_key)
_keys = (
    st.sampled_from(PLAIN_KEYS + IDENTITY_KEYS + LLM_KEYS + LIKE_KEYS)
    | st.sampled_from(ALL_KEYS)
    | st.text(max_size=12)
)


@st.composite
def _attribute(draw: st.DrawFn) -> KeyValue:
    key = draw(_keys)
    choices = VALUES.get(key, ["gpt-4o", "user-1", 5, 0.5, True, ""])
    value = draw(st.sampled_from(choices))
    return KeyValue(key=key, value=any_value(value) if value != "" else AnyValue(string_value=""))


@st.composite
def _span(draw: st.DrawFn, spans: Any) -> None:
    span = spans.add()
    span.trace_id = draw(
        st.sampled_from(TRACES + ODD_IDS[:1]) if draw(st.integers(0, 3)) == 0 else st.just(TRACES[0])
    )
    span.span_id = draw(
        st.sampled_from(SPAN_IDS + ODD_IDS) if draw(st.integers(0, 9)) == 0 else st.sampled_from(SPAN_IDS)
    )
    span.parent_span_id = draw(st.sampled_from([b"", *SPAN_IDS, *SPAN_IDS, *ODD_IDS]))
    span.name = draw(st.sampled_from(["chat gpt-4o", "GET /items", "ai.generateText", "OpenAI-generation"]))
    start = NOW - draw(st.integers(0, 10**12))
    span.start_time_unix_nano = draw(st.sampled_from([start] * 4 + [0, NOW + 2 * 86_400 * 10**9]))
    span.end_time_unix_nano = start + draw(
        st.integers(-(10**6), 10**10) if draw(st.booleans()) else st.just(10**6)
    )
    span.status.code = draw(st.integers(0, 2))
    kind = draw(st.sampled_from(["plain", "plain", "llm", "identity", "any"]))
    if kind == "plain":  # an HTTP or DB span, sometimes with more attributes than are read
        keys = st.sampled_from(PLAIN_KEYS + ["server.address", "error.type", "gen_ai.system"])
        span.attributes.extend(
            KeyValue(key=k, value=any_value("x")) for k in draw(st.lists(keys, max_size=6))
        )
        return
    if kind in ("llm", "identity"):
        pool = LLM_KEYS[:6] if kind == "llm" else IDENTITY_KEYS
        for key in draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4)):
            span.attributes.add(key=key).value.CopyFrom(
                any_value(draw(st.sampled_from(VALUES.get(key, ["m-1"]))))
            )
    span.attributes.extend(draw(st.lists(_attribute(), max_size=7 if kind == "any" else 2)))


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    request = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(1, 2))):
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.extend(draw(st.lists(_attribute(), max_size=3)))
        resource_spans.resource.attributes.add(key="service.name").value.string_value = "shop"
        for _ in range(draw(st.integers(0, 3))):
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.scope.name = draw(st.sampled_from(SCOPES))
            for _ in range(draw(st.integers(0, 8))):
                draw(_span(scope_spans.spans))
    return request.SerializeToString()


CONVENTIONS = compile_conventions(["tier"], max_span_attributes=4, max_value_length=16, max_properties=2)


@SPLITS
@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(body=requests())
def test_made_requests_map_the_same_on_both_paths(body: bytes, module: ModuleType) -> None:
    whole, split, _plain = both_paths(body, CONVENTIONS, module)
    assert_same(whole, split)


NATIVE = _modules()[1:]


@pytest.mark.skipif(not NATIVE, reason="the native scanner is not built")
@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(body=requests())
def test_the_native_split_gives_what_the_reference_gives(body: bytes) -> None:
    """Same plain records, counts, and candidates (as messages: their bytes may be laid out otherwise)."""
    native = NATIVE[0]
    ours = split_reference.split(
        body, scan_table(CONVENTIONS, split_reference), CONVENTIONS.max_span_attributes
    )
    theirs = native.split(body, scan_table(CONVENTIONS, native), CONVENTIONS.max_span_attributes)
    assert theirs[1:] == ours[1:]
    parse = ExportTraceServiceRequest.FromString
    assert parse(theirs[0]) == parse(ours[0])
