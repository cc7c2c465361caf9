"""The coverage report on real instrumentation output: every recorded capture (tests/captures/) sent
to a running service over gRPC, and what GET /api/v1/coverage says about it."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest
from conftest import (
    CAPTURE_NAMES,
    Service,
    capture_expected,
    capture_requests,
    capture_settings,
    capture_spans,
)
from senders import raw_export

from user_metrics.ingest import conventions

EVER = "since=2000-01-01&until=2100-01-01&limit=1000"


def report(name: str, tmp_path: Path) -> dict[str, Any]:
    # Run as the capture was recorded (e.g. with the --property-keys its library needs).
    svc = Service(tmp_path / f"{name}.duckdb", attribution_window_seconds=0, **capture_settings(name))
    svc.start()
    try:
        for body in capture_requests(name):
            answer = raw_export(svc.target, body)
            assert not answer.partial_success.rejected_spans, answer.partial_success.error_message
        assert svc.app is not None
        with urlopen(f"{svc.app.api_url}/api/v1/coverage?{EVER}", timeout=30) as response:
            return dict(json.loads(response.read()))
    finally:
        svc.stop()


def llm_span_scopes(name: str) -> Counter[tuple[str, str | None]]:
    """The instrumentation scope of each call's LLM span, from the capture's own span listing (a
    call the library exported no span for has none)."""
    spans = capture_spans(name)
    scopes = (spans[e["llm_span"]["span_id"]]["scope"] for e in capture_expected(name) if e["llm_span"])
    return Counter((s["name"], s["version"] or None) for s in scopes)


def read_keys() -> tuple[set[str], tuple[str, ...]]:
    keys = {source.key for sources in conventions.FIELDS.values() for source in sources}
    return keys | set(conventions.PROPERTY_JSON_KEYS), conventions.PROPERTY_PREFIXES


@pytest.mark.parametrize("name", CAPTURE_NAMES)
def test_a_capture_gets_a_sensible_report(name: str, tmp_path: Path) -> None:
    """Per scope of the library's LLM spans: its requests, the shares its ground truth gives (the
    anonymous call has no user and no session; a user inherited from the application's span
    counts; a fact the library itself did not send does not), no LLM-looking span skipped (each
    call is counted), and unread keys that no convention reads (the capture's [conventions] settings
    are read), most frequent first, never more often than once per LLM span and numbered segments."""
    answer = report(name, tmp_path)
    expected = [e for e in capture_expected(name) if e["llm_span"]]  # calls the library sent a span for
    scopes = {(s["scope_name"], s["scope_version"]): s for s in answer["scopes"]}
    assert Counter({k: s["requests"] for k, s in scopes.items()}) == llm_span_scopes(name)
    sent = {
        field: [field not in e.get("library_gaps", ()) for e in expected] for field in ("user", "session")
    }
    assert sum(s["with_user"] for s in scopes.values()) == sum(
        e["user_id"] is not None and ok for e, ok in zip(expected, sent["user"], strict=True)
    )
    assert sum(s["with_session"] for s in scopes.values()) == sum(
        (e["session_id"] or e.get("library_session_id")) is not None and ok
        for e, ok in zip(expected, sent["session"], strict=True)
    )
    anonymous = [e["n"] for e in expected if e["user_id"] is None]
    assert anonymous == [11]
    # All but the anonymous call, and those the library did not send a user for (expected.jsonl's
    # library_gaps: OpenLIT names no user on a failed call).
    assert sum(s["with_user"] for s in scopes.values()) == len(expected) - 1 - sent["user"].count(False)
    keys, prefixes = read_keys()
    for entry in answer["spans"]:
        assert entry["llm_like_skipped"] == 0, entry["skipped_span_names"]
        counts = [k["count"] for k in entry["unread_keys"]]
        assert counts == sorted(counts, reverse=True)
        for k in entry["unread_keys"]:
            assert k["key"] not in keys and not k["key"].startswith(prefixes), k
            assert k["key"] not in capture_settings(name).get("property_keys", ()), "read as a property"
            assert ".0." not in k["key"] and ".1." not in k["key"], "numbered segments are written *"


def test_the_reports_name_what_the_libraries_send_that_is_not_read(tmp_path: Path) -> None:
    """What an operator learns from the old captures: openai-v2's embeddings come from another scope
    than its chat calls; OpenLLMetry's total token count and OpenInference's message keys are not
    read; the contrib instrumentation puts no user on its LLM spans, yet they inherit one."""
    v2 = report("otel-contrib-openai-v2", tmp_path)
    by_scope = {s["scope_name"]: s for s in v2["scopes"]}
    assert by_scope["opentelemetry.util.genai.handler"]["requests"] == 11
    assert by_scope["opentelemetry.instrumentation.openai_v2"]["requests"] == 1
    assert sum(s["with_user"] for s in v2["scopes"]) == 11
    unread = {k["key"] for e in v2["spans"] for k in e["unread_keys"]}
    assert {"gen_ai.input.messages", "server.port"} <= unread
    openllmetry = report("openllmetry-standalone", tmp_path)
    (entry,) = openllmetry["spans"]
    assert {"key": "gen_ai.usage.total_tokens", "count": 9} in entry["unread_keys"]
    openinference = report("openinference-openai", tmp_path)
    (entry,) = openinference["spans"]
    assert entry["unread_keys"][0]["key"].startswith("llm.input_messages.*.message.")
    assert {"key": "llm.token_count.total", "count": 9} in entry["unread_keys"]


# The keys this version added to the conventions for the Vercel AI SDK (issue 15), by prefix.
AI_SDK_KEYS = ("ai.", "traceloop.association.properties.userId", "traceloop.association.properties.sessionId")


def test_fed_to_the_conventions_before_the_fixes_the_report_names_what_was_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The AI SDK v6 capture, read with the conventions as they were before its dialect was added
    (no `ai.*` key, no AI SDK metadata prefix): the report shows 9 requests, none with a user or a
    session; the failed calls' and the embedding's spans as LLM-looking spans skipped; and the AI
    SDK's user, session, property, cache and reasoning keys as unread on the stored ones. With
    today's conventions all 12 calls are stored and none of those keys is unread."""
    before = {
        field: tuple(s for s in sources if not s.key.startswith(AI_SDK_KEYS))
        for field, sources in conventions.FIELDS.items()
    }
    monkeypatch.setattr(conventions, "FIELDS", before)
    prefixes = tuple(p for p in conventions.PROPERTY_PREFIXES if not p.startswith(AI_SDK_KEYS))
    monkeypatch.setattr(conventions, "PROPERTY_PREFIXES", prefixes)
    (tmp_path / "before").mkdir()
    old = report("js-ai-sdk-v6", tmp_path / "before")
    ((scope,), (entry,)) = old["scopes"], old["spans"]
    assert (scope["requests"], scope["with_user"], scope["with_session"]) == (9, 0, 0)
    skipped = {k["key"]: k["count"] for k in entry["skipped_span_names"]}
    assert (skipped["ai.generateText.doGenerate"], skipped["ai.embed.doEmbed"]) == (2, 1)
    unread = {k["key"]: k["count"] for k in entry["unread_keys"]}
    missing = {
        "ai.telemetry.metadata.userId",
        "ai.telemetry.metadata.sessionId",
        "ai.telemetry.metadata.plan",
        "ai.usage.cachedInputTokens",
        "ai.usage.reasoningTokens",
        "ai.model.provider",
    }
    assert missing <= set(unread), unread
    assert unread["ai.usage.cachedInputTokens"] == 9 and unread["ai.telemetry.metadata.userId"] == 8
    monkeypatch.undo()
    now = report("js-ai-sdk-v6", tmp_path)
    ((scope,), (entry,)) = now["scopes"], now["spans"]
    assert (scope["requests"], scope["with_user"], scope["with_session"]) == (12, 11, 11)
    assert not missing & {k["key"] for k in entry["unread_keys"]}
