"""Every recorded capture maps to its ground truth (expected.jsonl), not to the mapper's own output.

What a library did not report is not asked of the mapper, and nothing else is allowed either: a call
the library exported no span for (``llm_span`` null, e.g. JavaScript instrumentations that make no
span for a failed call) has no record; a fact the library did not send, or sent wrong (a token count
it estimated for a stream, the model asked for where the served one was), is absent or exactly the
library's own value under the key it uses for that fact where it reported it right.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from conftest import CAPTURE_NAMES, capture_expected, capture_requests, capture_settings, capture_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from user_metrics.ingest.attributes import compile_conventions
from user_metrics.ingest.mapping import map_request
from user_metrics.settings import Settings
from user_metrics.store.records import RequestRecord

NOW = 2**63 - 1

# Which ground-truth role names which record field.
TOKEN_ROLES = {
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "cached_tokens": "cache_read_tokens",
    "reasoning_tokens": "reasoning_tokens",
}
# The conformance suite's field (compare.FIELDS) of each ground-truth role.
COMPARE_FIELDS = {
    "input_tokens": "input",
    "output_tokens": "output",
    "cached_tokens": "cached",
    "reasoning_tokens": "reasoning",
}
SERVER_TOKENS = {
    "input_tokens": "prompt_tokens",
    "output_tokens": "completion_tokens",
    "cached_tokens": "cached_tokens",
    "reasoning_tokens": "reasoning_tokens",
}


def _map_capture(name: str) -> dict[str, RequestRecord]:
    """The capture mapped with the [conventions] settings its service ran with (settings.json)."""
    settings = replace(Settings(), **capture_settings(name))
    conv = compile_conventions(
        settings.property_keys,
        user_id_keys=settings.user_id_keys,
        session_id_keys=settings.session_id_keys,
        property_prefixes=settings.property_prefixes,
    )
    records: dict[str, RequestRecord] = {}
    for body in capture_requests(name):
        mapped = map_request(ExportTraceServiceRequest.FromString(body), conv, now_unix_nano=NOW)
        assert mapped.rejected == []
        records.update({r.span_id: r for r in mapped.records})
    return records


def _spanned(expected: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The calls the library exported a span for."""
    return [e for e in expected if e["llm_span"] is not None]


def _own_keys(expected: list[dict[str, Any]], role: str) -> set[str]:
    """The keys the library reported ``role`` under, on the call's own span, where the value was
    the true one; for a model, only where that tells the request model from the response model
    (aliases differ from the served snapshots except for embeddings)."""
    return {
        key
        for e in expected
        if not role.endswith("_model") or e["server"]["response_model"] != e["request_model"]
        for key in e["reported"].get(role, {})
        if " @" not in key
    }


def _library_values(span: dict[str, Any], keys: set[str]) -> set[Any]:
    return {span["attributes"][k] for k in keys if k in span["attributes"]}


def _gaps(expected: dict[str, Any]) -> set[str]:
    """The fields of one call whose true value the library itself did not send (the conformance
    suite's verdict, recorded with the capture): what it stored instead is not checked."""
    return set(expected.get("library_gaps", ()))


@pytest.mark.parametrize("name", CAPTURE_NAMES)
class TestCaptures:
    def test_one_record_per_call_and_no_other(self, name: str) -> None:
        """Each of the 12 calls is at most one record: the LLM span named in ground truth, nothing
        else; a call the library exported no span for has none (and no span of it names the call)."""
        records = _map_capture(name)
        expected = capture_expected(name)
        assert len(expected) == 12
        assert sorted(records) == sorted(e["llm_span"]["span_id"] for e in _spanned(expected))
        for e in _spanned(expected):
            assert records[e["llm_span"]["span_id"]].trace_id == e["llm_span"]["trace_id"]
        spans = capture_spans(name).values()
        for e in expected:
            if e["llm_span"] is None:
                tag = f"[call {e['n']}]"
                assert not [s["name"] for s in spans if tag in str(s["attributes"])], e["n"]

    def test_user_session_and_properties(self, name: str) -> None:
        """User, session and properties match what the driver attached, anonymous call included
        (whose session is the one the library made itself, if it made one: pydantic-ai's per-run
        conversation id)."""
        records = _map_capture(name)
        for e in _spanned(capture_expected(name)):
            record, gaps = records[e["llm_span"]["span_id"]], _gaps(e)
            assert "user" in gaps or record.user_id == e["user_id"], e["n"]
            assert "session" in gaps or record.session_id == (
                e["session_id"] or e.get("library_session_id")
            ), e["n"]
            assert "props" in gaps or record.properties == (e["properties"] or {}), e["n"]

    def test_models(self, name: str) -> None:
        """The request model is the alias asked for where the library sent it under a key it keeps
        for the request; the response model is the dated snapshot served where the library reported
        it under a key it keeps for the response, else none, that snapshot, or what the library's own
        response-model key holds (some write the alias there for a stream); a library with one model
        key for both may leave the request model empty."""
        records = _map_capture(name)
        expected = capture_expected(name)
        spans = capture_spans(name)
        response_keys = _own_keys(expected, "response_model")
        request_keys = _own_keys(expected, "request_model") - response_keys
        for e in _spanned(expected):
            record = records[e["llm_span"]["span_id"]]
            if "model" in _gaps(e):
                continue
            if set(e["reported"].get("request_model", {})) & request_keys:
                assert record.request_model == e["request_model"], e["n"]
            else:
                assert record.request_model in (None, e["request_model"]), e["n"]
            if set(e["reported"].get("response_model", {})) & response_keys:
                assert record.response_model == e["server"]["response_model"], e["n"]
            else:
                span = spans[e["llm_span"]["span_id"]]
                allowed = {None, e["server"]["response_model"], *_library_values(span, response_keys)}
                assert record.response_model in allowed, e["n"]

    def test_tokens_are_the_servers_counts_where_the_span_reported_them(self, name: str) -> None:
        """Token counts equal the fake server's true counts for every bucket the library reported;
        a bucket it did not report is empty, the true count (derived), or the library's own number
        under its key for that bucket (an estimate: OpenLLMetry JS counts a stream's tokens itself)."""
        records = _map_capture(name)
        expected = capture_expected(name)
        spans = capture_spans(name)
        for e in _spanned(expected):
            record = records[e["llm_span"]["span_id"]]
            span = spans[e["llm_span"]["span_id"]]
            for role, field in TOKEN_ROLES.items():
                if COMPARE_FIELDS[role] in _gaps(e):
                    continue
                value = getattr(record, field)
                truth = e["server"][SERVER_TOKENS[role]]
                if role in e["reported"]:
                    if truth is None:  # e.g. cache_read=0 on an embeddings call: the span's own value
                        (truth,) = set(e["reported"][role].values())
                    assert value == truth, (e["n"], role)
                    continue
                allowed = {None, *_library_values(span, _own_keys(expected, role))}
                if truth is None:
                    allowed.add(0)  # reported as 0 where the server sent none
                elif e["usage_sent_to_client"] and not e["error"]:
                    allowed.add(truth)
                else:
                    allowed.add(0)  # 0 in a library's own estimate where the client saw no usage (LiteLLM)
                assert value in allowed, (e["n"], role, value)

    def test_status_errors_and_streams(self, name: str) -> None:
        """HTTP 500/429 calls are errors; the stream flag matches the call where it was reported and
        is never the wrong one."""
        records = _map_capture(name)
        for e in _spanned(capture_expected(name)):
            record = records[e["llm_span"]["span_id"]]
            assert record.status == ("error" if e["error"] else "ok"), e["n"]
            if e["error"]:
                assert record.error_type, e["n"]
            if "stream" in e["reported"]:
                assert record.streaming is e["server"]["stream"], e["n"]
            else:  # e.g. told by the AI SDK's operation (ai.streamText.doStream), or not at all
                assert record.streaming in (None, e["server"]["stream"]), e["n"]
            assert record.provider == e.get("provider", "openai")
            assert record.operation == ("embeddings" if e["kind"] == "embed" else "chat")

    def test_stream_without_usage_is_a_request_with_no_tokens(self, name: str) -> None:
        """Call 12 (no include_usage) is still a request, with no token counts but the library's own
        under its token keys (OpenLLMetry JS estimates a stream's, as do LiteLLM and OpenLIT; the AI
        SDK asks for usage itself)."""
        records = _map_capture(name)
        expected = capture_expected(name)
        call: dict[str, Any] | None = next((e for e in expected if e["kind"] == "stream_nousage"), None)
        if call is None:
            pytest.skip("no stream without usage in this capture (Anthropic streams always report usage)")
        record = records[call["llm_span"]["span_id"]]
        span = capture_spans(name)[call["llm_span"]["span_id"]]
        if not {"input", "output"} & _gaps(call):
            assert record.input_tokens in {None, *_library_values(span, _own_keys(expected, "input_tokens"))}
            assert record.output_tokens in {
                None,
                *_library_values(span, _own_keys(expected, "output_tokens")),
            }
        assert record.user_id == "user-carol"
