"""The Vercel AI SDK's spans, in the exact shapes it emits, become one stored request per call.

Shapes recorded from `ai` 6.0.326 (`experimental_telemetry`) and `ai` 7.0.173 with `@ai-sdk/otel`
1.0.173 (`registerTelemetry(new OpenTelemetry({runtimeContext: true, usage: true}))`), calling
OpenAI-compatible and Anthropic-compatible fake servers; prompts and outputs left out.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Any

from ingested import by_span, served_rows
from otlp import AI_SDK_V6_USAGE, T0, request, span

V6_IDENTITY = {
    "ai.telemetry.functionId": "fn",
    "ai.settings.maxRetries": 2,
    "ai.telemetry.metadata.userId": "alice",
    "ai.telemetry.metadata.sessionId": "s-alice",
    "ai.telemetry.metadata.plan": "free",
    "ai.telemetry.metadata.feature": "chat",
}


def ids(n: int) -> list[bytes]:
    return [os.urandom(8) for _ in range(n)]


def v6_call(
    operation: str,
    provider: str,
    model: str,
    *,
    usage: dict[str, Any] | None,
    error: bool = False,
    **more: Any,
) -> tuple[Any, Any]:
    """The wrapper span (`ai.generateText`) and its per-call child (`ai.generateText.doGenerate`)."""
    trace = os.urandom(16)
    root, call = ids(2)
    wrapper_attrs = {
        "operation.name": f"{operation} fn",
        "ai.operationId": operation,
        "ai.model.provider": provider,
        "ai.model.id": model,
        **V6_IDENTITY,
        **(usage or {}),
    }
    call_name = {"ai.generateText": "doGenerate", "ai.streamText": "doStream"}[operation]
    call_attrs = {
        "operation.name": f"{operation}.{call_name} fn",
        "ai.operationId": f"{operation}.{call_name}",
        "ai.model.provider": provider,
        "ai.model.id": model,
        **V6_IDENTITY,
        "gen_ai.system": provider,
        "gen_ai.request.model": model,
        **more,
    }
    if usage is not None:
        call_attrs |= usage | {
            "ai.response.finishReason": "stop",
            "ai.response.model": f"{model}-2024-07-18",
            "gen_ai.response.finish_reasons": ["stop"],
            "gen_ai.response.model": f"{model}-2024-07-18",
            "gen_ai.usage.input_tokens": usage["ai.usage.inputTokens"],
            "gen_ai.usage.output_tokens": usage["ai.usage.outputTokens"],
        }
    child = span(
        call_attrs, trace_id=trace, span_id=call, parent=root, error=error, name=f"{operation}.{call_name}"
    )
    parent = span(wrapper_attrs, trace_id=trace, span_id=root, start=T0 - 10**6, error=error, name=operation)
    return child, parent


def v6_embed(operation: str) -> tuple[Any, Any]:
    """`ai.embed` (or `ai.embedMany`) and its `.doEmbed` child: model, provider, `ai.usage.tokens`."""
    trace = os.urandom(16)
    root, call = ids(2)
    base = {
        "ai.model.provider": "openai.embedding",
        "ai.model.id": "text-embedding-3-small",
        **V6_IDENTITY,
        "ai.telemetry.metadata.userId": "bob",
        "ai.usage.tokens": 7,
    }
    child = span(
        {"ai.operationId": f"{operation}.doEmbed", **base},
        trace_id=trace,
        span_id=call,
        parent=root,
        name="doEmbed",
    )
    parent = span({"ai.operationId": operation, **base}, trace_id=trace, span_id=root, name=operation)
    return child, parent


class TestV6:
    def test_generate_and_stream_are_one_request_each_with_identity_and_every_bucket(
        self, tmp_path: Path
    ) -> None:
        """generateText and streamText: the per-call span is the request (not the wrapper beside it),
        with user, session and properties from `ai.telemetry.metadata.*`, provider `openai.chat` read as
        `openai`, cached and reasoning tokens read, streaming from the span's kind, cost priced."""
        gen = v6_call("ai.generateText", "openai.chat", "gpt-4o-mini", usage=AI_SDK_V6_USAGE)
        stream = v6_call(
            "ai.streamText",
            "openai.chat",
            "gpt-4o-mini",
            usage=AI_SDK_V6_USAGE,
            **{"ai.response.msToFirstChunk": 13.3},
        )
        rows = by_span(served_rows(tmp_path, request([*gen, *stream])))
        assert sorted(rows) == sorted([gen[0].span_id.hex(), stream[0].span_id.hex()])
        for call, streamed in ((gen[0], False), (stream[0], True)):
            row = rows[call.span_id.hex()]
            assert (row["user_id"], row["session_id"]) == ("alice", "s-alice")
            assert row["properties"] == {"plan": "free", "feature": "chat"}
            assert (row["operation"], row["provider"], row["status"], row["streaming"]) == (
                "chat",
                "openai",
                "ok",
                streamed,
            )
            assert (row["request_model"], row["response_model"]) == ("gpt-4o-mini", "gpt-4o-mini-2024-07-18")
            tokens = [
                row[k]
                for k in (
                    "input_tokens",
                    "output_tokens",
                    "cache_read_tokens",
                    "cache_write_tokens",
                    "reasoning_tokens",
                )
            ]
            assert tokens == [33, 51, 11, None, 12]
            # gpt-4o-mini: 22 uncached at $0.15/M, 11 cached at $0.075/M, 51 out at $0.60/M.
            assert row["cost_source"] == "computed" and row["cost_usd"] == Decimal("0.000034725")

    def test_a_failed_call_is_one_error_request(self, tmp_path: Path) -> None:
        """A failed doGenerate (status ERROR, model and gen_ai.system, no tokens, no operation name) is
        an error request of its user; its failed wrapper is not a second one."""
        child, parent = v6_call("ai.generateText", "openai.chat", "gpt-4o", usage=None, error=True)
        (row,) = served_rows(tmp_path, request([child, parent]))
        assert row["span_id"] == child.span_id.hex()
        assert (row["status"], row["error_type"], row["operation"]) == ("error", "boom", "chat")
        assert (row["user_id"], row["request_model"], row["provider"]) == ("alice", "gpt-4o", "openai")
        assert row["input_tokens"] is None and row["cost_source"] == "no_usage"

    def test_embeddings_are_requests_once(self, tmp_path: Path) -> None:
        """`ai.embed.doEmbed` and `ai.embedMany.doEmbed` (only ai.model.id, ai.model.provider and
        ai.usage.tokens) are embeddings requests, priced; their `ai.embed`/`ai.embedMany` wrappers are not."""
        one, many = v6_embed("ai.embed"), v6_embed("ai.embedMany")
        rows = by_span(served_rows(tmp_path, request([*one, *many])))
        assert sorted(rows) == sorted([one[0].span_id.hex(), many[0].span_id.hex()])
        for row in rows.values():
            assert (row["operation"], row["provider"], row["request_model"]) == (
                "embeddings",
                "openai",
                "text-embedding-3-small",
            )
            assert (row["user_id"], row["input_tokens"], row["output_tokens"]) == ("bob", 7, None)
            assert row["cost_source"] == "computed" and row["cost_usd"] == Decimal("0.00000014")

    def test_anthropic_cache_counts_and_provider(self, tmp_path: Path) -> None:
        """Anthropic through the AI SDK: input includes both cache counts (as the SDK reports it),
        cache write from `ai.usage.inputTokenDetails.cacheWriteTokens`, provider `anthropic.messages`
        read as `anthropic`, billed with cache prices."""
        usage = {
            "ai.usage.inputTokens": 6012,
            "ai.usage.inputTokenDetails.noCacheTokens": 12,
            "ai.usage.inputTokenDetails.cacheReadTokens": 5000,
            "ai.usage.inputTokenDetails.cacheWriteTokens": 1000,
            "ai.usage.outputTokens": 300,
            "ai.usage.totalTokens": 6312,
            "ai.usage.cachedInputTokens": 5000,
        }
        child, parent = v6_call(
            "ai.generateText", "anthropic.messages", "claude-sonnet-4-20250514", usage=usage
        )
        (row,) = served_rows(tmp_path, request([child, parent]))
        assert row["provider"] == "anthropic"
        tokens = [
            row[k] for k in ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens")
        ]
        assert tokens == [6012, 5000, 1000, 300] and row["cache_added_to_input"] is False
        # $3/M input, $0.30/M cache read, $3.75/M cache write, $15/M output.
        assert row["cost_usd"] == Decimal("0.009786")

    def test_provider_ids_with_an_api_suffix(self, tmp_path: Path) -> None:
        """The AI SDK's provider ids name the API after the provider: `openai.responses` is openai,
        `google.generative-ai` is gcp.gemini (as the SDK's own v7 integration names it)."""
        a = v6_call("ai.generateText", "openai.responses", "gpt-4o-mini", usage=AI_SDK_V6_USAGE)
        b = v6_call("ai.generateText", "google.generative-ai", "gemini-2.0-flash", usage=AI_SDK_V6_USAGE)
        rows = by_span(served_rows(tmp_path, request([*a, *b])))
        assert rows[a[0].span_id.hex()]["provider"] == "openai"
        assert rows[b[0].span_id.hex()]["provider"] == "gcp.gemini"


V7_CONTEXT = {
    "ai.settings.context.userId": "alice",
    "ai.settings.context.sessionId": "s-alice",
    "ai.settings.context.plan": "free",
    "ai.settings.context.feature": "chat",
}
V7_USAGE = {
    "gen_ai.usage.input_tokens": 33,
    "gen_ai.usage.output_tokens": 51,
    "gen_ai.usage.cache_read.input_tokens": 11,
    "ai.usage.inputTokenDetails.noCacheTokens": 22,
    "ai.usage.outputTokenDetails.textTokens": 39,
    "ai.usage.outputTokenDetails.reasoningTokens": 12,
}


def v7_generate(*, stream: bool = False, error: bool = False) -> list[Any]:
    """invoke_agent (root, summed usage, runtime context) > step 1 (agent_step, context) > chat."""
    trace = os.urandom(16)
    root, step, call = ids(3)
    chat: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "server.address": "127.0.0.1",
    }
    agent: dict[str, Any] = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.agent.name": "fn",
        **V7_CONTEXT,
    }
    if error:
        chat["http.response.status_code"] = 500
    else:
        chat |= V7_USAGE | {
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
            "gen_ai.client.operation.duration": 0.04,
        }
        agent |= V7_USAGE
        if stream:
            chat["gen_ai.client.operation.time_to_first_chunk"] = 0.019
    return [
        span(chat, trace_id=trace, span_id=call, parent=step, error=error, name="chat gpt-4o-mini"),
        span(
            {"gen_ai.operation.name": "agent_step", **V7_CONTEXT},
            trace_id=trace,
            span_id=step,
            parent=root,
            error=error,
            name="step 1",
        ),
        span(agent, trace_id=trace, span_id=root, error=error, name="invoke_agent gpt-4o-mini"),
    ]


def v7_embed(*, error: bool = False, calls: int = 1) -> list[Any]:
    """The root `embeddings` span (operation, model, no tokens) and one child per provider call."""
    trace = os.urandom(16)
    root = os.urandom(8)
    base = {
        "gen_ai.operation.name": "embeddings",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "text-embedding-3-small",
        **V7_CONTEXT,
    }
    usage = {} if error else {"gen_ai.usage.input_tokens": 7}
    children = [
        span(base | usage, trace_id=trace, parent=root, error=error, name="embeddings text-embedding-3-small")
        for _ in range(calls)
    ]
    return [
        *children,
        span(base, trace_id=trace, span_id=root, error=error, name="embeddings text-embedding-3-small"),
    ]


class TestV7:
    def test_the_chat_span_is_the_request_with_identity_from_ancestors(self, tmp_path: Path) -> None:
        """v7: the `chat` span is the one request (not invoke_agent or the step beside it); user,
        session and properties come from `ai.settings.context.*` on its ancestors; reasoning from
        `ai.usage.outputTokenDetails.reasoningTokens`; a time to first chunk marks a stream."""
        plain, streamed = v7_generate(), v7_generate(stream=True)
        rows = by_span(served_rows(tmp_path, request([*plain, *streamed])))
        assert sorted(rows) == sorted([plain[0].span_id.hex(), streamed[0].span_id.hex()])
        for call, streaming in ((plain[0], None), (streamed[0], True)):
            row = rows[call.span_id.hex()]
            assert (row["user_id"], row["session_id"]) == ("alice", "s-alice")
            assert row["properties"] == {"plan": "free", "feature": "chat"}
            assert (row["provider"], row["operation"], row["streaming"]) == ("openai", "chat", streaming)
            tokens = [
                row[k] for k in ("input_tokens", "output_tokens", "cache_read_tokens", "reasoning_tokens")
            ]
            assert tokens == [33, 51, 11, 12]
            assert row["cost_usd"] == Decimal("0.000034725")

    def test_identity_arrives_with_the_root_in_a_later_request(self, tmp_path: Path) -> None:
        """The chat span exported before its step and root (which carry the runtime context) waits
        for them and takes the user they name."""
        chat, step, root = v7_generate()
        (row,) = served_rows(tmp_path, request([chat]), request([step, root]))
        assert (row["user_id"], row["session_id"]) == ("alice", "s-alice")
        assert row["properties"] == {"plan": "free", "feature": "chat"}

    def test_a_failed_call_is_one_error_request(self, tmp_path: Path) -> None:
        """A failed chat (status ERROR on chat, step and root) is one error request of its user."""
        spans = v7_generate(error=True)
        (row,) = served_rows(tmp_path, request(spans))
        assert row["span_id"] == spans[0].span_id.hex()
        assert (row["status"], row["user_id"], row["request_model"]) == ("error", "alice", "gpt-4o-mini")

    def test_an_embedding_is_counted_once(self, tmp_path: Path) -> None:
        """embed(): the root `embeddings` span without tokens is not counted beside its child, the call;
        embedMany() in two provider calls is two requests; a failed embed is one error request."""
        one, many, failed = v7_embed(), v7_embed(calls=2), v7_embed(error=True)
        rows = by_span(served_rows(tmp_path, request([*one, *many, *failed])))
        assert sorted(rows) == sorted(s.span_id.hex() for s in (one[0], *many[:2], failed[0]))
        assert [rows[s.span_id.hex()]["input_tokens"] for s in (one[0], *many[:2])] == [7, 7, 7]
        assert rows[failed[0].span_id.hex()]["status"] == "error"
        assert {r["user_id"] for r in rows.values()} == {"alice"}
        assert {r["cost_source"] for r in rows.values()} == {"computed", "no_usage"}

    def test_a_parent_with_tokens_is_not_taken_for_a_wrapper(self, tmp_path: Path) -> None:
        """Only a token-less span over a call of its own operation is a wrapper: two embeddings spans
        that both hold usage stay two requests (the rule removes nothing that carries usage)."""
        child, root = v7_embed()
        root.attributes.add(key="gen_ai.usage.input_tokens").value.int_value = 7
        assert len(served_rows(tmp_path, request([child, root]))) == 2
