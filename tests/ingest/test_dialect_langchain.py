"""LangChain under OpenInference with its OpenAI instrumentation beside it: each call is stored
once, as the OpenAI instrumentation's span.

Recorded with openinference-instrumentation-langchain 0.1.80, -openai 0.1.66 and langchain-openai
1.7.4 (the capture tests/captures/langchain-openinference): `ChatOpenAI.invoke` makes an LLM span
`ChatOpenAI` (scope `openinference.instrumentation.langchain`) with the model and token counts, and
the OpenAI instrumentation an LLM span `ChatCompletion` for the same request, its sibling under the
application's span (LangChain's callbacks do not make their span current), within its time.
OpenLLMetry (traceloop-sdk 0.62.4, the capture tests/captures/langchain-traceloop) suppresses its
OpenAI instrumentation under its LangChain span: one span per call. Both copy LangChain's own run
metadata (`ls_*`, `lc_versions`) beside the application's properties: it is not a property.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ingested import stored_rows
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from otlp import T0, scoped_request, span

from user_metrics.ingest import framework_spans
from user_metrics.ingest.attributes import compile_conventions
from user_metrics.ingest.mapping import map_request

NOW = T0 + 10**12
LC_SCOPE = "openinference.instrumentation.langchain"
OAI_SCOPE = "openinference.instrumentation.openai"
MS = 1_000_000


def llm(model: str = "gpt-4o-mini", **more: Any) -> dict[str, Any]:
    return {
        "openinference.span.kind": "LLM",
        "llm.system": "openai",
        "llm.model_name": model,
        "llm.token_count.prompt": 52,
        "llm.token_count.completion": 24,
        "user.id": "user-alice",
        "session.id": "sess-alice-01",
        "metadata": '{"plan": "free", "feature": "chat"}',
    } | more


def langchain(model: str = "gpt-4o-mini") -> dict[str, Any]:
    metadata = '{"plan": "free", "feature": "chat", "ls_provider": "openai", "ls_model_type": "chat"}'
    return llm(model, **{"llm.provider": "openai", "metadata": metadata})


def export(*scoped: tuple[str, list[Any]]) -> ExportTraceServiceRequest:
    return scoped_request(*scoped)


def mapped(req: ExportTraceServiceRequest) -> list[tuple[str, str | None, int | None]]:
    out = map_request(req, compile_conventions(), now_unix_nano=NOW)
    assert not out.rejected
    return [(r.span_id, r.request_model or r.response_model, r.input_tokens) for r in out.records]


def test_the_langchain_span_beside_the_openai_span_of_its_call_is_not_a_second_call() -> None:
    """A ChatOpenAI call: LangChain's LLM span and the OpenAI instrumentation's sibling span within
    its time are one call, stored once as the OpenAI span (model, counts, no LangChain metadata)."""
    trace, root, outer, inner = os.urandom(16), os.urandom(8), os.urandom(8), os.urandom(8)
    req = export(
        ("conformance.app", [span({}, trace_id=trace, span_id=root, duration_ns=900 * MS, name="handle")]),
        (LC_SCOPE, [span(langchain(), trace_id=trace, span_id=outer, parent=root, name="ChatOpenAI")]),
        (
            OAI_SCOPE,
            [
                span(
                    llm(),
                    trace_id=trace,
                    span_id=inner,
                    parent=root,
                    start=T0 + 10 * MS,
                    duration_ns=200 * MS,
                    name="ChatCompletion",
                )
            ],
        ),
    )
    out = map_request(req, compile_conventions(), now_unix_nano=NOW)
    assert [r.span_id for r in out.records] == [inner.hex()]
    assert out.records[0].properties == {"plan": "free", "feature": "chat"}


def test_two_langchain_calls_under_one_parent_stay_two() -> None:
    """Two ChatOpenAI calls in a row under one application span, each with its OpenAI span: two
    records; each LangChain span takes only the OpenAI span within its own time."""
    trace, root = os.urandom(16), os.urandom(8)
    lc, oai = [], []
    for i, model in enumerate(("gpt-4o-mini", "gpt-4o")):
        start = T0 + i * 300 * MS
        lc.append(span(langchain(model), trace_id=trace, parent=root, start=start, name="ChatOpenAI"))
        oai.append(span(llm(model), trace_id=trace, parent=root, start=start + 5 * MS, duration_ns=200 * MS))
    records = mapped(export((LC_SCOPE, lc), (OAI_SCOPE, oai)))
    assert sorted(model for _, model, _ in records) == ["gpt-4o", "gpt-4o-mini"]
    assert {span_id for span_id, _, _ in records} == {s.span_id.hex() for s in oai}


def test_a_langchain_span_without_a_client_span_is_the_call() -> None:
    """LangChain instrumented alone (the OpenInference LangChain quick start): its LLM span is the
    call, and a sibling LangChain span of another call does not absorb it."""
    trace, root = os.urandom(16), os.urandom(8)
    first = span(langchain(), trace_id=trace, parent=root, name="ChatOpenAI")
    second = span(langchain(), trace_id=trace, parent=root, start=T0 + 10 * MS, duration_ns=10 * MS)
    assert len(mapped(export((LC_SCOPE, [first, second])))) == 2


def test_an_openai_span_outside_the_langchain_span_s_time_is_another_call() -> None:
    """A sibling OpenAI span that starts after the LangChain span ended is a call of its own."""
    trace, root = os.urandom(16), os.urandom(8)
    outer = span(langchain(), trace_id=trace, parent=root, duration_ns=100 * MS, name="ChatOpenAI")
    other = span(llm(), trace_id=trace, parent=root, start=T0 + 200 * MS, duration_ns=100 * MS)
    assert len(mapped(export((LC_SCOPE, [outer]), (OAI_SCOPE, [other])))) == 2


# OpenLLMetry's LangChain span (opentelemetry-instrumentation-langchain 0.62.4, the capture
# tests/captures/langchain-traceloop): LangChain's run metadata among the association properties.
TRACELOOP_LANGCHAIN = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
    "gen_ai.usage.input_tokens": 52,
    "gen_ai.usage.output_tokens": 24,
    "traceloop.association.properties.user_id": "user-alice",
    "traceloop.association.properties.session_id": "sess-alice-01",
    "traceloop.association.properties.plan": "free",
    "traceloop.association.properties.feature": "chat",
    "traceloop.association.properties.lc_versions": '{"langchain-core": "1.8.3", "langchain": "1.5.2"}',
    "traceloop.association.properties.ls_integration": "langchain_chat_model",
    "traceloop.association.properties.ls_model_name": "gpt-4o-mini",
    "traceloop.association.properties.ls_model_type": "chat",
    "traceloop.association.properties.ls_provider": "openai",
}


def test_langchain_run_metadata_among_traceloop_association_properties_is_not_a_property() -> None:
    """OpenLLMetry copies LangChain's own run metadata (LangSmith's `ls_*`, `lc_versions`) into the
    association properties beside the application's: only the application's are properties."""
    req = scoped_request(("opentelemetry.instrumentation.langchain", [span(TRACELOOP_LANGCHAIN)]))
    (record,) = map_request(req, compile_conventions(), now_unix_nano=NOW).records
    assert (record.user_id, record.session_id) == ("user-alice", "sess-alice-01")
    assert record.properties == {"plan": "free", "feature": "chat"}


def test_langchain_run_metadata_in_openinference_metadata_is_not_a_property() -> None:
    """LangChain instrumented alone by OpenInference: its span's JSON `metadata` holds LangChain's
    run metadata beside the application's (`using_attributes(metadata=...)`): only the latter are
    properties."""
    (record,) = map_request(
        scoped_request((LC_SCOPE, [span(langchain(), name="ChatOpenAI")])),
        compile_conventions(),
        now_unix_nano=NOW,
    ).records
    assert record.properties == {"plan": "free", "feature": "chat"}


def test_the_langchain_span_after_its_openai_span_in_another_request_is_not_a_second_call(
    tmp_path: Path,
) -> None:
    """Each span exported as it ends (a SimpleSpanProcessor, or a batch boundary): the OpenAI span
    comes first, LangChain's sibling span of the same call in a later request, then the
    application's span. One row, the OpenAI span's."""
    trace, root, outer, inner = os.urandom(16), os.urandom(8), os.urandom(8), os.urandom(8)
    app = span({}, trace_id=trace, span_id=root, duration_ns=900 * MS, name="handle")
    lc = span(langchain(), trace_id=trace, span_id=outer, parent=root, name="ChatOpenAI")
    oai = span(llm(), trace_id=trace, span_id=inner, parent=root, start=T0 + 10 * MS, duration_ns=200 * MS)
    requests = (
        scoped_request((OAI_SCOPE, [oai])),
        scoped_request((LC_SCOPE, [lc])),
        scoped_request(("app", [app])),
    )
    (row,) = stored_rows(tmp_path / "um.duckdb", *requests, clock=NOW)
    assert row["span_id"] == inner.hex()


def test_a_langchain_span_alone_in_its_request_is_the_call_once_its_parent_comes(tmp_path: Path) -> None:
    """LangChain instrumented alone, each span exported as it ends: its span waits for a client span
    of its call, and is the call when the application's span arrives without one."""
    trace, root = os.urandom(16), os.urandom(8)
    app = span({}, trace_id=trace, span_id=root, duration_ns=900 * MS, name="handle")
    lc = span(langchain(), trace_id=trace, parent=root, name="ChatOpenAI")
    requests = (scoped_request((LC_SCOPE, [lc])), scoped_request(("app", [app])))
    (row,) = stored_rows(tmp_path / "um.duckdb", *requests, clock=NOW)
    assert (row["span_id"], row["user_id"]) == (lc.span_id.hex(), "user-alice")


def test_a_framework_span_compares_itself_with_a_bounded_number_of_client_spans() -> None:
    """Thousands of client spans under one parent cost linear work: a framework span looks at the
    first MAX_CANDIDATES untaken ones (children, then siblings, in request order). Its partner among
    them is found; one behind as many others, all outside its time, is not (both are then counted)."""
    trace, root = os.urandom(16), os.urandom(8)
    app = span({}, trace_id=trace, span_id=root, duration_ns=10_000 * MS, name="handle")

    def client(start_ms: int) -> Any:
        return span(llm(), trace_id=trace, parent=root, start=T0 + start_ms * MS, duration_ns=MS)

    others = [client(5_000 + i) for i in range(framework_spans.MAX_CANDIDATES)]  # not its time
    near = client(10)
    chat = span(langchain(), trace_id=trace, parent=root, duration_ns=100 * MS, name="ChatOpenAI")
    first = map_request(
        export(("app", [app]), (LC_SCOPE, [chat]), (OAI_SCOPE, [near, *others])),
        compile_conventions(),
        now_unix_nano=NOW,
    )
    got = {r.span_id for r in first.records}
    assert chat.span_id.hex() not in got and len(got) == 1 + len(others) and first.framework_cut == 0
    behind = map_request(
        export(("app", [app]), (LC_SCOPE, [chat]), (OAI_SCOPE, [*others, near])),
        compile_conventions(),
        now_unix_nano=NOW,
    )
    assert {chat.span_id.hex(), near.span_id.hex()} <= {r.span_id for r in behind.records}
    assert behind.framework_cut == 1  # counted: user_metrics_limit_cuts_total{limit="framework_candidates"}
