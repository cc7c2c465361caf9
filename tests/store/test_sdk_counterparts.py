"""anthropic's own SDK span and an instrumentation's span of the same call, in separate Export
requests (a SimpleSpanProcessor, e.g. traceloop's `disable_batch=True`, or a batch boundary): the
call is counted once in either order, across a restart too, and an SDK span whose counterpart
never comes is the call once its deadline passes.

The shapes are those recorded with anthropic 2.14.0 (tests/ingest/test_dialect_anthropic_sdk.py):
OpenInference's span is the SDK span's parent; OpenLLMetry's span and a stream's are its sibling
under the application's span, for the same model.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Service, read_requests
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, set_span_in_context
from otlp import attributes, span
from senders import raw_export
from servers import start_server

SDK_SCOPE = "com.anthropic.sdk.python"
MODEL = "claude-3-5-haiku-latest"
WINDOW_S = 2.0

SDK: dict[str, Any] = {  # anthropic's own span (anthropic.messages.create)
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "anthropic",
    "gen_ai.request.model": MODEL,
    "gen_ai.response.model": "claude-3-5-haiku-20241022",
    "gen_ai.usage.input_tokens": 12,
    "gen_ai.usage.output_tokens": 30,
}
OPENLLMETRY: dict[str, Any] = {  # OpenLLMetry's anthropic.chat span of the same call
    "gen_ai.system": "Anthropic",
    "llm.request.type": "chat",
    "gen_ai.request.model": MODEL,
    "gen_ai.usage.prompt_tokens": 12,
    "gen_ai.usage.completion_tokens": 30,
    "traceloop.association.properties.user_id": "user-erin",
}
STREAM = {"gen_ai.request.stream": True}


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Service]:
    service = Service(tmp_path / "um.duckdb", attribution_window_seconds=WINDOW_S)
    service.start()
    yield service
    service.stop()


def one(scope: str, s: Any) -> bytes:
    """One span alone in an Export request, under its scope, as a SimpleSpanProcessor sends it."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(attributes({"service.name": "shop"}))
    ss = rs.scope_spans.add()
    ss.scope.name = scope
    ss.spans.append(s)
    return req.SerializeToString()


class Call:
    """The spans of one Anthropic call: the application's, the instrumentation's, anthropic's own."""

    def __init__(
        self, *, child: bool, stream: bool = False, trace: bytes | None = None, app: bytes | None = None
    ):
        self.trace = trace or os.urandom(16)
        self.app_id = app or os.urandom(8)
        self.app = span({"session.id": "sess-1"}, trace_id=self.trace, span_id=self.app_id, name="handle")
        instrumentation = {**OPENLLMETRY, **(STREAM if stream else {})}
        self.call = span(instrumentation, trace_id=self.trace, parent=self.app_id, name="anthropic.chat")
        sdk = {**SDK, **(STREAM if stream else {})}
        above = self.call.span_id if child else self.app_id
        self.sdk = span(sdk, trace_id=self.trace, parent=above, name="anthropic.messages.create")

    def send(self, target: str, *which: str) -> None:
        for name in which:
            raw_export(target, one(SDK_SCOPE if name == "sdk" else "app", getattr(self, name)))


def settled(svc: Service, rows: int, timeout: float = 15.0) -> None:
    """Wait until `rows` rows are stored (what waits is decided after the commit that brings it)."""
    assert svc.app is not None
    deadline = time.monotonic() + timeout
    while svc.app.stats.spans_stored < rows and time.monotonic() < deadline:
        time.sleep(0.05)


ORDERS = [("sdk", "call", "app"), ("call", "sdk", "app"), ("app", "sdk", "call"), ("app", "call", "sdk")]


@pytest.mark.parametrize("child", [True, False], ids=["child", "sibling"])
@pytest.mark.parametrize("order", ORDERS, ids="-".join)
def test_the_call_is_counted_once_whatever_the_order(
    svc: Service, child: bool, order: tuple[str, ...]
) -> None:
    """Each span in its own Export request, in any order: one row, the instrumentation's, with its
    user and the application's session (the SDK span's parent is the instrumentation's span, or
    the application's span)."""
    call = Call(child=child)
    call.send(svc.target, *order)
    settled(svc, 1)
    time.sleep(0.3)
    rows = svc.rows()
    assert [(r["span_id"], r["user_id"], r["session_id"]) for r in rows] == [
        (call.call.span_id.hex(), "user-erin", "sess-1")
    ]


@pytest.mark.parametrize("order", [("sdk", "call"), ("call", "sdk")], ids="-".join)
def test_a_stream_is_counted_once_in_either_order(svc: Service, order: tuple[str, ...]) -> None:
    """A stream: the SDK span is the instrumentation span's sibling and may end after the
    application's span (a handler that returns the stream): one row in either order."""
    call = Call(child=False, stream=True)
    call.send(svc.target, "app", *order)
    settled(svc, 1)
    time.sleep(0.3)
    assert [r["span_id"] for r in svc.rows()] == [call.call.span_id.hex()]


def test_two_streams_under_one_parent_stay_two_calls(svc: Service) -> None:
    """Each instrumentation span records at most one SDK span across requests too: two rows."""
    first = Call(child=False, stream=True)
    second = Call(child=False, stream=True, trace=first.trace, app=first.app_id)
    first.send(svc.target, "sdk")
    second.send(svc.target, "sdk", "call")
    first.send(svc.target, "call", "app")
    settled(svc, 2)
    time.sleep(0.3)
    assert sorted(r["span_id"] for r in svc.rows()) == sorted(
        [first.call.span_id.hex(), second.call.span_id.hex()]
    )


def test_an_sdk_span_sent_again_after_it_was_paired_is_not_counted(svc: Service) -> None:
    """An exporter's retry of an SDK span already paired with its call adds nothing."""
    call = Call(child=True)
    call.send(svc.target, "sdk", "call", "app")
    settled(svc, 1)
    call.send(svc.target, "sdk")
    time.sleep(WINDOW_S + 2.5)  # past its deadline too
    assert [r["span_id"] for r in svc.rows()] == [call.call.span_id.hex()]


def test_an_sdk_span_without_an_instrumentation_is_the_call_once_its_parent_arrives(svc: Service) -> None:
    """anthropic alone (no instrumentation), a call that did not stream: when the application's span
    arrives, no instrumentation span can follow; the SDK span is stored at once, with the user."""
    call = Call(child=False)
    call.app = span({"user.id": "user-fay"}, trace_id=call.trace, span_id=call.app_id, name="handle")
    call.send(svc.target, "sdk")
    assert svc.app is not None and svc.app.stats.spans_stored == 0  # it waits
    call.send(svc.target, "app")
    started = time.monotonic()
    settled(svc, 1)
    assert time.monotonic() - started < WINDOW_S  # not the deadline
    [row] = svc.rows()
    assert (row["span_id"], row["user_id"], row["input_tokens"]) == (call.sdk.span_id.hex(), "user-fay", 12)


def test_a_stream_without_an_instrumentation_is_the_call_at_its_deadline(svc: Service) -> None:
    """A stream's SDK span with no instrumentation span: it waits for one until its deadline
    (attribution_window_seconds), then it is the call."""
    call = Call(child=False, stream=True)
    call.send(svc.target, "app", "sdk")
    time.sleep(0.5)
    assert svc.app is not None and svc.app.stats.spans_stored == 0
    settled(svc, 1, timeout=WINDOW_S + 10)
    [row] = svc.rows()
    assert (row["span_id"], row["session_id"], row["streaming"]) == (call.sdk.span_id.hex(), "sess-1", True)


@pytest.mark.parametrize("first", ["sdk", "call"])
def test_a_restart_between_the_two_exports_neither_loses_nor_doubles_the_call(
    tmp_path: Path, first: str
) -> None:
    """The first span's Export is acknowledged, the service is killed (SIGKILL) and started again,
    then the other span arrives: one row, the instrumentation's."""
    db = tmp_path / "um.duckdb"
    call = Call(child=True)
    proc, target = start_server(db, "--attribution-window-seconds", "600")
    call.send(target, first)
    proc.kill()
    proc.wait(timeout=10)
    proc, target = start_server(db, "--attribution-window-seconds", "600")
    call.send(target, "sdk" if first == "call" else "call", "app")
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert [(r["span_id"], r["user_id"]) for r in read_requests(db)] == [
        (call.call.span_id.hex(), "user-erin")
    ]


def test_real_spans_from_a_simple_span_processor(svc: Service) -> None:
    """The OTel SDK with a SimpleSpanProcessor (traceloop's disable_batch=True): the SDK's span ends
    first, then OpenLLMetry's sibling, then the application's; each is an Export. One row."""
    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=svc.target, insecure=True)))
    tracer: Callable[[str], Any] = provider.get_tracer
    app = tracer("app").start_span("handle", kind=SpanKind.SERVER, attributes={"session.id": "sess-2"})
    inside = set_span_in_context(app)
    instrumented = tracer("opentelemetry.instrumentation.anthropic").start_span(
        "anthropic.chat", context=inside, kind=SpanKind.CLIENT, attributes=OPENLLMETRY
    )
    own = tracer(SDK_SCOPE).start_span("anthropic.messages.create", context=inside, attributes=SDK)
    own.end()
    instrumented.end()
    app.end()
    provider.shutdown()
    settled(svc, 1)
    time.sleep(0.3)
    rows = svc.rows()
    assert [(r["span_id"], r["session_id"]) for r in rows] == [
        (f"{instrumented.get_span_context().span_id:016x}", "sess-2")
    ]
