"""The Traceloop SDK's processor over the Vercel AI SDK: its spans become one request per call.

Shapes recorded from `@traceloop/node-server-sdk` 0.27.0 over `ai` 6.0.326: the processor renames
both the wrapper (`ai.generateText`) and the call (`ai.generateText.doGenerate`) to `chat <model>`,
adds GenAI names to both, and moves `experimental_telemetry.metadata` to
`traceloop.association.properties.*` spelled as the application wrote it (camelCase `userId`).
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Any

from ingested import served_rows
from otlp import AI_SDK_V6_USAGE, T0, request, span

ASSOCIATION = {
    "gen_ai.conversation.id": "s-alice",
    "traceloop.association.properties.userId": "alice",
    "traceloop.association.properties.sessionId": "s-alice",
    "traceloop.association.properties.plan": "free",
    "traceloop.association.properties.feature": "chat",
}


def generate_text(*, error: bool = False) -> list[Any]:
    trace, root, call = os.urandom(16), os.urandom(8), os.urandom(8)
    common = {
        "resource.name": "fn",
        "ai.telemetry.functionId": "fn",
        "ai.sdk.version": "6.0.326",
        **ASSOCIATION,
    }
    call_attrs: dict[str, Any] = {
        "operation.name": "ai.generateText.doGenerate fn",
        "ai.operationId": "ai.generateText.doGenerate",
        "gen_ai.system": "openai.chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.provider.name": "openai",
        **common,
    }
    wrapper: dict[str, Any] = {
        "operation.name": "ai.generateText fn",
        "ai.operationId": "ai.generateText",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.provider.name": "openai",
        **common,
    }
    if not error:
        call_attrs |= AI_SDK_V6_USAGE | {
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
            "gen_ai.usage.input_tokens": 33,
            "gen_ai.usage.output_tokens": 51,
            "gen_ai.usage.total_tokens": 84,
        }
        wrapper |= AI_SDK_V6_USAGE | {"gen_ai.response.finish_reasons": ["stop"]}
    return [
        span(call_attrs, trace_id=trace, span_id=call, parent=root, error=error, name="chat gpt-4o-mini"),
        span(wrapper, trace_id=trace, span_id=root, start=T0 - 10**6, error=error, name="chat gpt-4o-mini"),
    ]


class TestTraceloopOverTheAiSdk:
    def test_camel_case_user_and_session_are_identity_not_properties(self, tmp_path: Path) -> None:
        """`traceloop.association.properties.userId`/`sessionId` are the user and session; the other
        association properties stay properties; the wrapper span is not counted beside the call."""
        spans = generate_text()
        (row,) = served_rows(tmp_path, request(spans))
        assert row["span_id"] == spans[0].span_id.hex()
        assert (row["user_id"], row["session_id"]) == ("alice", "s-alice")
        assert row["properties"] == {"plan": "free", "feature": "chat"}
        assert (row["provider"], row["operation"], row["streaming"]) == ("openai", "chat", False)
        tokens = [row[k] for k in ("input_tokens", "output_tokens", "cache_read_tokens", "reasoning_tokens")]
        assert tokens == [33, 51, 11, 12]
        assert row["cost_usd"] == Decimal("0.000034725")

    def test_a_failed_call_is_one_error_request(self, tmp_path: Path) -> None:
        """The failed call (status ERROR, no tokens) is one error request; the failed wrapper is not."""
        spans = generate_text(error=True)
        (row,) = served_rows(tmp_path, request(spans))
        assert (row["span_id"], row["status"], row["user_id"]) == (spans[0].span_id.hex(), "error", "alice")
