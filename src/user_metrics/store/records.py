"""The rows the store takes: a ``RequestRecord`` per LLM call (a row of ``requests``, priced
first) and a ``SpanFact`` per span (a row of ``span_facts``). The mapper in ingest builds them;
``batches.py`` turns records into Arrow rows.
"""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple


class RequestRecord(NamedTuple):
    """One LLM call, as stored in the ``requests`` table (cost filled in by pricing)."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    start_time_unix_nano: int
    duration_ms: float
    user_id: str | None
    session_id: str | None
    service_name: str | None
    environment: str | None
    operation: str | None
    provider: str | None
    request_model: str | None
    response_model: str | None
    input_tokens: int | None
    output_tokens: int | None
    cache_read_tokens: int | None
    cache_write_tokens: int | None
    reasoning_tokens: int | None
    cost_usd: Decimal | None  # only when the span reported its cost
    cost_source: str | None  # "reported", or None until priced
    status: str
    error_type: str | None
    streaming: bool | None
    properties: dict[str, str]
    # True when the span counted input without cache (cache read + write > input, or no input
    # beside cache counts): input_tokens then holds input + cache read + cache write.
    cache_added_to_input: bool = False
    # The API the call went to (``server.address`` host, or a base URL), for pricing only.
    server_address: str | None = None
    # The instrumentation scope (library) that emitted the span: ``scope_spans.scope``.
    scope_name: str | None = None
    scope_version: str | None = None


class SpanFact(NamedTuple):
    """One span's own identity facts and its parent, kept so spans of later requests can inherit."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    user_id: str | None
    session_id: str | None
    properties: dict[str, str]
    # LLM spans only: "call" (counted: stored or waiting) or "sdk" (a provider SDK's own span), the
    # model (lower-case), and for an SDK span that is not a call of its own the id of the call's span.
    llm: str | None = None
    model: str | None = None
    absorbed_by: str | None = None
