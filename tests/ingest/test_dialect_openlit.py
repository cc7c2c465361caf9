"""OpenLIT (`openlit.init`, its OpenAI instrumentation): a reported cost of 0 is not a price.

Shapes recorded from openlit 1.45.0 with openai 2.54.0 calling an OpenAI-compatible fake server
(tests/captures/openlit/): one CLIENT span per call, `chat <model>` or `embeddings <model>`, scope
`openlit.instrumentation.openai`. OpenLIT prices the call itself from a price list it fetches from
GitHub at start-up and writes `gen_ai.usage.cost` 0 when that list lacks the model, could not be
fetched (here: offline), or pricing failed for any reason. Message contents are left out.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Any

from ingested import by_span, served_rows
from otlp import request, span

CHAT = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.request.stream": False,
    "gen_ai.request.user": "user-alice",
    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
    "gen_ai.response.id": "chatcmpl-fake0001",
    "gen_ai.usage.cache_creation.input_tokens": 0,
    "gen_ai.usage.cache_read.input_tokens": 17,
    "gen_ai.usage.input_tokens": 52,
    "gen_ai.usage.output_tokens": 24,
    "gen_ai.client.token.usage": 76,
    "gen_ai.usage.cost": 0,
    "telemetry.sdk.name": "openlit",
    "deployment.environment": "conformance",
}
EMBEDDING = {
    "gen_ai.operation.name": "embeddings",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "text-embedding-3-small",
    "gen_ai.response.model": "text-embedding-3-small",
    "gen_ai.request.user": "user-bob",
    "gen_ai.usage.input_tokens": 35,
    "gen_ai.client.token.usage": 35,
    "gen_ai.usage.cost": 0,
    "telemetry.sdk.name": "openlit",
}
FAILED = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o",
    "error.type": "InternalServerError",
    "telemetry.sdk.name": "openlit",
}


def openlit_span(attrs: dict[str, Any], name: str, error: bool = False) -> Any:
    return span(attrs, trace_id=os.urandom(16), span_id=os.urandom(8), name=name, error=error)


def test_a_zero_cost_on_a_call_that_used_tokens_is_not_the_cost(tmp_path: Path) -> None:
    """OpenLIT's `gen_ai.usage.cost` 0 on a call that used tokens means it could not price the
    call: it is not stored as a reported $0 (which would zero the user's bill) but priced from the
    tokens, like a call that reported no cost (uncached input, cached input, output)."""
    chat = openlit_span(CHAT, "chat gpt-4o-mini")
    embedding = openlit_span(EMBEDDING, "embeddings text-embedding-3-small")
    rows = by_span(served_rows(tmp_path, request([chat, embedding])))
    row = rows[chat.span_id.hex()]
    assert row["cost_source"] == "computed"
    assert row["cost_usd"] == (35 * Decimal("0.15") + 17 * Decimal("0.075") + 24 * Decimal("0.6")) / 10**6
    row = rows[embedding.span_id.hex()]
    assert (row["cost_source"], row["cost_usd"]) == ("computed", 35 * Decimal("0.02") / 10**6)


def test_a_nonzero_cost_is_the_reported_cost(tmp_path: Path) -> None:
    """Where OpenLIT could price the call (its price list reached), its cost is the reported cost."""
    chat = openlit_span(CHAT | {"gen_ai.usage.cost": 2.5e-05}, "chat gpt-4o-mini")
    (row,) = served_rows(tmp_path, request([chat]))
    assert (row["cost_source"], row["cost_usd"]) == ("reported", Decimal("0.000025"))


def test_a_failed_call_is_one_error_request_without_cost(tmp_path: Path) -> None:
    """A failed call (status ERROR, error.type, no usage, no cost) is one error request, unpriced."""
    failed = openlit_span(FAILED, "chat gpt-4o", error=True)
    (row,) = served_rows(tmp_path, request([failed]))
    assert (row["status"], row["error_type"]) == ("error", "InternalServerError")
    assert (row["cost_usd"], row["cost_source"]) == (None, "no_usage")
