"""Build OTLP protobuf requests by hand, for tests and benchmarks."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

T0 = 1_795_000_000_000_000_000  # 2026-11-18T... UTC, in ns


def any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, (list, tuple)):
        out = AnyValue()
        out.array_value.values.extend(any_value(v) for v in value)
        return out
    if isinstance(value, Mapping):
        out = AnyValue()
        out.kvlist_value.values.extend(KeyValue(key=k, value=any_value(v)) for k, v in value.items())
        return out
    raise TypeError(value)


def attributes(values: Mapping[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in values.items()]


def span(
    attrs: Mapping[str, Any],
    *,
    trace_id: bytes | None = None,
    span_id: bytes | None = None,
    parent: bytes = b"",
    start: int = T0,
    duration_ns: int = 250_000_000,
    error: bool = False,
    name: str = "chat",
) -> Span:
    return Span(
        trace_id=trace_id if trace_id is not None else os.urandom(16),
        span_id=span_id if span_id is not None else os.urandom(8),
        parent_span_id=parent,
        name=name,
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=start,
        end_time_unix_nano=start + duration_ns,
        attributes=attributes(attrs),
        status=Status(code=Status.STATUS_CODE_ERROR, message="boom") if error else Status(),
    )


def request(spans: Sequence[Span], resource: Mapping[str, Any] | None = None) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(attributes(resource or {"service.name": "test-svc"}))
    ss = rs.scope_spans.add()
    ss.scope.name = "tests"
    ss.spans.extend(spans)
    return req


def scoped_request(*scoped: tuple[str, Sequence[Span]], service: str = "shop") -> ExportTraceServiceRequest:
    """One request; each (scope name, spans) is a scope of its own, as libraries export them."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(attributes({"service.name": service}))
    for name, spans in scoped:
        ss = rs.scope_spans.add()
        ss.scope.name = name
        ss.spans.extend(spans)
    return req


def chat(
    user: str | None = "u1", model: str = "gpt-4o-mini", inp: int = 100, out: int = 50, **more: Any
) -> dict[str, Any]:
    """Attributes of a current-semconv chat span."""
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": model,
        "gen_ai.usage.input_tokens": inp,
        "gen_ai.usage.output_tokens": out,
    }
    if user is not None:
        attrs["user.id"] = user
    attrs.update(more)
    return attrs


# An Anthropic call with prompt caching as OpenLLMetry's instrumentation (older releases) records
# it: input without cache (Anthropic's own convention) beside the cache counts.
ANTHROPIC_OPENLLMETRY: dict[str, Any] = {
    "gen_ai.system": "Anthropic",
    "llm.request.type": "chat",
    "gen_ai.request.model": "claude-sonnet-4-20250514",
    "gen_ai.usage.prompt_tokens": 12,
    "gen_ai.usage.completion_tokens": 300,
    "gen_ai.usage.cache_read_input_tokens": 5000,
    "gen_ai.usage.cache_creation_input_tokens": 1000,
}


# The usage attributes of a Vercel AI SDK v6 call (`ai` 6.0.326, OpenAI chat: 33 in of which 11
# cached, 51 out of which 12 reasoning), on its per-call span and, summed, on the wrapper.
AI_SDK_V6_USAGE: dict[str, Any] = {
    "ai.usage.inputTokens": 33,
    "ai.usage.inputTokenDetails.noCacheTokens": 22,
    "ai.usage.inputTokenDetails.cacheReadTokens": 11,
    "ai.usage.outputTokens": 51,
    "ai.usage.outputTokenDetails.textTokens": 39,
    "ai.usage.outputTokenDetails.reasoningTokens": 12,
    "ai.usage.totalTokens": 84,
    "ai.usage.reasoningTokens": 12,
    "ai.usage.cachedInputTokens": 11,
}


def _each_span(doc: Any) -> Iterator[dict[str, Any]]:
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for s in ss.get("spans", []):
                yield s
                yield from s.get("links", [])


def to_otlp_json(req: ExportTraceServiceRequest) -> dict[str, Any]:
    """The OTLP/JSON form of a request: proto3 JSON with hex trace and span ids."""
    doc = json_format.MessageToDict(req)
    for item in _each_span(doc):
        for name in ("traceId", "spanId", "parentSpanId"):
            if name in item:
                item[name] = base64.b64decode(item[name]).hex()
    return doc
