"""Logfire's OpenAI and Anthropic instrumentation, in the shape logfire 5.4.0 exports.

Recorded with logfire 5.4.0, openai 3.57.0, anthropic 2.14.0 against a local fake server. A
streamed call leaves two spans: the request span (CLIENT, ends when the stream is returned: no
usage, no response id) and, when the stream has been read, a zero-length log span
"streaming response from ..." attached to the context the call was made in (a sibling of the
request span, or a root of its own trace when there was no span) holding the response and usage.
Reasoning tokens exist only inside the JSON string `gen_ai.usage.raw`.
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
CHAT = "Chat Completion with {request_data[model]!r}"
MESSAGE = "Message with {request_data[model]!r}"
STREAM_LOG = "streaming response from {request_data[model]!r} took {duration:.2f}s"
RAW = {
    "completion_tokens": 32,
    "prompt_tokens": 31,
    "total_tokens": 63,
    "completion_tokens_details": {"accepted_prediction_tokens": 0, "reasoning_tokens": 7},
    "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": 11},
}


def request_span(template: str, provider: str, model: str, **more: Any) -> dict[str, Any]:
    return {
        "gen_ai.system": provider,
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        "gen_ai.operation.name": "chat",
        "async": False,
        "logfire.msg_template": template,
        "logfire.msg": template.replace("{request_data[model]!r}", repr(model)),
        "logfire.tags": ["LLM"],
        "logfire.span_type": "span",
        "request_data": json.dumps({"model": model}),
        **more,
    }


def stream_log(provider: str, model: str, response_model: str, **usage: Any) -> dict[str, Any]:
    return {
        "logfire.span_type": "log",
        "logfire.level_num": 9,
        "logfire.msg_template": STREAM_LOG,
        "logfire.msg": f"streaming response from {model!r} took 0.01s",
        "duration": 0.25,
        "gen_ai.system": provider,
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        "gen_ai.operation.name": "chat",
        "async": False,
        "request_data": json.dumps({"model": model}),
        "gen_ai.response.id": "chatcmpl-1",
        "gen_ai.response.model": response_model,
        "gen_ai.response.finish_reasons": '["stop"]',
        "logfire.tags": ["LLM"],
        **usage,
    }


OPENAI_USAGE = {
    "gen_ai.usage.input_tokens": 31,
    "gen_ai.usage.output_tokens": 32,
    "gen_ai.usage.cache_read.input_tokens": 11,
    "gen_ai.usage.raw": json.dumps(RAW),
    "operation.cost": 2.3025e-05,
}
HANDLER_ATTRS = {"user.id": "user-alice", "property.plan": "free", "logfire.span_type": "span"}


def zero_length(attrs: dict[str, Any], **kw: Any) -> Any:
    s = span(attrs, start=T0 + 10**9, duration_ns=0, name=STREAM_LOG, **kw)
    s.kind = s.SPAN_KIND_INTERNAL
    return s


def test_a_stream_is_counted_once_with_its_usage_user_and_reasoning(tmp_path: Path) -> None:
    """The request span of a stream is not counted; its log is the call: usage, reasoning from
    gen_ai.usage.raw, streaming, the stream's duration, and the user of the parent both share."""
    trace, root = os.urandom(16), os.urandom(8)
    handler = span(HANDLER_ATTRS, trace_id=trace, span_id=root, name="handle_request", duration_ns=2 * 10**9)
    req = span(
        request_span(CHAT, "openai", "gpt-4o-mini", **{"gen_ai.response.model": "gpt-4o-mini"}),
        trace_id=trace,
        parent=root,
        name=CHAT,
        duration_ns=2_000_000,
    )
    log = zero_length(
        stream_log("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", **OPENAI_USAGE),
        trace_id=trace,
        parent=root,
    )
    (row,) = stored_rows(tmp_path / "um.duckdb", request([req, log, handler]), clock=NOW)
    assert row["span_id"] == log.span_id.hex()
    assert (row["user_id"], dict(row["properties"])) == ("user-alice", {"plan": "free"})
    assert (row["input_tokens"], row["output_tokens"], row["cache_read_tokens"], row["reasoning_tokens"]) == (
        31,
        32,
        11,
        7,
    )
    assert (row["request_model"], row["response_model"], row["provider"]) == (
        "gpt-4o-mini",
        "gpt-4o-mini-2024-07-18",
        "openai",
    )
    assert row["streaming"] is True and row["duration_ms"] == 250.0
    assert (row["cost_usd"], row["cost_source"]) == (Decimal("0.000023025"), "reported")


def test_a_stream_without_a_parent_span_is_counted_once(tmp_path: Path) -> None:
    """With no span around the call, the log is a root of another trace: still one request."""
    req = span(request_span(CHAT, "openai", "gpt-4o"), name=CHAT)
    log = zero_length(stream_log("openai", "gpt-4o", "gpt-4o-2024-08-06"))  # stream without usage
    (row,) = stored_rows(tmp_path / "um.duckdb", request([req, log]), clock=NOW)
    assert row["span_id"] == log.span_id.hex()
    assert (row["input_tokens"], row["cost_source"], row["streaming"]) == (None, "no_usage", True)


def test_anthropic_calls_and_failures(tmp_path: Path) -> None:
    """Anthropic: a plain call and a stream once each, cache buckets read; a failed request span
    (status ERROR, no log follows) is an error; the application's span is not counted."""
    trace, root = os.urandom(16), os.urandom(8)
    handler = span(HANDLER_ATTRS, trace_id=trace, span_id=root, name="handle_request")
    usage = {
        "gen_ai.usage.input_tokens": 49,
        "gen_ai.usage.output_tokens": 32,
        "gen_ai.usage.cache_read.input_tokens": 11,
        "gen_ai.usage.cache_creation.input_tokens": 7,
        "gen_ai.usage.raw": json.dumps(
            {
                "cache_creation_input_tokens": 7,
                "cache_read_input_tokens": 11,
                "input_tokens": 31,
                "output_tokens": 32,
            }
        ),
        "operation.cost": 0.00060255,
    }
    model, dated = "claude-sonnet-4-5", "claude-sonnet-4-5-20250929"
    plain = span(
        request_span(
            MESSAGE,
            "anthropic",
            model,
            **{"gen_ai.response.model": dated, "gen_ai.response.id": "msg_1", **usage},
        ),
        trace_id=trace,
        parent=root,
        name=MESSAGE,
    )
    stream_req = span(
        request_span(MESSAGE, "anthropic", model, **{"gen_ai.response.model": model}),
        trace_id=trace,
        parent=root,
        name=MESSAGE,
    )
    log = zero_length(stream_log("anthropic", model, dated, **usage), trace_id=trace, parent=root)
    failed = span(
        request_span(
            MESSAGE, "anthropic", model, **{"gen_ai.response.model": model, "logfire.level_num": 17}
        ),
        trace_id=trace,
        parent=root,
        name=MESSAGE,
        error=True,
    )
    got = {
        r["span_id"]: r
        for r in stored_rows(
            tmp_path / "um.duckdb", request([plain, stream_req, log, failed, handler]), clock=NOW
        )
    }
    assert sorted(got) == sorted(s.span_id.hex() for s in (plain, log, failed))
    for s in (plain, log):
        row = got[s.span_id.hex()]
        assert (row["input_tokens"], row["cache_read_tokens"], row["cache_write_tokens"]) == (49, 11, 7)
        assert (row["status"], row["user_id"], row["provider"]) == ("ok", "user-alice", "anthropic")
    error = got[failed.span_id.hex()]
    assert (error["status"], error["input_tokens"], error["cost_source"]) == ("error", None, "no_usage")


def test_a_request_span_with_its_response_was_not_streamed(tmp_path: Path) -> None:
    """Logfire sends no stream flag (its request_data holds the model only), but it writes a
    response on the request span only for a call that was not streamed: a chat or an embedding
    with usage is stored as not streamed, a stream's log as streamed, a failed request (no
    response) as unknown."""
    chat = span(
        request_span(
            CHAT,
            "openai",
            "gpt-4o",
            **{
                "gen_ai.response.model": "gpt-4o-2024-08-06",
                "gen_ai.response.id": "chatcmpl-2",
                **OPENAI_USAGE,
            },
        ),
        name=CHAT,
    )
    embed_template = "Embedding Creation with {request_data[model]!r}"
    embedding = span(
        request_span(
            embed_template,
            "openai",
            "text-embedding-3-small",
            **{
                "gen_ai.operation.name": "embeddings",
                "gen_ai.response.model": "text-embedding-3-small",
                "gen_ai.usage.input_tokens": 35,
            },
        ),
        name=embed_template,
    )
    stream_req = span(
        request_span(CHAT, "openai", "gpt-4o", **{"gen_ai.response.model": "gpt-4o"}), name=CHAT
    )
    log = zero_length(stream_log("openai", "gpt-4o", "gpt-4o-2024-08-06", **OPENAI_USAGE))
    failed = span(
        request_span(
            CHAT, "openai", "gpt-4o", **{"gen_ai.response.model": "gpt-4o", "logfire.level_num": 17}
        ),
        name=CHAT,
        error=True,
    )
    rows = stored_rows(tmp_path / "um.duckdb", request([chat, embedding, stream_req, log, failed]), clock=NOW)
    got = {r["span_id"]: r["streaming"] for r in rows}
    assert got == {
        chat.span_id.hex(): False,
        embedding.span_id.hex(): False,
        log.span_id.hex(): True,
        failed.span_id.hex(): None,
    }
