"""Rules of single libraries that the conventions table cannot say as data. Pure: no I/O.

Which span is the call:
- The Vercel AI SDK names its spans (``ai.operationId``): that name decides whether a span is a
  provider call or a wrapper around calls, what operation it is and whether it streamed
  (``conventions.AI_SDK_OPERATIONS``); ``ai_sdk_verdict``.
- A model-call span without token counts whose child in the same request is a model call of the
  same operation wraps that call (the AI SDK v7 ``embed`` root span around its ``embeddings``
  call): the call is counted, not the wrapper; ``wrappers``.
- Logfire's request span of a streamed call is not the call when its streaming-response log
  records it; ``superseded``.
- A provider SDK's own span (anthropic 2.14+) is not the call when an instrumentation's span
  records it; ``provider_sdk_duplicates`` in one request, ``sdk_span_waits`` across requests.
What a call says:
- Paired in one request, the SDK span's token counts and stream flag win over the
  instrumentation's; ``with_provider_sdk_counts``.
- A span that records a time to first chunk was streamed (the AI SDK v6 and v7, pydantic-ai,
  Langfuse's Python integration), whatever a flag says; Logfire's request span with a response
  was not; ``streaming``.
- Provider ids with the API after the provider (``openai.chat``) are cut to the provider; a span
  with an empty provider takes the one LiteLLM puts before its model
  (``openai/text-embedding-3-small``); ``provider``.
- ``adjust`` completes a mapped record where a library writes one fact in a shape of its own
  (Langfuse's one model name, its provider-less integration, its zero cost on failures; OpenLIT's
  zero cost when it could not price a call).
All read only the span and its scan, like the rest of the mapper.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from user_metrics.ingest import conventions as c
from user_metrics.ingest.attributes import MAX_TOKENS, MappingError, Scan, as_bool
from user_metrics.ingest.inheritance import parent_hex, valid_ids
from user_metrics.store.records import RequestRecord

STATUS_CODE_ERROR = 2

# Logfire's request spans for the calls it can stream (its message templates).
_LOGFIRE_STREAMABLE = frozenset(
    {
        "Chat Completion with {request_data[model]!r}",
        "Completion with {request_data[model]!r}",
        "Responses API with {gen_ai.request.model!r}",
        "Message with {request_data[model]!r}",
    }
)
# ... and all its request spans that hold a call's response when it was not streamed.
_LOGFIRE_REQUESTS = _LOGFIRE_STREAMABLE | {"Embedding Creation with {request_data[model]!r}"}


def _failed(span: Any, scan: Scan) -> bool:
    return span.status.code == STATUS_CODE_ERROR or scan.has("error_type") or _langfuse_failed(scan)


def _langfuse_failed(scan: Scan) -> bool:
    level = scan.text("langfuse_level")
    return level is not None and level.upper() == c.LANGFUSE_ERROR_LEVEL


def has_tokens(scan: Scan) -> bool:
    return any(scan.has(f) for f in c.TOKEN_FIELDS)


def superseded(span: Any, scan: Scan) -> bool:
    """True for a span that looks like an LLM call but whose call another span records.

    Logfire's request span of a streamed call: it ends when the stream is returned, before any
    response, so it has no usage and no response id. When the stream has been read, Logfire
    writes a zero-length log span ("streaming response from ...") beside it, under the same
    parent (or as a root of a new trace when there is none) with the response, usage and
    errors: that log is the call. A request that failed before it returned a stream keeps its
    error on the request span, and no log follows: it is counted there.
    """
    if scan.text("logfire_span_type") != c.LOGFIRE_REQUEST_SPAN_TYPE:
        return False
    if scan.text("logfire_template") not in _LOGFIRE_STREAMABLE:
        return False
    return not (has_tokens(scan) or scan.has("response_id") or _failed(span, scan))


def adjust(record: RequestRecord, span: Any, scan: Scan) -> RequestRecord:
    """The record with the library-specific facts of its span applied."""
    changes: dict[str, Any] = {}
    if scan.has("langfuse_model"):
        _langfuse(record, span, scan, changes)
    if _is_logfire_stream_log(scan):
        _logfire_stream_log(record, scan, changes)
    if changes:
        record, changes = record._replace(**changes), {}
    no_usage = record.input_tokens is None and record.output_tokens is None
    echoed = record.status == "error" or record.operation != "embeddings"  # embeddings name it
    if no_usage and echoed and _same(record.response_model, record.request_model):
        # No response came, or none was read (a stream without usage): OpenInference's
        # llm.model_name and Logfire's gen_ai.response.model then repeat the model asked for
        # (OpenInference JS does so for every stream). It is not a model that answered.
        changes["response_model"] = None
    if record.cost_source == "reported" and record.cost_usd == 0 and record.status == "error" and no_usage:
        # Langfuse's OpenAI integration writes cost_details {"total": 0} on every failed call:
        # a placeholder, not a price. With no usage, nothing was reported.
        changes.update(cost_usd=None, cost_source=None)
    elif record.cost_source == "reported" and record.cost_usd == 0 and _zero_is_no_price(record, scan):
        # OpenLIT's 0 on a call that used tokens says it could not price it: priced from the tokens.
        changes.update(cost_usd=None, cost_source=None)
    return record._replace(**changes) if changes else record


def _zero_is_no_price(record: RequestRecord, scan: Scan) -> bool:
    """True when the reported cost 0 came from a key whose 0 means "no price" and tokens were used."""
    if not (record.input_tokens or record.output_tokens):
        return False
    key = next((key for key, value in scan.raw("cost") if value is not None and value != ""), None)
    return key in c.ZERO_IS_NO_PRICE_COST_KEYS


def _langfuse(record: RequestRecord, span: Any, scan: Scan, changes: dict[str, Any]) -> None:
    """Langfuse writes one model name, the last it knew, and (in its OpenAI integration) no provider.

    After a response the name is the response's model (a dated snapshot); when the call failed
    before one, or for an embedding or a stream (Langfuse JS), it is the model asked for. The
    OpenAI integration's default observation names say who was called.
    """
    model = scan.text("langfuse_model")
    answered = has_tokens(scan) or not _failed(span, scan)
    embedding = c.LANGFUSE_SPAN_NAME_OPERATIONS.get(span.name) == "embeddings"
    if embedding:  # an embeddings response names the model asked for: it is both
        if record.request_model is None:
            changes["request_model"] = model
        if answered and record.response_model is None:
            changes["response_model"] = model
    elif scan.first("langfuse_stream", as_bool):
        # Langfuse JS (whose model parameters say `stream`) reads no model from a stream's chunks:
        # the name stays the model asked for.
        if record.request_model is None:
            changes["request_model"] = model
    elif answered and record.response_model is None:
        changes["response_model"] = model
    elif not answered and record.request_model is None:
        changes["request_model"] = model
    if record.provider is None:
        provider = c.LANGFUSE_SPAN_NAME_PROVIDERS.get(span.name)
        if provider is not None:
            changes["provider"] = provider
    operation = c.LANGFUSE_SPAN_NAME_OPERATIONS.get(span.name)
    if operation is not None and not scan.has("operation"):
        changes["operation"] = operation
    if _langfuse_failed(scan) and record.status != "error":
        # Langfuse JS leaves the span status unset on a failed call; its level says ERROR.
        changes["status"] = "error"
        if record.error_type is None:
            changes["error_type"] = scan.text("langfuse_status_message") or c.LANGFUSE_ERROR_LEVEL
    changes.update(_langfuse_usage(record, scan))


def _langfuse_usage(record: RequestRecord, scan: Scan) -> dict[str, int]:
    """Input and output in OTel's sense from Langfuse's own usage object.

    Langfuse counts ``input`` and ``output`` without their details (``input_cached_tokens``,
    ``output_reasoning_tokens``, audio, ...): its total is the sum of every entry. Input
    includes cached tokens and output reasoning tokens here, so the details are added back.
    Only where the record's counts came from that object, and only its own shape (an ``input``
    entry; OpenAI's usage object passed on as it is has none).
    """
    try:
        usage = json.loads(scan.text("langfuse_usage") or "null")
    except ValueError:
        return {}
    if not isinstance(usage, dict):
        return {}
    out: dict[str, int] = {}
    for name, counted in (("input", record.input_tokens), ("output", record.output_tokens)):
        base = usage.get(name)
        if not _is_count(base) or counted != base:
            continue
        details = sum(v for k, v in usage.items() if k.startswith(name + "_") and _is_count(v))
        if details:
            out[f"{name}_tokens"] = base + details
    return out


def _is_count(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_TOKENS


def _is_logfire_stream_log(scan: Scan) -> bool:
    if scan.text("logfire_span_type") != c.LOGFIRE_LOG_SPAN_TYPE:
        return False
    template = scan.text("logfire_template")
    return template is not None and template.startswith(c.LOGFIRE_STREAM_LOG_TEMPLATE)


def _logfire_stream_log(record: RequestRecord, scan: Scan, changes: dict[str, Any]) -> None:
    """Logfire's streaming-response log is a streamed call; its ``duration`` attribute is the
    stream's length in seconds (the log itself has none), ending at the log's time."""
    changes["streaming"] = True
    seconds = scan.first("logfire_duration", _seconds)
    if seconds is None:
        return
    nanos = round(seconds * 1e9)
    if nanos > record.start_time_unix_nano:
        raise MappingError(f"duration is longer than the time since 1970: {seconds!r}")
    changes["start_time_unix_nano"] = record.start_time_unix_nano - nanos
    changes["duration_ms"] = record.duration_ms + nanos / 1e6


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if 0 <= value < 86_400 else None


# ---- the Vercel AI SDK, streams, providers, wrappers -------------------------------------------


class Verdict(NamedTuple):
    """What a library's own span name says: a model call or not, its operation, streamed or not."""

    is_call: bool
    operation: str | None
    streamed: bool | None


def ai_sdk_verdict(scan: Scan) -> Verdict | None:
    """The Vercel AI SDK's verdict on a span, or None when its span name is not one we know."""
    name = scan.text("ai_sdk_operation")
    if name is None:
        return None
    key = name.lower()
    if key not in c.AI_SDK_OPERATIONS:
        return None
    entry = c.AI_SDK_OPERATIONS[key]
    if entry is None:
        return Verdict(False, None, None)
    return Verdict(True, *entry)


def streaming(scan: Scan, operation: str | None = None) -> bool | None:
    """Whether the call streamed: a first chunk, else a declared flag, else the AI SDK's span name;
    an embedding (``operation``) never streams.

    A first chunk exists only in a stream, so it beats a flag saying not streamed: Langfuse's
    model parameters read as not streamed unless they name ``stream``, which its Python
    integration never does.
    """
    if scan.has("stream_marker"):
        return True
    declared = scan.first("streaming", as_bool)
    if declared is not None:
        return declared  # type: ignore[no-any-return]
    verdict = ai_sdk_verdict(scan)
    if verdict is not None and verdict.streamed is not None:
        return verdict.streamed
    # No embeddings API streams; a library that says nothing about it still made a plain call.
    return False if operation == "embeddings" or _logfire_answered_request(scan) else None


def _logfire_answered_request(scan: Scan) -> bool:
    """Logfire writes the response on its request span only when the call was not streamed (a
    stream's response goes to its streaming-response log): a request span holding usage or a
    response id was not streamed. Without a response (a failed call) it says nothing either way."""
    if scan.text("logfire_span_type") != c.LOGFIRE_REQUEST_SPAN_TYPE:
        return False
    if scan.text("logfire_template") not in _LOGFIRE_REQUESTS:
        return False
    return has_tokens(scan) or scan.has("response_id")


def provider(scan: Scan) -> str | None:
    """The provider, lower-case: API suffixes cut, aliases applied, LiteLLM's model prefix last."""
    name = scan.text("provider")
    name = name.strip().lower() if name is not None else ""
    if not name:
        called = scan.text("provider_model") or ""
        name = called.partition("/")[0].strip().lower() if "/" in called else ""
    if not name:
        return None
    for suffix in c.PROVIDER_API_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    return c.PROVIDER_ALIASES.get(name, name)


class Call(NamedTuple):
    """What ``wrappers`` needs of one span the mapper takes for a model call."""

    trace_id: bytes
    span_id: bytes
    parent: bytes
    operation: str | None
    has_tokens: bool
    counted: bool = True  # it maps to a record (a call that is rejected stands for no wrapper)


def wrappers(calls: Iterable[Call]) -> set[tuple[bytes, bytes]]:
    """(trace id, span id) of the token-less calls that are the parent of a call of their operation.

    Only a call that is counted (it maps to a record) stands for its parent: when the child is
    rejected (invalid ids, unreadable tokens, a bad time), the wrapper is the call's only record.
    Parent and wrapper are spans with valid ids: an all-zero parent id names no span.
    """
    calls = [call for call in calls if valid_ids(call.trace_id, call.span_id)]
    parents: set[tuple[bytes, bytes, Any]] = {
        (call.trace_id, call.parent, call.operation)
        for call in calls
        if call.counted and parent_hex(call.parent) is not None and call.parent != call.span_id
    }
    return {
        (call.trace_id, call.span_id)
        for call in calls
        if not call.has_tokens and (call.trace_id, call.span_id, call.operation) in parents
    }


def provider_sdk_duplicates(
    calls: Sequence[tuple[Any, Scan]], sdk: set[tuple[bytes, bytes]]
) -> dict[tuple[bytes, bytes], bytes]:
    """The provider SDK's own spans whose call an instrumentation span in the same request records:
    (trace id, span id) of each, and the span id of the instrumentation's span.

    anthropic (2.14+) makes a span of its own for every call once a tracer provider is set. Under
    OpenInference, OpenLLMetry or pydantic-ai the call then has two LLM spans: the SDK's is the
    child of the instrumentation's span, or its sibling under the same parent (a stream, and
    OpenLLMetry's calls), for the same model. The instrumentation's span is the call; each of its
    spans takes at most one SDK span, so two calls under one parent stay two. An SDK span whose
    instrumentation span is in another request is the store's to pair (``sdk_span_waits``).
    ``calls`` are the request's LLM spans with their scans; ``sdk`` those from an SDK's scope.
    """
    others = {
        (span.trace_id, span.span_id): scan
        for span, scan in calls
        if (span.trace_id, span.span_id) not in sdk
    }
    duplicates: dict[tuple[bytes, bytes], bytes] = {}
    taken: set[tuple[bytes, bytes]] = set()
    for span, _scan in calls:
        key, parent = (span.trace_id, span.span_id), (span.trace_id, span.parent_span_id)
        if key in sdk and parent in others and parent not in taken:
            duplicates[key] = span.parent_span_id
            taken.add(parent)
    free: dict[tuple[bytes, bytes, str], list[bytes]] = {}
    for span, scan in calls:
        key = (span.trace_id, span.span_id)
        if key not in sdk and key not in taken:
            free.setdefault((span.trace_id, span.parent_span_id, model_key(scan)), []).append(span.span_id)
    for span, scan in calls:
        key = (span.trace_id, span.span_id)
        group = free.get((span.trace_id, span.parent_span_id, model_key(scan)))
        if key in sdk and key not in duplicates and group:
            duplicates[key] = group.pop(0)
    return duplicates


# What a provider SDK's own span of a call records better than the instrumentation's span.
_SDK_COUNTS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cache_added_to_input",
    "streaming",
)


def with_provider_sdk_counts(record: RequestRecord, sdk: RequestRecord | None) -> RequestRecord:
    """The call's record with the token counts and stream flag of the provider SDK's own span of
    the same call (paired in this request), where that span has them.

    The SDK reads them from the provider's response; instrumentations count on their own, and
    miss: OpenLLMetry's Anthropic instrumentation adds ``message_start``'s output token to a
    stream's total (one too many) and records no stream flag, which the SDK's span has.
    """
    if sdk is None:
        return record
    counts = {name: getattr(sdk, name) for name in _SDK_COUNTS if getattr(sdk, name) is not None}
    if sdk.input_tokens is None:  # whether cache was added belongs to the input count kept
        counts.pop("cache_added_to_input", None)
    return record._replace(**counts) if counts else record


def sdk_span_waits(span: Any, streamed: bool | None, parent_in_request: bool) -> bool:
    """Whether a provider SDK's own span, not paired in its request, waits for an instrumentation
    span of the same call from another request (the store pairs them; ``store/counterparts.py``).

    The instrumentation's span is its parent or its sibling. A call that did not stream ends
    before its parent, and an exporter sends spans in the order they end: with the parent in
    the request, a sibling would be too. A stream may outlive its parent (a web handler that
    returns the stream), so its SDK span waits even then. A root span has no counterpart.
    """
    if len(span.parent_span_id) != 8 or not any(span.parent_span_id):
        return False
    return bool(streamed) or not parent_in_request


def model_key(scan: Scan) -> str:
    """The model a call asked for (else the one that answered), lower-case: how SDK spans pair."""
    return (scan.text("request_model") or scan.text("response_model") or "").lower()


def _same(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a.lower() == b.lower()
