"""Sending the demo's spans.

``send_demo_spans`` sends the traffic ``demo_traffic.plan_traffic`` plans (a few dozen users,
one of whose agents runs away in the last hour) through the real OpenTelemetry SDK and OTLP/gRPC
exporter, as instrumented applications would, and returns what was sent as the ground truth
(``DemoData``).

The spans speak the dialects the mapper reads (``ingest/conventions.py``):

- chat turns: one GenAI semantic-conventions span (``chat gpt-4o``) per turn, carrying ``user.id``,
  ``session.id`` and ``property.plan`` / ``property.feature`` itself;
- searches: an HTTP server span with the user's identity, over an ``embeddings`` span and a
  ``chat`` span that carry none (they inherit it from their ancestor);
- agents: an ``invoke_agent`` span with the identity and the run's aggregated usage (not a model
  call, so not counted) over ``chat`` and ``execute_tool`` spans without identity;
- summaries: OpenLLMetry (Traceloop) spans with ``traceloop.association.properties.*``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, set_span_in_context

from user_metrics.cli.demo_traffic import ground_truth, plan_traffic
from user_metrics.cli.demo_world import (
    ENVIRONMENT,
    HOSTS,
    NS,
    SERVICE_NAME,
    TRACELOOP_SYSTEMS,
    Call,
    Trace,
    UserTruth,
)
from user_metrics.errors import UserMetricsError


class DemoError(UserMetricsError):
    """The demo's spans could not be sent, or were not all stored."""


@dataclass(frozen=True)
class DemoData:
    """The ground truth of one demo: what was sent, per user and in total."""

    endpoint: str
    now: datetime  # every span started before it
    since: datetime  # and at or after it (``now`` minus ``days``)
    users: tuple[UserTruth, ...]  # sorted by user id
    spiking_user: str  # the user whose usage jumps in the last hour
    spans: int
    distinct_days: int  # UTC days with a request
    send_seconds: float

    @property
    def by_user(self) -> dict[str, UserTruth]:
        return {u.user_id: u for u in self.users}

    @property
    def requests(self) -> int:
        return sum(u.requests for u in self.users)

    @property
    def errors(self) -> int:
        return sum(u.errors for u in self.users)

    @property
    def input_tokens(self) -> int:
        return sum(u.input_tokens for u in self.users)

    @property
    def output_tokens(self) -> int:
        return sum(u.output_tokens for u in self.users)


# ---- sending through the OpenTelemetry SDK -----------------------------------------------------


class _CheckedExporter(SpanExporter):
    """The OTLP exporter, counting the spans it delivered; after one failure it sends no more."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self.exported = 0
        self.failed = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            if self.failed:
                self.failed += len(spans)
                return SpanExportResult.FAILURE
            result = self._inner.export(spans)
            if result is SpanExportResult.SUCCESS:
                self.exported += len(spans)
            else:
                self.failed += len(spans)
            return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


class _Sender:
    """Turns planned traces into SDK spans: the application's own spans and the instrumentations'."""

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider
        self._tracers: dict[str, Tracer] = {}

    def tracer(self, scope: str) -> Tracer:
        if scope not in self._tracers:
            self._tracers[scope] = self._provider.get_tracer(scope)
        return self._tracers[scope]

    def send(self, trace: Trace) -> None:
        user = trace.user
        identity = {
            "user.id": user.user_id,
            "session.id": trace.session_id,
            "property.plan": user.plan,
            "property.feature": trace.kind,
        }
        t0 = trace.start_ns
        if trace.kind == "chat":
            self._genai(trace.calls[0], t0, None, identity)
        elif trace.kind == "summarize":
            self._traceloop(trace, t0)
        else:
            self._with_root(trace, t0, identity)

    def _with_root(self, trace: Trace, t0: int, identity: dict[str, str]) -> None:
        """An agent run or a search request: the identity is on the root span only."""
        failed = False
        if trace.kind == "agent":
            model = trace.calls[0].model
            attributes: dict[str, Any] = {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": "support_agent",
                "gen_ai.provider.name": model.provider,
                "gen_ai.request.model": model.name,
                # The run's usage, as agent frameworks report it: not a model call, not counted again.
                "gen_ai.usage.input_tokens": sum(c.input_tokens or 0 for c in trace.calls),
                "gen_ai.usage.output_tokens": sum(c.output_tokens or 0 for c in trace.calls),
            }
            name, kind = "invoke_agent support_agent", SpanKind.INTERNAL
        else:
            failed = len(trace.calls) < 2 or trace.calls[1].error_type is not None
            attributes = {
                "http.request.method": "POST",
                "http.route": "/api/search",
                "http.response.status_code": 502 if failed else 200,
            }
            name, kind = "POST /api/search", SpanKind.SERVER
        root = self.tracer(SERVICE_NAME).start_span(
            name, kind=kind, attributes={**attributes, **identity}, start_time=t0
        )
        context = set_span_in_context(root)
        for call in trace.calls:
            self._genai(call, t0, context, {})
        for tool in trace.tools:
            span = self.tracer(SERVICE_NAME).start_span(
                f"execute_tool {tool.name}",
                context=context,
                kind=SpanKind.INTERNAL,
                attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool.name},
                start_time=t0 + tool.offset_ns,
            )
            span.end(end_time=t0 + tool.offset_ns + tool.duration_ns)
        if failed:
            root.set_status(Status(StatusCode.ERROR))
        root.end(end_time=t0 + trace.duration_ns)

    def _genai(self, call: Call, t0: int, context: Context | None, identity: dict[str, str]) -> None:
        """A call as the GenAI semantic conventions describe it (opentelemetry-instrumentation-*)."""
        model = call.model
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": call.operation,
            "gen_ai.provider.name": model.provider,
            "gen_ai.request.model": model.name,
            "server.address": HOSTS[model.provider],
            **identity,
        }
        if call.operation == "chat":
            attributes["gen_ai.request.temperature"] = 0.7
        if call.error_type is not None:
            attributes["error.type"] = call.error_type
        else:
            attributes["gen_ai.response.model"] = model.response
            attributes["gen_ai.usage.input_tokens"] = call.input_tokens
            if call.output_tokens is not None:
                attributes["gen_ai.usage.output_tokens"] = call.output_tokens
                attributes["gen_ai.response.finish_reasons"] = (call.finish_reason,)
            if call.cache_read_tokens:
                attributes["gen_ai.usage.cache_read.input_tokens"] = call.cache_read_tokens
        scope = f"opentelemetry.instrumentation.{model.provider.replace('gcp.gemini', 'google_genai')}"
        span = self.tracer(scope).start_span(
            f"{call.operation} {model.name}",
            context=context,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=t0 + call.offset_ns,
        )
        self._finish(span, call, t0)

    def _traceloop(self, trace: Trace, t0: int) -> None:
        """A summary as OpenLLMetry sends it: a workflow span, an LLM span, association properties."""
        association = {
            "traceloop.association.properties.user_id": trace.user.user_id,
            "traceloop.association.properties.session_id": trace.session_id,
            "traceloop.association.properties.plan": trace.user.plan,
            "traceloop.association.properties.feature": trace.kind,
        }
        workflow = self.tracer("traceloop.tracer").start_span(
            "summarize_document.workflow",
            kind=SpanKind.INTERNAL,
            attributes={
                "traceloop.span.kind": "workflow",
                "traceloop.entity.name": "summarize_document",
                "traceloop.workflow.name": "summarize_document",
                **association,
            },
            start_time=t0,
        )
        (call,) = trace.calls
        model = call.model
        system, vendor = TRACELOOP_SYSTEMS[model.provider]
        attributes: dict[str, Any] = {
            "llm.request.type": "chat",
            "gen_ai.system": system,
            "gen_ai.request.model": model.name,
            **association,
        }
        if call.error_type is None:
            attributes["gen_ai.response.model"] = model.response
            attributes["gen_ai.usage.prompt_tokens"] = call.input_tokens
            attributes["gen_ai.usage.completion_tokens"] = call.output_tokens
            attributes["llm.usage.total_tokens"] = (call.input_tokens or 0) + (call.output_tokens or 0)
        span = self.tracer(f"opentelemetry.instrumentation.{vendor}").start_span(
            f"{vendor}.chat",
            context=set_span_in_context(workflow),
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=t0 + call.offset_ns,
        )
        self._finish(span, call, t0)
        workflow.end(end_time=t0 + trace.duration_ns)

    @staticmethod
    def _finish(span: Span, call: Call, t0: int) -> None:
        if call.error_type is not None:
            span.set_status(Status(StatusCode.ERROR, call.error_type))
        span.end(end_time=t0 + call.offset_ns + call.duration_ns)


def send_demo_spans(
    endpoint: str,
    *,
    users: int = 36,
    requests: int = 3000,
    days: int = 30,
    seed: int = 1,
    now: datetime | None = None,
    timeout: float = 60.0,
) -> DemoData:
    """Send ``requests`` LLM calls of ``users`` users over the ``days`` before ``now`` to an OTLP/gRPC
    endpoint (``host:port``, no TLS) through the OpenTelemetry SDK; return what was sent.

    The same seed and ``now`` plan the same traffic (span ids are random, as in any application).
    Raises DemoError when the exporter could not deliver every span within ``timeout`` seconds.
    """
    at = datetime.now(UTC) if now is None else now if now.tzinfo else now.replace(tzinfo=UTC)
    now_ns = int(at.timestamp()) * NS + at.microsecond * 1000
    traces, spiking = plan_traffic(seed, users, requests, days, now_ns)
    spans = sum(t.span_count for t in traces)
    exporter = _CheckedExporter(
        OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=min(timeout, 10.0))
    )
    resource = Resource.create({"service.name": SERVICE_NAME, "deployment.environment.name": ENVIRONMENT})
    provider = TracerProvider(resource=resource, sampler=ALWAYS_ON)  # private: the global one is untouched
    # A queue for every span: a BatchSpanProcessor drops what does not fit.
    processor = BatchSpanProcessor(
        exporter, max_queue_size=spans + 1, max_export_batch_size=min(512, spans), schedule_delay_millis=100
    )
    provider.add_span_processor(processor)
    started = time.perf_counter()
    try:
        sender = _Sender(provider)
        for trace in traces:
            sender.send(trace)
        flushed = provider.force_flush(round(timeout * 1000))
    finally:
        provider.shutdown()
    elapsed = time.perf_counter() - started
    if not flushed or exporter.failed or exporter.exported != spans:
        raise DemoError(
            f"could not send the demo to {endpoint}: {exporter.exported} of {spans} spans delivered, "
            f"{exporter.failed} failed{'' if flushed else f', not done after {timeout:.0f} s'}"
        )
    truths, distinct_days = ground_truth(traces)
    return DemoData(
        endpoint=endpoint,
        now=at,
        since=at - timedelta(days=days),
        users=truths,
        spiking_user=spiking,
        spans=spans,
        distinct_days=distinct_days,
        send_seconds=elapsed,
    )
