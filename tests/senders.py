"""Sending OTLP to a running service: the OTel SDK exporter, raw gRPC Export calls, OTLP/HTTP posts."""

from __future__ import annotations

import http.client
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import grpc
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import Compression, OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, set_span_in_context

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


START = int(datetime(2026, 11, 20, 12, 0, tzinfo=UTC).timestamp() * 1e9)


CALLS: list[dict[str, Any]] = [
    {
        "user": "alice",
        "plan": "free",
        "model": "gpt-4o-mini",
        "in": 1200,
        "out": 300,
        "cached": 200,
        "reasoning": 0,
    },
    {"user": "alice", "plan": "free", "model": "gpt-4o", "in": 50, "out": 900, "cached": 0, "reasoning": 120},
    {
        "user": "bob",
        "plan": "premium",
        "model": "gpt-4o",
        "in": 3000,
        "out": 10,
        "cached": 1024,
        "reasoning": 0,
    },
    {
        "user": "carol 'quoted' ✓",
        "plan": "premium",
        "model": "o3",
        "in": 777,
        "out": 5555,
        "cached": 0,
        "reasoning": 4000,
    },
    {
        "user": "dave",
        "plan": "free",
        "model": "no-such-model-xyz",
        "in": 10,
        "out": 10,
        "cached": 0,
        "reasoning": 0,
    },
]


def send_with_sdk(target: str, calls: list[dict[str, Any]], exporter: SpanExporter | None = None) -> None:
    """One `handle_request` parent span with the user and plan; its child is the LLM span.

    Sent by the SDK's gRPC exporter to ``target``, or by the ``exporter`` given.
    """
    provider = TracerProvider(
        resource=Resource.create({"service.name": "shop", "deployment.environment.name": "test"})
    )
    if exporter is None:
        exporter = OTLPSpanExporter(endpoint=target, insecure=True, compression=Compression.Gzip)
    # One Export request: attribution across requests is a later feature (parents end after children).
    provider.add_span_processor(
        BatchSpanProcessor(exporter, schedule_delay_millis=60_000, max_export_batch_size=512)
    )
    tracer = provider.get_tracer("tests")
    for i, call in enumerate(calls):
        t = START + i * 1_000_000_000
        parent = tracer.start_span(
            "handle_request",
            start_time=t,
            attributes={"user.id": call["user"], "property.Plan": call["plan"]},
        )
        child = tracer.start_span(
            f"chat {call['model']}",
            context=set_span_in_context(parent),
            kind=SpanKind.CLIENT,
            start_time=t + 1000,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": call["model"],
                "gen_ai.usage.input_tokens": call["in"],
                "gen_ai.usage.output_tokens": call["out"],
                "gen_ai.usage.cache_read.input_tokens": call["cached"],
                "gen_ai.usage.reasoning.output_tokens": call["reasoning"],
            },
        )
        child.end(end_time=t + 1000 + 250_000_000)
        parent.end(end_time=t + 300_000_000)
    assert provider.force_flush(10_000)
    provider.shutdown()


def raw_export(target: str, body: bytes, **kw: Any) -> ExportTraceServiceResponse:
    with grpc.insecure_channel(
        target, options=[("grpc.max_send_message_length", 200 * 1024 * 1024)]
    ) as channel:
        call = channel.unary_unary(
            EXPORT, request_serializer=None, response_deserializer=ExportTraceServiceResponse.FromString
        )
        return call(body, timeout=30, **kw)


PROTOBUF = "application/x-protobuf"


def post(
    url: str,
    body: bytes,
    content_type: str | None = PROTOBUF,
    headers: dict[str, str] | None = None,
    path: str = "/v1/traces",
    method: str = "POST",
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection: (status, headers, body)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        all_headers = dict(headers or {})
        if content_type is not None:
            all_headers["Content-Type"] = content_type
        conn.request(method, path, body=body, headers=all_headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()
