"""pydantic-ai's own OpenTelemetry instrumentation, in the shape pydantic-ai 2.62.0 exports.

Recorded with pydantic-ai 2.62.0 (`Agent.instrument_all`), openai 3.57.0, opentelemetry-sdk 1.45.2:
the application's `handle_request` span holds user.id and session.id; under it an
`invoke_agent <name>` span (aggregated usage) and a `chat <model>` span per model request. Both
carry `gen_ai.conversation.id`: a new UUID7 per run unless the application passes
`conversation_id=`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ingested import stored_rows
from otlp import T0, request, span

from user_metrics.ingest.attributes import compile_conventions
from user_metrics.ingest.mapping import map_request

NOW = T0 + 10**12
RUN_UUID = "01a22bb0-d404-7350-9b7c-20237cf2db22"
USAGE = {
    "gen_ai.usage.input_tokens": 25,
    "gen_ai.usage.output_tokens": 49,
    "gen_ai.usage.cache_read.input_tokens": 5,
    "gen_ai.usage.details.accepted_prediction_tokens": 0,
    "gen_ai.usage.details.audio_tokens": 0,
    "gen_ai.usage.details.reasoning_tokens": 12,
    "gen_ai.usage.details.rejected_prediction_tokens": 0,
    "gen_ai.usage.details.cache_read_tokens": 5,
}


def run(conversation: str, app: dict[str, Any], *, error: bool = False) -> tuple[Any, Any, Any]:
    """(application span, agent span, chat span) of one agent run, as pydantic-ai links them."""
    trace, root, agent_id = os.urandom(16), os.urandom(8), os.urandom(8)
    common = {
        "gen_ai.agent.name": "oa_agent",
        "gen_ai.agent.call.id": "01a22bb0-d404-7350-9b7c-2022802ae0c9",
        "gen_ai.conversation.id": conversation,
    }
    agent_attrs = {
        "model_name": "gpt-4o-mini",
        "agent_name": "oa_agent",
        "gen_ai.operation.name": "invoke_agent",
        "logfire.msg": "oa_agent run",
        **common,
    }
    chat_attrs = {
        "gen_ai.provider.name": "openai",
        "gen_ai.system": "openai",
        "server.address": "127.0.0.1",
        "server.port": 18080,
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.operation.name": "chat",
        **common,
    }
    if not error:
        agent_attrs.update(
            {k.replace("gen_ai.usage.", "gen_ai.aggregated_usage."): v for k, v in USAGE.items()}
        )
        chat_attrs.update(
            {
                **USAGE,
                "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
                "operation.cost": 3.2775e-05,
                "gen_ai.response.id": "chatcmpl-1",
                "gen_ai.response.finish_reasons": ["stop"],
            }
        )
    app_span = span(app, trace_id=trace, span_id=root, name="handle_request")
    agent = span(
        agent_attrs, trace_id=trace, span_id=agent_id, parent=root, name="invoke_agent oa_agent", error=error
    )
    chat = span(chat_attrs, trace_id=trace, parent=agent_id, name="chat gpt-4o-mini", error=error)
    return app_span, agent, chat


def test_the_applications_session_beats_the_per_run_conversation_id(tmp_path: Path) -> None:
    """session.id on an ancestor wins over pydantic-ai's generated gen_ai.conversation.id; only the
    chat span is a request (not the agent span with its aggregated usage); reasoning is read."""
    app, agent, chat = run(RUN_UUID, {"user.id": "user-alice", "session.id": "sess-alice-01"})
    (row,) = stored_rows(tmp_path / "um.duckdb", request([chat, agent, app]), clock=NOW)
    assert row["span_id"] == chat.span_id.hex()
    assert (row["user_id"], row["session_id"]) == ("user-alice", "sess-alice-01")
    assert (row["input_tokens"], row["output_tokens"], row["cache_read_tokens"], row["reasoning_tokens"]) == (
        25,
        49,
        5,
        12,
    )


def test_without_a_session_id_the_conversation_id_is_the_session(tmp_path: Path) -> None:
    """No session id anywhere: the conversation id the application passed is the session."""
    app, agent, chat = run("conv-bob-7", {"user.id": "user-bob"})
    (row,) = stored_rows(tmp_path / "um.duckdb", request([chat, agent, app]), clock=NOW)
    assert (row["user_id"], row["session_id"]) == ("user-bob", "conv-bob-7")


def test_a_conversation_id_on_the_span_itself_is_the_session_of_manual_semconv_spans() -> None:
    """Hand-made GenAI spans with gen_ai.conversation.id on the LLM span and no session.id keep it."""
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o",
        "user.id": "u1",
        "gen_ai.conversation.id": "conv-1",
        "gen_ai.usage.input_tokens": 3,
    }
    (record,) = map_request(request([span(attrs)]), compile_conventions(), now_unix_nano=NOW).records
    assert record.session_id == "conv-1"


def test_a_span_waiting_for_its_ancestors_takes_their_session_not_the_conversation_id(tmp_path: Path) -> None:
    """When the application's span arrives in a later export, its session.id still wins."""
    app, agent, chat = run(RUN_UUID, {"user.id": "user-alice", "session.id": "sess-alice-01"})
    # The attribution deadline runs on the wall clock: give the Ingestor that clock.
    later = request([app])
    (row,) = stored_rows(tmp_path / "um.duckdb", request([chat, agent]), later, clock=time.time_ns())
    assert (row["user_id"], row["session_id"]) == ("user-alice", "sess-alice-01")


def test_a_failed_model_request_is_an_error_and_the_failed_run_is_not_counted(tmp_path: Path) -> None:
    """A 500: the chat span (status ERROR, no usage) is one error request; the agent span is not."""
    app, agent, chat = run(RUN_UUID, {"user.id": "user-alice"}, error=True)
    (row,) = stored_rows(tmp_path / "um.duckdb", request([chat, agent, app]), clock=NOW)
    assert (row["span_id"], row["status"], row["cost_source"]) == (chat.span_id.hex(), "error", "no_usage")


def test_a_value_logfire_scrubbed_is_no_value() -> None:
    """Logfire scrubs `session.id` (any key with "session", "auth", ...) on pydantic-ai's spans,
    baggage included: "[Scrubbed due to 'session']" is no session id (every user's runs would be
    one session) nor a property value; the run's conversation id is then the session."""
    scrubbed = "[Scrubbed due to 'session']"
    app, agent, chat = run(RUN_UUID, {"user.id": "user-alice", "session.id": scrubbed})
    for s in (agent, chat):
        s.attributes.extend(
            span({"session.id": scrubbed, "plan": "free", "session_kind": scrubbed}).attributes
        )
    conventions = compile_conventions(["plan", "session_kind"])
    (record,) = map_request(request([chat, agent, app]), conventions, now_unix_nano=NOW).records
    assert (record.user_id, record.session_id) == ("user-alice", RUN_UUID)
    assert record.properties == {"plan": "free"}
