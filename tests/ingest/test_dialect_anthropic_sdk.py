"""The anthropic SDK's own spans (anthropic 2.14+, scope `com.anthropic.sdk.python`) beside an
instrumentation's: each call is stored once, as the instrumentation's span.

Recorded with anthropic 2.14.0 and openinference-instrumentation-anthropic 3.1.0 (the capture
tests/captures/openinference-anthropic): once a tracer provider is set, the SDK makes a CLIENT span
`anthropic.messages.create` with full `gen_ai.*` usage for every call. Under OpenInference's span
it is its child; for a stream it is its sibling under the application's span.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ingested import stored_rows
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from otlp import T0, scoped_request, span

from user_metrics.ingest.attributes import compile_conventions
from user_metrics.ingest.mapping import map_request

NOW = T0 + 10**12
SDK_SCOPE = "com.anthropic.sdk.python"
OI_SCOPE = "openinference.instrumentation.anthropic"
MODEL = "claude-3-5-haiku-latest"


def sdk_attrs(model: str = MODEL, tokens: bool = True, **more: Any) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": model,
        "server.address": "127.0.0.1",
    }
    if tokens:
        attrs |= {
            "gen_ai.response.model": "claude-3-5-haiku-20241022",
            "gen_ai.usage.input_tokens": 12,
            "gen_ai.usage.output_tokens": 300,
            "gen_ai.usage.cache_read.input_tokens": 5000,
        }
    return attrs | more


def oi_attrs(model: str = MODEL, tokens: bool = True) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "openinference.span.kind": "LLM",
        "llm.provider": "anthropic",
        "llm.system": "anthropic",
        "llm.model_name": model,
        "llm.request.model_name": model,
        "user.id": "user-carol",
        "session.id": "sess-carol-01",
        "metadata": '{"plan": "premium", "feature": "chat"}',
    }
    if tokens:
        attrs |= {"llm.token_count.prompt": 5012, "llm.token_count.completion": 300}
    return attrs


def export(*scoped: tuple[str, list[Any]]) -> ExportTraceServiceRequest:
    """One request; each (scope name, spans) is a scope of its own, as the SDKs export them."""
    return scoped_request(*scoped)


def rows(tmp_path: Path, *requests: ExportTraceServiceRequest) -> list[dict[str, Any]]:
    return stored_rows(tmp_path / "um.duckdb", *requests, clock=NOW)


def ids() -> tuple[bytes, bytes, bytes]:
    return os.urandom(16), os.urandom(8), os.urandom(8)


def test_the_sdk_span_under_the_instrumentations_is_not_a_second_call(tmp_path: Path) -> None:
    """handle -> OpenInference messages.create -> anthropic.messages.create: one row, OpenInference's."""
    trace, handle, call = ids()
    app = span({}, trace_id=trace, span_id=handle, name="handle")
    oi = span(oi_attrs(), trace_id=trace, span_id=call, parent=handle, name="messages.create")
    sdk = span(sdk_attrs(), trace_id=trace, parent=call, name="anthropic.messages.create")
    (row,) = rows(tmp_path, export(("app", [app]), (OI_SCOPE, [oi]), (SDK_SCOPE, [sdk])))
    assert row["span_id"] == call.hex()
    assert (row["user_id"], row["request_model"], row["input_tokens"]) == ("user-carol", MODEL, 5012)


def test_a_streams_sdk_span_beside_the_instrumentations_is_not_a_second_call(tmp_path: Path) -> None:
    """A stream's SDK span is a sibling of OpenInference's under the application's span: one row."""
    trace, handle, call = ids()
    app = span({}, trace_id=trace, span_id=handle, name="handle")
    oi = span(oi_attrs(), trace_id=trace, span_id=call, parent=handle, name="messages.stream")
    sdk = span(sdk_attrs(**{"gen_ai.request.stream": True}), trace_id=trace, parent=handle)
    (row,) = rows(tmp_path, export(("app", [app]), (OI_SCOPE, [oi]), (SDK_SCOPE, [sdk])))
    assert row["span_id"] == call.hex()


def test_the_sdk_spans_counts_and_stream_flag_win_over_the_instrumentations(tmp_path: Path) -> None:
    """OpenLLMetry's Anthropic instrumentation counts a stream's output one too high and records no
    stream flag; the SDK's own span of the call (its sibling, recorded with traceloop-sdk 0.62.4 and
    anthropic 2.14.0) has the provider's counts and the flag: the row has those, and the
    instrumentation's user and span. Where the SDK's span has no counts, the instrumentation's stay."""
    trace, handle, call = ids()
    app = span({"user.id": "u"}, trace_id=trace, span_id=handle, name="handle")
    openllmetry = {
        "gen_ai.system": "anthropic",
        "llm.request.type": "chat",
        "gen_ai.request.model": MODEL,
        "gen_ai.usage.input_tokens": 43,
        "gen_ai.usage.output_tokens": 44,
        "gen_ai.usage.cache_read.input_tokens": 14,
    }
    chat = span(openllmetry, trace_id=trace, span_id=call, parent=handle, name="anthropic.chat")
    sdk = span(
        sdk_attrs(
            **{
                "gen_ai.request.stream": True,
                "gen_ai.usage.input_tokens": 43,
                "gen_ai.usage.output_tokens": 43,
                "gen_ai.usage.cache_read.input_tokens": 14,
            }
        ),
        trace_id=trace,
        parent=handle,
    )
    (row,) = rows(
        tmp_path,
        export(("app", [app]), ("opentelemetry.instrumentation.anthropic", [chat]), (SDK_SCOPE, [sdk])),
    )
    assert (row["span_id"], row["user_id"]) == (call.hex(), "u")
    assert (row["input_tokens"], row["output_tokens"], row["cache_read_tokens"]) == (43, 43, 14)
    assert row["streaming"] is True
    trace, handle, call = ids()
    app = span({"user.id": "u"}, trace_id=trace, span_id=handle, name="handle")
    chat = span(openllmetry, trace_id=trace, span_id=call, parent=handle, name="anthropic.chat")
    bare = span(sdk_attrs(tokens=False), trace_id=trace, parent=call)
    (tmp_path / "2").mkdir()
    (row,) = rows(
        tmp_path / "2",
        export(("app", [app]), ("opentelemetry.instrumentation.anthropic", [chat]), (SDK_SCOPE, [bare])),
    )
    assert (row["output_tokens"], row["streaming"]) == (44, None)


def test_two_streams_under_one_parent_stay_two_calls(tmp_path: Path) -> None:
    """Each instrumentation span takes at most one SDK span: two streams, two rows."""
    trace, handle, _ = ids()
    app = span({}, trace_id=trace, span_id=handle, name="handle")
    ois = [span(oi_attrs(), trace_id=trace, parent=handle, name="messages.stream") for _ in range(2)]
    sdks = [span(sdk_attrs(), trace_id=trace, parent=handle) for _ in range(2)]
    got = rows(tmp_path, export(("app", [app]), (OI_SCOPE, ois), (SDK_SCOPE, sdks)))
    assert sorted(r["span_id"] for r in got) == sorted(s.span_id.hex() for s in ois)


def test_the_sdk_span_alone_is_the_call(tmp_path: Path) -> None:
    """Without an instrumentation the SDK's own span is the only record of the call: it counts."""
    trace, handle, _ = ids()
    app = span({"user.id": "u"}, trace_id=trace, span_id=handle, name="handle")
    sdk = span(sdk_attrs(), trace_id=trace, parent=handle)
    (row,) = rows(tmp_path, export(("app", [app]), (SDK_SCOPE, [sdk])))
    assert (row["span_id"], row["user_id"], row["cache_read_tokens"]) == (sdk.span_id.hex(), "u", 5000)


def test_a_failed_call_is_one_error_without_a_response_model(tmp_path: Path) -> None:
    """A 500: OpenInference's span has no tokens and the SDK's child failed too; one error row, the
    instrumentation's, and llm.model_name (the model asked for, no response came) is no response model."""
    trace, handle, call = ids()
    app = span({}, trace_id=trace, span_id=handle, name="handle")
    oi = span(oi_attrs(tokens=False), trace_id=trace, span_id=call, parent=handle, error=True)
    sdk = span(sdk_attrs(tokens=False), trace_id=trace, parent=call, error=True)
    (row,) = rows(tmp_path, export(("app", [app]), (OI_SCOPE, [oi]), (SDK_SCOPE, [sdk])))
    assert (row["span_id"], row["status"]) == (call.hex(), "error")
    assert (row["request_model"], row["response_model"]) == (MODEL, None)


def test_under_pydantic_ai_the_sdk_span_is_not_a_second_call(tmp_path: Path) -> None:
    """pydantic-ai's `chat` span (GenAI attributes and usage) with the SDK's span below it: one row."""
    trace, run, call = ids()
    agent = span({"gen_ai.operation.name": "invoke_agent", "session.id": "s"}, trace_id=trace, span_id=run)
    chat = span(
        sdk_attrs(**{"gen_ai.system": "anthropic"}), trace_id=trace, span_id=call, parent=run, name="chat"
    )
    sdk = span(sdk_attrs(), trace_id=trace, parent=call, name="anthropic.messages.create")
    (row,) = rows(tmp_path, export(("pydantic-ai", [agent, chat]), (SDK_SCOPE, [sdk])))
    assert (row["span_id"], row["session_id"]) == (call.hex(), "s")


def mapped(*requests: ExportTraceServiceRequest) -> list[Any]:
    """(span id, wait) of each record, request by request (the mapper alone)."""
    out = []
    for req in requests:
        m = map_request(req, compile_conventions(), now_unix_nano=NOW)
        out += [(r.span_id, w) for r, w in zip(m.records, m.waits, strict=True)]
    return out


def test_an_sdk_span_whose_instrumentation_span_may_be_in_another_request_waits_for_it() -> None:
    """Alone in its request (a SimpleSpanProcessor), the SDK span waits for its counterpart; so does
    a stream's with its parent beside it (a stream may outlive its parent). A call that did not
    stream, with its parent in the request, and a root are calls at once."""
    trace, handle, call = ids()
    alone = span(sdk_attrs(), trace_id=trace, parent=call)
    stream = span(sdk_attrs(**{"gen_ai.request.stream": True}), trace_id=trace, parent=handle)
    app = span({"user.id": "u"}, trace_id=trace, span_id=handle, name="handle")
    beside = span(sdk_attrs(), trace_id=trace, parent=handle)
    root = span(sdk_attrs())
    got = dict(
        mapped(export((SDK_SCOPE, [alone])), export(("app", [app]), (SDK_SCOPE, [stream, beside, root])))
    )
    assert got[alone.span_id.hex()] is not None and got[alone.span_id.hex()].counterpart
    assert got[stream.span_id.hex()] is not None and got[stream.span_id.hex()].counterpart
    assert got[beside.span_id.hex()] is None and got[root.span_id.hex()] is None


def test_the_facts_of_llm_spans_name_calls_sdk_spans_and_what_absorbed_them() -> None:
    """Later requests pair SDK spans from these facts: the instrumentation's span is a 'call', the
    SDK span paired in its request names it, both with the model in lower case."""
    trace, handle, call = ids()
    oi = span(oi_attrs(model="Claude-X"), trace_id=trace, span_id=call, parent=handle)
    sdk = span(sdk_attrs(model="Claude-X"), trace_id=trace, parent=call)
    m = map_request(export((OI_SCOPE, [oi]), (SDK_SCOPE, [sdk])), compile_conventions(), now_unix_nano=NOW)
    facts = {f.span_id: (f.llm, f.model, f.absorbed_by) for f in m.facts}
    assert facts == {
        call.hex(): ("call", "claude-x", None),
        sdk.span_id.hex(): ("sdk", "claude-x", call.hex()),
    }
