"""Attribution across Export requests: the user on an ancestor span reaches LLM spans sent earlier or later.

The spans come from the real OTel SDK with a SimpleSpanProcessor, so each span is one Export request,
sent when it ends: a child that ends first is exported first, as in real applications.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Service, read_requests
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Tracer, set_span_in_context
from otlp import chat, request, span
from senders import raw_export
from servers import start_server

LLM = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.usage.input_tokens": 100,
    "gen_ai.usage.output_tokens": 10,
}


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Service]:
    service = Service(tmp_path / "um.duckdb", attribution_window_seconds=2.0)
    service.start()
    yield service
    service.stop()


def tracer_for(service: Service) -> tuple[TracerProvider, Tracer]:
    provider = TracerProvider(resource=Resource.create({"service.name": "web"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=service.target, insecure=True)))
    return provider, provider.get_tracer("tests")


def stored(service: Service) -> dict[str, dict[str, Any]]:
    """The rows by the LLM span's name (stops the service)."""
    rows = service.rows()
    return {r["span_id"]: r for r in rows}


def llm(tracer: Tracer, parent: Any, **attrs: Any) -> Any:
    return tracer.start_span(
        "chat", context=set_span_in_context(parent), kind=SpanKind.CLIENT, attributes={**LLM, **attrs}
    )


def span_id(s: Any) -> str:
    return f"{s.get_span_context().span_id:016x}"


def test_child_first_then_the_parent_with_the_user(svc: Service) -> None:
    provider, tracer = tracer_for(svc)
    root = tracer.start_span(
        "GET /chat", kind=SpanKind.SERVER, attributes={"user.id": "alice", "property.plan": "pro"}
    )
    child = llm(tracer, root)
    child.end()  # exported alone: no user yet, it waits
    assert svc.app is not None and svc.app.stats.spans_stored == 0
    root.end()  # its export brings the user
    provider.shutdown()
    [row] = stored(svc).values()
    assert (row["user_id"], row["properties"], row["span_id"]) == ("alice", {"plan": "pro"}, span_id(child))


def test_parent_first_then_the_child(svc: Service) -> None:
    provider, tracer = tracer_for(svc)
    root = tracer.start_span("GET /chat", kind=SpanKind.SERVER, attributes={"user.id": "bob"})
    child = llm(tracer, root)
    root.end()
    child.end()
    provider.shutdown()
    [row] = stored(svc).values()
    assert row["user_id"] == "bob"


def test_nested_spans_nearest_ancestor_wins_and_own_values_win(svc: Service) -> None:
    provider, tracer = tracer_for(svc)
    root = tracer.start_span(
        "request", attributes={"user.id": "carol", "property.plan": "free", "property.team": "a"}
    )
    mid = tracer.start_span("agent", context=set_span_in_context(root), attributes={"property.plan": "pro"})
    inner = llm(tracer, mid, **{"property.feature": "search", "property.team": "own"})
    inner.end()
    mid.end()
    root.end()
    provider.shutdown()
    [row] = stored(svc).values()
    assert row["user_id"] == "carol"
    assert row["properties"] == {"plan": "pro", "team": "own", "feature": "search"}


def test_two_traces_interleaved(svc: Service) -> None:
    provider, tracer = tracer_for(svc)
    root_a = tracer.start_span("a", attributes={"user.id": "user-a"})
    root_b = tracer.start_span("b", attributes={"user.id": "user-b"})
    child_a, child_b = llm(tracer, root_a), llm(tracer, root_b)
    child_a.end()
    child_b.end()
    root_b.end()
    root_a.end()
    provider.shutdown()
    rows = stored(svc)
    assert rows[span_id(child_a)]["user_id"] == "user-a"
    assert rows[span_id(child_b)]["user_id"] == "user-b"


def test_a_root_that_never_arrives_is_finalised_without_a_user_and_stays_so(svc: Service) -> None:
    provider, tracer = tracer_for(svc)
    root = tracer.start_span("lost root", attributes={"user.id": "late"})
    child = llm(tracer, root)
    child.end()
    assert svc.app is not None
    deadline = time.monotonic() + 15
    while svc.app.stats.spans_stored == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert svc.app.stats.spans_stored == 1  # the 2 s window passed: stored as it is
    root.end()  # too late: a finalised request's user never changes
    child_again = child  # an exporter's retry of the child is still counted once
    provider.shutdown()
    body = request(
        [
            span(
                {**LLM},
                trace_id=child_again.get_span_context().trace_id.to_bytes(16, "big"),
                span_id=child_again.get_span_context().span_id.to_bytes(8, "big"),
                parent=root.get_span_context().span_id.to_bytes(8, "big"),
            )
        ]
    ).SerializeToString()
    raw_export(svc.target, body)
    time.sleep(0.5)
    [row] = stored(svc).values()
    assert row["user_id"] is None and row["span_id"] == span_id(child)


def test_a_span_without_a_parent_is_not_kept_waiting(svc: Service) -> None:
    raw_export(svc.target, request([span(chat(user=None))]).SerializeToString())
    assert svc.app is not None and svc.app.stats.spans_stored == 1


def test_waiting_spans_survive_sigkill(tmp_path: Path) -> None:
    """A child acknowledged while waiting is on disk: after SIGKILL and a restart the parent still finds it."""
    db = tmp_path / "um.duckdb"
    trace, parent_id = bytes(range(1, 17)), bytes(range(1, 9))
    child = span(chat(user=None), trace_id=trace, span_id=bytes(range(9, 17)), parent=parent_id)
    proc, target = start_server(db, "--attribution-window-seconds", "600")
    raw_export(target, request([child]).SerializeToString())
    proc.kill()
    proc.wait(timeout=10)
    assert read_requests(db) == []  # still waiting
    proc, target = start_server(db, "--attribution-window-seconds", "600")
    parent = span({"user.id": "dora"}, trace_id=trace, span_id=parent_id, name="GET /")
    raw_export(target, request([parent]).SerializeToString())
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    [row] = read_requests(db)
    assert row["user_id"] == "dora"


def test_a_span_with_a_user_waits_for_the_session_and_properties_of_its_parent(svc: Service) -> None:
    """openlit with disable_batch=True: the call's span carries the user alone (gen_ai.request.user)
    and arrives before the application's span with the session and the properties; it waits for
    it (its parent is not in its request, and it has no session and no property) and takes them."""
    provider, tracer = tracer_for(svc)
    root = tracer.start_span("GET /chat", attributes={"session.id": "s-9", "property.plan": "pro"})
    child = llm(tracer, root, **{"gen_ai.request.user": "gus"})
    child.end()
    assert svc.app is not None and svc.app.stats.spans_stored == 0  # it waits
    root.end()
    provider.shutdown()
    [row] = stored(svc).values()
    assert (row["user_id"], row["session_id"], row["properties"]) == ("gus", "s-9", {"plan": "pro"})


@pytest.mark.parametrize(
    "context", [{"session.id": "s-1"}, {"property.plan": "free"}], ids=["session", "property"]
)
def test_a_span_with_a_user_and_a_session_or_a_property_is_stored_at_once(
    svc: Service, context: dict[str, str]
) -> None:
    """A library that carries the application's context put it on the span: with a user and a
    session or a property it is stored when it arrives, whatever its parent brings later (the
    common case keeps its latency)."""
    provider, tracer = tracer_for(svc)
    root = tracer.start_span("GET /chat", attributes={"property.team": "late", "session.id": "late"})
    child = llm(tracer, root, **{"user.id": "hal", **context})
    child.end()
    assert svc.app is not None and svc.app.stats.spans_stored == 1
    root.end()
    provider.shutdown()
    [row] = stored(svc).values()
    assert (row["user_id"], row["session_id"]) == ("hal", context.get("session.id"))
    assert row["properties"] == ({"plan": "free"} if "property.plan" in context else {})


def test_a_span_with_a_user_is_stored_when_its_root_arrives_without_a_session(svc: Service) -> None:
    """A span with a user alone waits only until its ancestry reaches a root: then it is stored with
    what it has, long before the deadline."""
    slow = Service(svc.db.with_name("slow.duckdb"), attribution_window_seconds=600.0)
    slow.start()
    try:
        provider, tracer = tracer_for(slow)
        root = tracer.start_span("GET /chat")
        child = llm(tracer, root, **{"user.id": "ivy"})
        child.end()
        root.end()
        provider.shutdown()
        assert slow.app is not None
        deadline = time.monotonic() + 10
        while slow.app.stats.spans_stored == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        [row] = stored(slow).values()
        assert (row["user_id"], row["session_id"]) == ("ivy", None)
    finally:
        slow.stop()


@pytest.mark.parametrize("root_session", ["sess-app", None])
def test_a_waiting_conversation_id_yields_to_an_ancestors_session_and_is_kept_without_one(
    svc: Service, root_session: str | None
) -> None:
    """A span with a user and a gen_ai.conversation.id waits for its parent: the parent's session.id
    beats the conversation id; without one the conversation id is the session."""
    provider, tracer = tracer_for(svc)
    root = tracer.start_span("run", attributes={"session.id": root_session} if root_session else {})
    child = llm(tracer, root, **{"user.id": "jo", "gen_ai.conversation.id": "conv-7"})
    child.end()
    root.end()
    provider.shutdown()
    [row] = stored(svc).values()
    assert (row["user_id"], row["session_id"]) == ("jo", root_session or "conv-7")
