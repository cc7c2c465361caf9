"""Langfuse SDK v5 (OTel-based) with its OpenAI integration, in the shape langfuse 5.0.4 exports.

Recorded with langfuse 5.0.4, openai 3.57.0, opentelemetry-sdk 1.45.2: `propagate_attributes(user_id,
session_id, metadata)` around `langfuse.openai.OpenAI` calls to a local fake OpenAI server. Every
span, scope `langfuse-sdk`, carries `user.id`/`session.id` and `langfuse.trace.metadata.*` with
JSON-encoded values; the generation's model name is the response's (dated) model after a
response, the requested one after a failure; no provider attribute at all.
"""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

from ingested import stored_rows
from otlp import T0, request, span

NOW = T0 + 10**12
TRACE = os.urandom(16)
ROOT = os.urandom(8)

IDENTITY = {
    "user.id": "user-alice",
    "session.id": "sess-alice-01",
    "langfuse.trace.metadata.plan": '"free"',
    "langfuse.trace.metadata.feature": '"chat"',
}
PARAMS = json.dumps(
    {"temperature": 1, "max_tokens": "Infinity", "top_p": 1, "frequency_penalty": 0, "presence_penalty": 0}
)
USAGE = json.dumps(
    {
        "completion_tokens": 32,
        "prompt_tokens": 31,
        "total_tokens": 63,
        "completion_tokens_details": {
            "accepted_prediction_tokens": 0,
            "audio_tokens": 0,
            "reasoning_tokens": 7,
            "rejected_prediction_tokens": 0,
        },
        "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": 11},
    }
)


def generation(name: str = "OpenAI-generation", error: bool = False, **attrs: Any) -> Any:
    base = {
        **IDENTITY,
        "langfuse.observation.model.parameters": PARAMS,
        "langfuse.observation.type": "generation",
    }
    return span({**base, **attrs}, trace_id=TRACE, parent=ROOT, name=name, error=error)


HANDLER = span(
    {"langfuse.internal.is_app_root": True, "langfuse.observation.type": "span", **IDENTITY},
    trace_id=TRACE,
    span_id=ROOT,
    name="handle_request",
)
STREAM = generation(
    **{
        "langfuse.observation.model.name": "gpt-4o-mini-2024-07-18",
        "langfuse.observation.usage_details": USAGE,
        "langfuse.observation.completion_start_time": '"2026-11-30T09:00:13.177962Z"',
        "langfuse.observation.metadata.finish_reason": '"stop"',
    }
)
EMBEDDING = generation(
    "OpenAI-embedding",
    **{
        "langfuse.observation.model.parameters": "{}",
        "langfuse.observation.type": "embedding",
        "langfuse.observation.model.name": "text-embedding-3-small",
        "langfuse.observation.usage_details": '{"input": 37}',
    },
)
FAILED = generation(
    error=True,
    **{
        "langfuse.observation.level": "ERROR",
        "langfuse.observation.status_message": "Error code: 500 - boom",
        "langfuse.observation.model.name": "gpt-4o",
        "langfuse.observation.cost_details": '{"input": 0, "output": 0, "total": 0}',
    },
)


def rows(tmp_path: Path) -> dict[str, dict[str, Any]]:
    got = stored_rows(tmp_path / "um.duckdb", request([HANDLER, STREAM, EMBEDDING, FAILED]), clock=NOW)
    return {r["span_id"]: r for r in got}


def test_each_generation_once_and_not_the_app_span(tmp_path: Path) -> None:
    """Three generations are three requests; the application's Langfuse span is not a request."""
    got = rows(tmp_path)
    assert sorted(got) == sorted(s.span_id.hex() for s in (STREAM, EMBEDDING, FAILED))


def test_json_encoded_metadata_is_stored_decoded_and_library_metadata_is_not_a_property(
    tmp_path: Path,
) -> None:
    """`"\\"free\\""` is stored as `free` (so plan=free filters find it); finish_reason is no property."""
    for row in rows(tmp_path).values():
        assert (row["user_id"], row["session_id"]) == ("user-alice", "sess-alice-01")
        assert dict(row["properties"]) == {"plan": "free", "feature": "chat"}


def test_nested_usage_details_models_provider_and_cost(tmp_path: Path) -> None:
    """Cached and reasoning tokens are read from OpenAI's nested usage; the dated model is the
    response model; the OpenAI integration's observation names say openai, so embeddings are priced."""
    got = rows(tmp_path)
    chat = got[STREAM.span_id.hex()]
    assert (chat["input_tokens"], chat["output_tokens"]) == (31, 32)
    assert (chat["cache_read_tokens"], chat["reasoning_tokens"]) == (11, 7)
    assert (chat["request_model"], chat["response_model"]) == (None, "gpt-4o-mini-2024-07-18")
    assert chat["provider"] == "openai" and chat["cost_source"] == "computed"
    # gpt-4o-mini: $0.15/M input ($0.075/M cached), $0.60/M output.
    uncached = 31 - 11
    assert (
        chat["cost_usd"] == (uncached * Decimal("0.15") + 11 * Decimal("0.075") + 32 * Decimal("0.6")) / 10**6
    )
    embedding = got[EMBEDDING.span_id.hex()]
    assert (embedding["operation"], embedding["provider"], embedding["input_tokens"]) == (
        "embeddings",
        "openai",
        37,
    )
    assert embedding["cost_source"] == "computed"
    assert embedding["cost_usd"] == Decimal(37) * Decimal("0.02") / 10**6


def test_a_failed_call_is_an_error_without_a_reported_zero_cost(tmp_path: Path) -> None:
    """A failure's cost_details {"total": 0} is a placeholder: no usage, error, no cost reported;
    the model name on a failure is the one asked for."""
    failed = rows(tmp_path)[FAILED.span_id.hex()]
    assert (failed["status"], failed["input_tokens"], failed["output_tokens"]) == ("error", None, None)
    assert (failed["cost_usd"], failed["cost_source"]) == (None, "no_usage")
    assert (failed["request_model"], failed["response_model"]) == ("gpt-4o", None)


# ---- Langfuse JS v5 (@langfuse/openai observeOpenAI, @langfuse/otel 5.11.1), as recorded ---------
# Its usage object is Langfuse's own: `input` and `output` without their details, which follow
# as `input_cached_tokens`, `output_reasoning_tokens`, ... (total is the sum of all). A failed
# call leaves the span status unset and says ERROR in `langfuse.observation.level`; embeddings are
# "generation" observations named `OpenAI.embeddings`; a stream says so in its model parameters.
JS_IDENTITY = {
    "user.id": "user-alice",
    "session.id": "sess-alice-01",
    "langfuse.trace.metadata.plan": "free",
    "langfuse.trace.metadata.feature": "chat",
}
JS_USAGE = json.dumps(
    {
        "input": 20,
        "output": 34,
        "total": 75,
        "input_cached_tokens": 10,
        "input_audio_tokens": 0,
        "output_reasoning_tokens": 11,
        "output_audio_tokens": 0,
        "output_accepted_prediction_tokens": 0,
        "output_rejected_prediction_tokens": 0,
    }
)


def js_generation(name: str, **attrs: Any) -> Any:
    base = {**JS_IDENTITY, "langfuse.internal.is_app_root": True, "langfuse.observation.type": "generation"}
    return span({**base, **attrs}, trace_id=os.urandom(16), name=name)


JS_CHAT = js_generation(
    "OpenAI.chat",
    **{
        "langfuse.observation.model.name": "gpt-4o-mini-2024-07-18",
        "langfuse.observation.model.parameters": '{"user":"user-alice","response_format":""}',
        "langfuse.observation.usage_details": JS_USAGE,
    },
)
JS_STREAM = js_generation(
    "OpenAI.chat",
    **{
        "langfuse.observation.model.name": "gpt-4o-mini",
        "langfuse.observation.model.parameters": '{"stream":true,"user":"user-alice","response_format":""}',
        "langfuse.observation.usage_details": JS_USAGE,
    },
)
JS_EMBEDDING = js_generation(
    "OpenAI.embeddings",
    **{
        "langfuse.observation.model.name": "text-embedding-3-small",
        "langfuse.observation.model.parameters": '{"user":"user-alice","response_format":""}',
    },
)
JS_FAILED_MESSAGE = "Error: 500 The server had an error while processing your request."
JS_FAILED = js_generation(
    "OpenAI.chat",
    **{
        "langfuse.observation.model.name": "gpt-4o",
        "langfuse.observation.model.parameters": '{"user":"user-alice","response_format":""}',
        "langfuse.observation.level": "ERROR",
        "langfuse.observation.status_message": JS_FAILED_MESSAGE,
        "langfuse.observation.cost_details": '{"input":0,"output":0,"total":0}',
    },
)


def js_rows(tmp_path: Path) -> dict[str, dict[str, Any]]:
    reqs = [request([s]) for s in (JS_CHAT, JS_STREAM, JS_EMBEDDING, JS_FAILED)]
    return {r["span_id"]: r for r in stored_rows(tmp_path / "um.duckdb", *reqs, clock=NOW)}


def test_js_usage_details_count_input_with_cached_and_output_with_reasoning(tmp_path: Path) -> None:
    """Langfuse's input 20 + input_cached_tokens 10 is 30 input tokens (10 cached); its output 34 +
    output_reasoning_tokens 11 is 45 output tokens (11 reasoning), priced so."""
    chat = js_rows(tmp_path)[JS_CHAT.span_id.hex()]
    assert (chat["input_tokens"], chat["cache_read_tokens"]) == (30, 10)
    assert (chat["output_tokens"], chat["reasoning_tokens"]) == (45, 11)
    assert (chat["provider"], chat["operation"], chat["streaming"]) == ("openai", "chat", False)
    assert (chat["user_id"], dict(chat["properties"])) == ("user-alice", {"plan": "free", "feature": "chat"})
    assert chat["cost_usd"] == (20 * Decimal("0.15") + 10 * Decimal("0.075") + 45 * Decimal("0.6")) / 10**6


def test_js_stream_embedding_and_failure(tmp_path: Path) -> None:
    """The stream flag comes from the model parameters; OpenAI.embeddings is an embeddings request
    of openai; a failure (level ERROR, status unset) is an error with its message and no cost."""
    got = js_rows(tmp_path)
    assert got[JS_STREAM.span_id.hex()]["streaming"] is True
    embedding = got[JS_EMBEDDING.span_id.hex()]
    assert (embedding["operation"], embedding["provider"]) == ("embeddings", "openai")
    failed = got[JS_FAILED.span_id.hex()]
    assert (failed["status"], failed["error_type"]) == ("error", JS_FAILED_MESSAGE)
    assert (failed["cost_usd"], failed["cost_source"], failed["request_model"]) == (
        None,
        "no_usage",
        "gpt-4o",
    )


def test_js_embedding_and_stream_model_is_the_request_model(tmp_path: Path) -> None:
    """Langfuse JS names an embedding's and a stream's model as asked for (an embeddings response
    names the same, so it is both; it reads no model from a stream's chunks): it is the request
    model, not a served one with no request model; the stream is priced by it."""
    got = js_rows(tmp_path)
    embedding, stream = got[JS_EMBEDDING.span_id.hex()], got[JS_STREAM.span_id.hex()]
    assert (embedding["request_model"], embedding["response_model"]) == ("text-embedding-3-small",) * 2
    assert (stream["request_model"], stream["response_model"]) == ("gpt-4o-mini", None)
    assert stream["cost_usd"] == got[JS_CHAT.span_id.hex()]["cost_usd"]  # same usage, same model


def test_python_usage_object_passed_as_is_is_not_added_to(tmp_path: Path) -> None:
    """OpenAI's usage object (prompt_tokens already includes cached) is read as it is: no `input`
    entry, so nothing is added (the Python integration's shape)."""
    chat = rows(tmp_path)[STREAM.span_id.hex()]
    assert (chat["input_tokens"], chat["output_tokens"]) == (31, 32)


def test_python_stream_is_streamed_by_its_completion_start_time(tmp_path: Path) -> None:
    """The Python integration names no `stream` parameter (its model parameters leave it out, so
    they read as not streamed) but writes a completion start time on streamed calls only: those
    are streams; the embedding and the failed call, without one, are not."""
    got = rows(tmp_path)
    assert got[STREAM.span_id.hex()]["streaming"] is True
    assert got[FAILED.span_id.hex()]["streaming"] is False
