"""Spans from two instrumentation scopes for the coverage report's tests (API, CLI, dashboard)."""

from __future__ import annotations

import time

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from otlp import attributes, chat, span

NOW = time.time_ns() - 60 * 10**9
COMPLETE = ("acme.complete", "1.0")
PARTIAL = ("acme.partial", "0.3")


def two_scopes(service: str = "shop", start: int = NOW) -> ExportTraceServiceRequest:
    """One complete scope (user, session, a priced model) and one that lacks all three, with keys
    no convention reads and two spans that look like LLM calls but are not counted."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(attributes({"service.name": service}))
    complete = rs.scope_spans.add()
    complete.scope.name, complete.scope.version = COMPLETE
    for i in range(4):
        complete.spans.append(span(chat(f"user-{i}", **{"session.id": f"s{i}"}), start=start + i))
    partial = rs.scope_spans.add()
    partial.scope.name, partial.scope.version = PARTIAL
    for i in range(3):
        attrs = chat(None, model="mystery-model-x", **{"acme.customer": f"c{i}"})
        if i < 2:
            attrs["acme.tier"] = "gold"
        if i == 0:
            attrs["gen_ai.openai.response.system_fingerprint"] = "fp-1"
        partial.spans.append(span(attrs, start=start + i))
    # A model, and tokens under a name no convention reads: not counted, but it looks like a call.
    embed = {
        "gen_ai.request.model": "text-embedding-3-small",
        "gen_ai.system": "openai",
        "gen_ai.usage.total_tokens": 12,
    }
    partial.spans.extend(span(embed, name="embed text-embedding-3-small", start=start) for _ in range(2))
    agent = chat(None, **{"gen_ai.operation.name": "invoke_agent"})  # skipped on purpose: not listed
    partial.spans.append(span(agent, name="invoke_agent shop", start=start))
    partial.spans.append(span({"http.method": "GET", "http.route": "/"}, name="GET /", start=start))
    return req
