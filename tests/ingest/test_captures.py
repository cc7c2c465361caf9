"""Every recorded capture maps to its ground truth (expected.jsonl), not to the mapper's own output."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import CAPTURE_NAMES, capture_expected, capture_property_keys, capture_requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from user_metrics.ingest.attributes import compile_conventions
from user_metrics.ingest.mapping import map_request
from user_metrics.store.records import RequestRecord

NOW = 2**63 - 1

# Which ground-truth role names which record field.
TOKEN_ROLES = {
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "cached_tokens": "cache_read_tokens",
    "reasoning_tokens": "reasoning_tokens",
}
SERVER_TOKENS = {
    "input_tokens": "prompt_tokens",
    "output_tokens": "completion_tokens",
    "cached_tokens": "cached_tokens",
    "reasoning_tokens": "reasoning_tokens",
}


def _map_capture(name: str) -> dict[str, RequestRecord]:
    conv = compile_conventions(capture_property_keys(name))
    records: dict[str, RequestRecord] = {}
    for body in capture_requests(name):
        mapped = map_request(ExportTraceServiceRequest.FromString(body), conv, now_unix_nano=NOW)
        assert mapped.rejected == []
        records.update({r.span_id: r for r in mapped.records})
    return records


@pytest.mark.parametrize("name", CAPTURE_NAMES)
class TestCaptures:
    def test_one_record_per_call_and_no_other(self, name: str) -> None:
        """Each of the 12 calls is one record: the LLM span named in ground truth, nothing else."""
        records = _map_capture(name)
        expected = capture_expected(name)
        assert len(expected) == 12
        assert sorted(records) == sorted(e["llm_span"]["span_id"] for e in expected)
        for e in expected:
            assert records[e["llm_span"]["span_id"]].trace_id == e["llm_span"]["trace_id"]

    def test_user_session_and_properties(self, name: str) -> None:
        """User, session and properties match what the driver attached, anonymous call included
        (whose session is the one the library made itself, if it made one: pydantic-ai's per-run
        conversation id)."""
        records = _map_capture(name)
        for e in capture_expected(name):
            record = records[e["llm_span"]["span_id"]]
            assert record.user_id == e["user_id"], e["n"]
            assert record.session_id == (e["session_id"] or e.get("library_session_id")), e["n"]
            assert record.properties == (e["properties"] or {}), e["n"]

    def test_models(self, name: str) -> None:
        """The request model is the alias asked for; the response model the dated snapshot served.
        A library that names only the model that answered (Langfuse) has no request model: the
        alias is then expected only where the answer's model is the alias (embeddings)."""
        records = _map_capture(name)
        for e in capture_expected(name):
            record = records[e["llm_span"]["span_id"]]
            asked = set(e["reported"].get("request_model", {}))
            if asked - set(e["reported"].get("response_model", {})):
                assert record.request_model == e["request_model"], e["n"]
            elif asked:
                assert (record.request_model or record.response_model) == e["request_model"], e["n"]
            else:
                assert record.request_model is None, e["n"]
            reported = e["reported"].get("response_model")
            expected_response = e["server"]["response_model"] if reported else None
            assert record.response_model == expected_response, e["n"]

    def test_tokens_are_the_servers_counts_where_the_span_reported_them(self, name: str) -> None:
        """Token counts equal the fake server's true counts for every bucket the library reported."""
        records = _map_capture(name)
        for e in capture_expected(name):
            record = records[e["llm_span"]["span_id"]]
            for role, field in TOKEN_ROLES.items():
                value = getattr(record, field)
                if role in e["reported"]:
                    truth = e["server"][SERVER_TOKENS[role]]
                    if truth is None:  # e.g. cache_read=0 on an embeddings call: the span's own value
                        (truth,) = e["reported"][role].values()
                    assert value == truth, (e["n"], role)
                elif e["server"][SERVER_TOKENS[role]] is None:
                    # Not reported by the library, or reported as 0 where the server sent none.
                    assert value in (None, 0), (e["n"], role)
                else:
                    assert value is None, (e["n"], role)

    def test_status_errors_and_streams(self, name: str) -> None:
        """HTTP 500/429 calls are errors; the stream flag matches the call where it was reported."""
        records = _map_capture(name)
        for e in capture_expected(name):
            record = records[e["llm_span"]["span_id"]]
            assert record.status == ("error" if e["error"] else "ok"), e["n"]
            if e["error"]:
                assert record.error_type, e["n"]
            if "stream" in e["reported"]:
                assert record.streaming is e["server"]["stream"], e["n"]
            assert record.provider == e.get("provider", "openai")
            assert record.operation == ("embeddings" if e["kind"] == "embed" else "chat")

    def test_stream_without_usage_is_a_request_with_no_tokens(self, name: str) -> None:
        """Call 12 (no include_usage) is still a request, with no token counts."""
        records = _map_capture(name)
        call: dict[str, Any] | None = next(
            (e for e in capture_expected(name) if e["kind"] == "stream_nousage"), None
        )
        if call is None or call["usage_sent_to_client"]:
            # Anthropic streams always report usage; pydantic-ai always asks for it.
            pytest.skip("no stream without usage in this capture")
        record = records[call["llm_span"]["span_id"]]
        assert record.input_tokens is None and record.output_tokens is None
        assert record.user_id == "user-carol"
