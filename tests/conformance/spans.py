"""Spans as the library sent them (from the recorded Export requests), flattened, and the search
for where a fact lives on them: which span represents each call, and what the library reported."""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

APP_SCOPE = "conformance.app"
# Spans the provider's own client SDK makes (anthropic>=2 traces its calls itself), and HTTP client
# spans beneath the call (OpenLIT instruments httpx too): the call is the instrumentation library's
# span when there is one.
SDK_SCOPES = ("com.anthropic.sdk.python", "opentelemetry.instrumentation.httpx")


def any_value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind) if kind else None


def flatten(bodies: list[bytes]) -> list[dict[str, Any]]:
    """Every span of the recorded requests as a plain dict (hex ids), sorted by start time."""
    out = []
    for i, body in enumerate(bodies, 1):
        request = ExportTraceServiceRequest.FromString(body)
        for rs in request.resource_spans:
            resource = {kv.key: any_value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    out.append(
                        {
                            "file": f"traces-{i:04d}",
                            "resource": resource,
                            "scope": {"name": ss.scope.name, "version": ss.scope.version},
                            "name": s.name,
                            "kind": Span.SpanKind.Name(s.kind),
                            "trace_id": s.trace_id.hex(),
                            "span_id": s.span_id.hex(),
                            "parent_span_id": s.parent_span_id.hex(),
                            "start_unix_nano": s.start_time_unix_nano,
                            "duration_ms": (s.end_time_unix_nano - s.start_time_unix_nano) / 1e6,
                            "status": {
                                "code": Status.StatusCode.Name(s.status.code),
                                "message": s.status.message,
                            },
                            "attributes": {kv.key: any_value(kv.value) for kv in s.attributes},
                            "events": [e.name for e in s.events],
                            "links": len(s.links),
                        }
                    )
    return sorted(out, key=lambda s: (s["start_unix_nano"], s["span_id"]))


def leaves(value: Any, path: str) -> list[tuple[str, Any]]:
    """(key path, value) of every scalar in an attribute value, JSON strings (and Python literals:
    LiteLLM writes `str(dict)`) opened."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            value = json.loads(value)
        except ValueError:
            try:
                value = ast.literal_eval(value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                return [(path, value)]
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in leaves(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [leaf for i, v in enumerate(value) for leaf in leaves(v, f"{path}.{i}")]
    return [(path, value)]


def span_leaves(span: dict[str, Any]) -> list[tuple[str, Any, str]]:
    return [(p, v, k) for k, value in span["attributes"].items() for p, v in leaves(value, k)]


def call_spans(spans: list[dict[str, Any]], trace_id: str, t0: float, t1: float) -> list[dict[str, Any]]:
    """The library's spans of one call: its trace (the scenario's), or, when the library has none
    there (LiteLLM's callback for a stream runs without the caller's context), those started in its
    window."""
    mine = [s for s in spans if s["trace_id"] == trace_id and s["scope"]["name"] != APP_SCOPE]
    if not mine:
        mine = [s for s in spans if t0 * 1e9 - 5e6 <= s["start_unix_nano"] <= t1 * 1e9 + 5e6]
    return [s for s in mine if s["scope"]["name"] != APP_SCOPE]


def window_spans(spans: list[dict[str, Any]], t0: float, t1: float) -> list[dict[str, Any]]:
    """Spans of other traces started during a call (e.g. a log span for the end of a stream)."""
    return [
        s
        for s in spans
        if t0 * 1e9 <= s["start_unix_nano"] <= t1 * 1e9 + 5e6 and s["scope"]["name"] != APP_SCOPE
    ]


def pick_call_span(
    mine: list[dict[str, Any]], server_ts: float | None, pattern: str | None
) -> dict[str, Any] | None:
    """The span that represents the call: the one matching ``pattern``, else the shortest span that
    encloses the moment the provider was called, else the last-started one."""
    if not mine:
        return None
    mine = [s for s in mine if s["scope"]["name"] not in SDK_SCOPES] or mine
    if pattern:
        named = [s for s in mine if re.search(pattern, s["name"])]
        if named:
            return named[0]
    if server_ts is not None:
        t = server_ts * 1e9
        enclosing = [
            s for s in mine if s["start_unix_nano"] <= t <= s["start_unix_nano"] + s["duration_ms"] * 1e6
        ]
        if enclosing:
            return min(enclosing, key=lambda s: s["duration_ms"])
    return mine[-1]


def ancestors(span: dict[str, Any], spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_id = {(s["trace_id"], s["span_id"]): s for s in spans}
    out = []
    parent = by_id.get((span["trace_id"], span["parent_span_id"]))
    while parent is not None and len(out) < 50:
        out.append(parent)
        parent = by_id.get((parent["trace_id"], parent["parent_span_id"]))
    return out


def token_key(path: str) -> bool:
    low = path.lower()
    return "token" in low or "usage" in low


def stream_key(path: str) -> bool:
    low = path.lower()
    return "stream" in low and "stream_options" not in low


def reported(
    span: dict[str, Any], chain: list[dict[str, Any]], truth: dict[str, Any], call: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """role -> {attribute key: value} for what the call's span (or an ancestor) reported, found by
    matching values against ground truth (``key @parent-name`` for ancestors)."""
    out: dict[str, dict[str, Any]] = {}

    def add(role: str, key: str, value: Any) -> None:
        out.setdefault(role, {})[key] = value

    for where in [span, *chain]:
        suffix = "" if where is span else f" @{where['name']}"
        for path, value, key in span_leaves(where):
            raw = where["attributes"][key]
            name = key + suffix
            if isinstance(value, bool) or value is None:
                if stream_key(path) and where is span and isinstance(value, bool):
                    add("stream", name, raw)
                continue
            if (
                isinstance(value, str)
                and stream_key(path)
                and value.lower() in ("true", "false")
                and where is span
            ):
                add("stream", name, raw)
            if call["user"] and value == call["user"]:
                add("user_id", name, raw)
            if call["session"] and value == call["session"]:
                add("session_id", name, raw)
            for prop, want in call["properties"].items():
                if value == want and path.lower().endswith(prop):
                    add(prop, name, raw)
            if value == call["model"]:
                add("request_model", name, raw)
            if truth.get("response_model") and value == truth["response_model"]:
                add("response_model", name, raw)
            if (
                where is not span
                or not isinstance(value, int)
                or not token_key(path)
                or not truth.get("usage_reported")
            ):
                continue
            # Input without cache reads (and writes): Anthropic's input_tokens, Langfuse's "input";
            # output without reasoning: Langfuse's "output".
            uncached = unreasoned = None
            if truth.get("cache_write_tokens") is not None:
                uncached = truth["prompt_tokens"] - truth["cached_tokens"] - truth["cache_write_tokens"]
            elif truth.get("cached_tokens"):
                uncached = truth["prompt_tokens"] - truth["cached_tokens"]
            if truth.get("reasoning_tokens") and truth.get("completion_tokens") is not None:
                unreasoned = truth["completion_tokens"] - truth["reasoning_tokens"]
            low = path.lower()
            if (
                value in (truth.get("prompt_tokens"), uncached)
                and ("input" in low or "prompt" in low)
                and "cache" not in low
            ):
                add("input_tokens", name, raw)
            if (
                value in (truth.get("completion_tokens"), unreasoned)
                and ("output" in low or "completion" in low)
                and "reason" not in low
            ):
                add("output_tokens", name, raw)
            if (
                value == truth.get("cached_tokens")
                and "cache" in low
                and "creat" not in low
                and "write" not in low
            ):
                add("cached_tokens", name, raw)
            if value == truth.get("cache_write_tokens") and ("creat" in low or "write" in low):
                add("cache_write_tokens", name, raw)
            if value == truth.get("reasoning_tokens") and "reason" in low:
                add("reasoning_tokens", name, raw)
            total = (truth.get("prompt_tokens") or 0) + (truth.get("completion_tokens") or 0)
            if value == total and "total" in low:
                add("total_tokens", name, raw)
    return out
