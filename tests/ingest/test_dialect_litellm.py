"""LiteLLM's `otel` callback: its cost is the reported cost; its embeddings are priced.

Shapes recorded from `litellm` 1.110.2 (`litellm.callbacks = [OpenTelemetry(...)]`) calling an
OpenAI-compatible fake server: one `litellm_request` span per call (the request) with a child
`raw_gen_ai_request` holding the provider's raw answer. The dozens of empty `metadata.*` proxy
attributes and the `hidden_params` JSON are left out.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Any

from ingested import by_span, served_rows
from otlp import request, span

from user_metrics.ingest.attributes import compile_conventions
from user_metrics.ingest.mapping import map_request

COST = {
    "gen_ai.cost.total_cost": 3.4725e-05,
    "gen_ai.cost.input_cost": 4.1249999999999995e-06,
    "gen_ai.cost.output_cost": 3.06e-05,
    "gen_ai.cost.cache_read_cost": 8.249999999999999e-07,
    "gen_ai.cost.reasoning_cost": 7.2e-06,
    "gen_ai.cost.original_cost": 3.4725e-05,
    "gen_ai.cost.discount_amount": 0.0,
}


def litellm_call(
    attrs: dict[str, Any], *, error: bool = False, raw: dict[str, Any] | None = None
) -> list[Any]:
    trace, root = os.urandom(16), os.urandom(8)
    common = {
        "metadata.user_api_key_user_id": "",
        "metadata.applied_guardrails": "[]",
        "litellm.cache_hit": False,
    }
    spans = [span(common | attrs, trace_id=trace, span_id=root, error=error, name="litellm_request")]
    if raw is not None:
        spans.append(span(raw, trace_id=trace, parent=root, name="raw_gen_ai_request"))
    return spans


CHAT = {
    "litellm.provider.model": "openai/gpt-4o-mini",
    "gen_ai.request.model": "gpt-4o-mini",
    "llm.request.type": "completion",
    "gen_ai.system": "openai",
    "llm.is_streaming": "False",
    "llm.user": "alice",
    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
    "gen_ai.usage.total_tokens": 84,
    "gen_ai.usage.output_tokens": 51,
    "gen_ai.usage.input_tokens": 33,
    "gen_ai.operation.name": "chat",
} | COST
RAW = {
    "llm.openai.model": "gpt-4o-mini-2024-07-18",
    "llm.openai.usage": "{'completion_tokens': 51, 'prompt_tokens': 33}",
}


def embedding(provider_model: str) -> dict[str, Any]:
    """An embedding as LiteLLM records it: `gen_ai.system` empty, its own cost."""
    return {
        "litellm.provider.model": provider_model,
        "gen_ai.cost.total_cost": 1.4e-07,
        "gen_ai.cost.input_cost": 1.4e-07,
        "gen_ai.request.model": "text-embedding-3-small",
        "llm.request.type": "embedding",
        "gen_ai.system": "",
        "llm.is_streaming": "False",
        "llm.user": "bob",
        "gen_ai.response.model": "text-embedding-3-small",
        "gen_ai.usage.total_tokens": 7,
        "gen_ai.usage.output_tokens": 0,
        "gen_ai.usage.input_tokens": 7,
        "gen_ai.operation.name": "embedding",
    }


class TestLiteLLM:
    def test_its_own_cost_is_the_reported_cost_and_each_call_is_one_request(self, tmp_path: Path) -> None:
        """`gen_ai.cost.total_cost` is stored as the reported cost (not a cost computed beside it); the
        `litellm_request` span is the one request, its `raw_gen_ai_request` child is not."""
        chat = litellm_call(CHAT, raw=RAW)
        stream = litellm_call(
            CHAT | {"llm.is_streaming": "True", "gen_ai.response.model": "gpt-4o-mini"}, raw={}
        )
        rows = by_span(served_rows(tmp_path, request([*chat, *stream])))
        assert sorted(rows) == sorted([chat[0].span_id.hex(), stream[0].span_id.hex()])
        for call, streaming in ((chat[0], False), (stream[0], True)):
            row = rows[call.span_id.hex()]
            assert (row["cost_source"], row["cost_usd"]) == ("reported", Decimal("0.000034725"))
            assert (row["user_id"], row["provider"], row["operation"], row["streaming"]) == (
                "alice",
                "openai",
                "chat",
                streaming,
            )
            assert (row["input_tokens"], row["output_tokens"]) == (33, 51)

    def test_its_raw_request_span_is_no_skipped_call_in_the_coverage_report(self) -> None:
        """`raw_gen_ai_request` (the provider's raw answer as `llm.openai.*`, beneath the call's
        `litellm_request`) is not counted, and the coverage report does not list it as a span that
        looks like an LLM call but was skipped: the call is counted, on its parent."""
        mapped = map_request(
            request(litellm_call(CHAT, raw=RAW)), compile_conventions(), now_unix_nano=2**63 - 1
        )
        assert len(mapped.records) == 1
        assert [tally.llm_like_skipped for tally in mapped.coverage.scopes.values()] == [0]

    def test_cached_and_reasoning_tokens_from_its_python_usage_object(self, tmp_path: Path) -> None:
        """LiteLLM writes cached and reasoning tokens only inside `metadata.usage_object`, the
        provider's usage as Python's `str(dict)` (single quotes, None): they are read from it.
        A usage object without details (an embedding's) or that is no literal gives none."""
        usage = (
            "{'completion_tokens': 51, 'prompt_tokens': 33, 'total_tokens': 84, 'completion_tokens_details': "
            "{'accepted_prediction_tokens': 0, 'audio_tokens': 0, 'reasoning_tokens': 12, "
            "'rejected_prediction_tokens': None}, 'prompt_tokens_details': {'audio_tokens': 0, "
            "'cached_tokens': 11}}"
        )
        chat = litellm_call(CHAT | {"metadata.usage_object": usage}, raw=RAW)
        plain = litellm_call(
            embedding("openai/text-embedding-3-small")
            | {"metadata.usage_object": "{'prompt_tokens': 7, 'prompt_tokens_details': None}"}
        )
        broken = litellm_call(CHAT | {"metadata.usage_object": "{'prompt_tokens_details': __import__('os')}"})
        rows = by_span(served_rows(tmp_path, request([*chat, *plain, *broken])))
        row = rows[chat[0].span_id.hex()]
        assert (row["input_tokens"], row["cache_read_tokens"], row["reasoning_tokens"]) == (33, 11, 12)
        assert (row["cost_source"], row["cost_usd"]) == ("reported", Decimal("0.000034725"))
        for call in (plain, broken):
            row = rows[call[0].span_id.hex()]
            assert (row["cache_read_tokens"], row["reasoning_tokens"]) == (None, None)

    def test_embeddings_with_an_empty_system_are_priced(self, tmp_path: Path) -> None:
        """An embedding with `gen_ai.system` "" is priced with LiteLLM's cost; its provider comes from
        the `provider/model` LiteLLM called when there is one (without it, LiteLLM names none)."""
        named = litellm_call(
            embedding("openai/text-embedding-3-small"), raw={"llm.None.model": "text-embedding-3-small"}
        )
        bare = litellm_call(
            embedding("text-embedding-3-small"), raw={"llm.None.model": "text-embedding-3-small"}
        )
        rows = by_span(served_rows(tmp_path, request([*named, *bare])))
        assert sorted(rows) == sorted([named[0].span_id.hex(), bare[0].span_id.hex()])
        for row in rows.values():
            assert (row["operation"], row["user_id"], row["input_tokens"]) == ("embeddings", "bob", 7)
            assert (row["cost_source"], row["cost_usd"]) == ("reported", Decimal("0.00000014"))
        assert rows[named[0].span_id.hex()]["provider"] == "openai"
        assert rows[bare[0].span_id.hex()]["provider"] is None

    def test_a_failed_call_is_one_error_request(self, tmp_path: Path) -> None:
        """A failed call (status ERROR, error.type, no usage, no cost) is one error request, unpriced."""
        failed = {
            "litellm.provider.model": "gpt-4o",
            "gen_ai.request.model": "gpt-4o",
            "llm.request.type": "completion",
            "gen_ai.system": "openai",
            "llm.user": "carol",
            "gen_ai.operation.name": "chat",
            "error.code": "500",
            "http.response.status_code": 500,
            "error.type": "InternalServerError",
            "error.llm_provider": "openai",
        }
        (row,) = served_rows(tmp_path, request(litellm_call(failed, error=True)))
        assert (row["status"], row["error_type"], row["user_id"]) == ("error", "InternalServerError", "carol")
        assert row["cost_usd"] is None and row["cost_source"] == "no_usage"
