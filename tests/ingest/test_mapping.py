"""The mapper reads every dialect in the conventions table, and rejects what it cannot read."""

from __future__ import annotations

import json
import os
from decimal import Decimal

import pytest
from otlp import ANTHROPIC_OPENLLMETRY, T0, chat, request, span

from user_metrics.ingest.attributes import compile_conventions
from user_metrics.ingest.mapping import map_request

NOW = T0 + 10**12


def map_one(attrs: dict, **kw):  # type: ignore[no-untyped-def]
    mapped = map_request(request([span(attrs)], **kw), compile_conventions(), now_unix_nano=NOW)
    assert mapped.rejected == [], mapped.rejected
    assert len(mapped.records) == 1
    return mapped.records[0]


class TestDialects:
    def test_langfuse_attributes(self) -> None:
        """Langfuse: generation type, model name, usage and cost JSON, metadata prefixes."""
        r = map_one(
            {
                "langfuse.observation.type": "generation",
                "langfuse.user.id": "lf-user",
                "langfuse.session.id": "lf-sess",
                "langfuse.observation.model.name": "gpt-4o",
                "langfuse.observation.usage_details": json.dumps({"input": 10, "output": 5}),
                "langfuse.observation.cost_details": json.dumps({"total": 0.0125}),
                "langfuse.trace.metadata.plan": "pro",
                "langfuse.observation.metadata.Feature": "search",
            }
        )
        # Langfuse's one model name is the response's once a response came (dialects.py).
        assert (r.user_id, r.session_id, r.response_model) == ("lf-user", "lf-sess", "gpt-4o")
        assert (r.input_tokens, r.output_tokens) == (10, 5)
        assert r.cost_usd == Decimal("0.0125") and r.cost_source == "reported"
        assert r.properties == {"plan": "pro", "feature": "search"}
        assert r.operation == "chat"

    def test_an_embedding_is_not_streamed_unless_a_span_says_otherwise(self) -> None:
        """No embeddings API streams: an embedding with no stream flag is stored as not streamed; a
        chat with none stays unknown, and a declared flag is kept."""
        embed = {
            "gen_ai.operation.name": "embeddings",
            "gen_ai.request.model": "text-embedding-3-small",
            "gen_ai.usage.input_tokens": 8,
        }
        assert map_one(embed).streaming is False
        assert map_one(chat("u", "gpt-4o", 1, 1)).streaming is None
        assert map_one(chat("u", "gpt-4o", 1, 1, **{"gen_ai.request.stream": True})).streaming is True

    def test_openlit_bare_property_keys_and_cost(self) -> None:
        """OpenLIT: gen_ai.system, gen_ai.request.user, gen_ai.usage.cost, operator-listed bare keys."""
        conv = compile_conventions(["plan", "Feature"])
        attrs = {
            "gen_ai.system": "OpenAI",
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.request.user": "ol-user",
            "gen_ai.usage.input_tokens": 7,
            "gen_ai.usage.output_tokens": 3,
            "gen_ai.usage.cost": 0.5,
            "gen_ai.request.is_stream": True,
            "plan": "team",
            "Feature": "chat",
            "unrelated": "x",
        }
        mapped = map_request(request([span(attrs)]), conv, now_unix_nano=NOW)
        (r,) = mapped.records
        assert (r.user_id, r.provider, r.streaming) == ("ol-user", "openai", True)
        assert r.cost_usd == Decimal("0.5")
        assert r.properties == {"plan": "team", "feature": "chat"}

    def test_logfire_span_without_operation(self) -> None:
        """Logfire: gen_ai.system + model + tokens with no operation name is an LLM call; operation.cost read."""
        r = map_one(
            {
                "gen_ai.system": "anthropic",
                "gen_ai.request.model": "claude-3-5-sonnet",
                "gen_ai.response.model": "claude-3-5-sonnet-20241022",
                "gen_ai.usage.input_tokens": 11,
                "gen_ai.usage.output_tokens": 22,
                "operation.cost": 0.000363,
            }
        )
        assert (r.provider, r.response_model, r.operation) == (
            "anthropic",
            "claude-3-5-sonnet-20241022",
            None,
        )
        assert r.cost_usd == Decimal("0.000363")

    def test_older_openllmetry_keys(self) -> None:
        """Older spans: capitalised gen_ai.system, prompt/completion tokens, llm.request.type, llm.is_streaming."""
        r = map_one(
            {
                "gen_ai.system": "OpenAI",
                "llm.request.type": "completion",
                "gen_ai.request.model": "gpt-3.5-turbo-instruct",
                "gen_ai.usage.prompt_tokens": 12,
                "gen_ai.usage.completion_tokens": 4,
                "gen_ai.usage.cache_read_input_tokens": 2,
                "gen_ai.usage.cache_creation_input_tokens": 3,
                "llm.is_streaming": False,
                "llm.user": "old-user",
            }
        )
        assert (r.provider, r.operation, r.user_id, r.streaming) == (
            "openai",
            "text_completion",
            "old-user",
            False,
        )
        assert (r.input_tokens, r.output_tokens, r.cache_read_tokens, r.cache_write_tokens) == (12, 4, 2, 3)

    def test_helicone_header_bridge(self) -> None:
        """Helicone headers captured as http.request.header.* string arrays, in dash and underscore forms."""
        r = map_one(
            chat(
                user=None,
                **{
                    "http.request.header.helicone-user-id": ["hc-user"],
                    "http.request.header.helicone-property-plan": ["enterprise"],
                    "http.request.header.helicone_property_region": ["eu"],
                },
            )
        )
        assert r.user_id == "hc-user"
        assert r.properties == {"plan": "enterprise", "region": "eu"}

    def test_priority_first_match_wins(self) -> None:
        """user.id beats gen_ai.user; response model is separate from request model; empty strings are missing."""
        r = map_one(
            chat(user="", **{"enduser.id": "eu", "gen_ai.user": "param", "gen_ai.response.model": "snap"})
        )
        assert r.user_id == "eu"
        assert (r.request_model, r.response_model) == ("gpt-4o-mini", "snap")

    def test_token_values_as_double_and_numeric_string(self) -> None:
        """Token counts may be int, whole double or numeric string."""
        r = map_one(chat(inp=0, **{"gen_ai.usage.input_tokens": 12.0, "gen_ai.usage.output_tokens": "34"}))
        assert (r.input_tokens, r.output_tokens) == (12, 34)

    def test_user_from_resource_when_no_span_has_one(self) -> None:
        """A user on the resource applies when the span and its ancestors name none."""
        r = map_one(
            chat(user=None),
            resource={"service.name": "svc", "user.id": "res-user", "deployment.environment": "prod"},
        )
        assert (r.user_id, r.service_name, r.environment) == ("res-user", "svc", "prod")

    def test_agent_and_tool_spans_are_not_requests(self) -> None:
        """invoke_agent / execute_tool spans carry gen_ai.* keys but are not model calls."""
        conv = compile_conventions()
        agent = span(chat(**{"gen_ai.operation.name": "invoke_agent"}))
        tool = span({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"})
        http = span({"http.request.method": "POST", "url.full": "https://api.openai.com/v1/chat"})
        mapped = map_request(request([agent, tool, http]), conv, now_unix_nano=NOW)
        assert mapped.records == [] and mapped.rejected == [] and mapped.skipped == 3


class TestInheritance:
    def test_nearest_ancestor_wins_and_properties_merge(self) -> None:
        """User/session from the nearest ancestor; properties merge with the nearer value per key."""
        tid = os.urandom(16)
        root, mid, leaf = os.urandom(8), os.urandom(8), os.urandom(8)
        spans = [
            span(
                {
                    "user.id": "root-user",
                    "session.id": "s-root",
                    "property.plan": "free",
                    "property.region": "us",
                },
                trace_id=tid,
                span_id=root,
            ),
            span({"user.id": "mid-user", "property.plan": "pro"}, trace_id=tid, span_id=mid, parent=root),
            span(chat(user=None, **{"property.feature": "chat"}), trace_id=tid, span_id=leaf, parent=mid),
        ]
        (r,) = map_request(request(spans), compile_conventions(), now_unix_nano=NOW).records
        assert (r.user_id, r.session_id) == ("mid-user", "s-root")
        assert r.properties == {"plan": "pro", "region": "us", "feature": "chat"}
        assert r.parent_span_id == mid.hex()

    def test_own_attributes_win_over_ancestors(self) -> None:
        """The LLM span's own user beats its parent's."""
        tid, parent = os.urandom(16), os.urandom(8)
        spans = [
            span({"user.id": "parent"}, trace_id=tid, span_id=parent),
            span(chat(user="own"), trace_id=tid, parent=parent),
        ]
        (r,) = map_request(request(spans), compile_conventions(), now_unix_nano=NOW).records
        assert r.user_id == "own"

    def test_parent_in_another_trace_does_not_apply(self) -> None:
        """A span id that matches but belongs to another trace is not an ancestor."""
        parent = os.urandom(8)
        spans = [span({"user.id": "stranger"}, span_id=parent), span(chat(user=None), parent=parent)]
        (r,) = map_request(request(spans), compile_conventions(), now_unix_nano=NOW).records
        assert r.user_id is None

    def test_parent_cycle_terminates(self) -> None:
        """Spans that name each other as parents (malformed input) do not loop."""
        tid, a, b = os.urandom(16), os.urandom(8), os.urandom(8)
        spans = [
            span({"user.id": "x"}, trace_id=tid, span_id=a, parent=b),
            span(chat(user=None), trace_id=tid, span_id=b, parent=a),
        ]
        (r,) = map_request(request(spans), compile_conventions(), now_unix_nano=NOW).records
        assert r.user_id == "x"


class TestRejections:
    @pytest.mark.parametrize(
        ("attrs", "message"),
        [
            ({"gen_ai.usage.input_tokens": "lots"}, "gen_ai.usage.input_tokens is not a number: 'lots'"),
            ({"gen_ai.usage.input_tokens": -5}, "gen_ai.usage.input_tokens is negative"),
            (
                {"gen_ai.usage.output_tokens": float("nan")},
                "gen_ai.usage.output_tokens is not a whole token count",
            ),
            ({"gen_ai.usage.output_tokens": 1.5}, "gen_ai.usage.output_tokens is not a whole token count"),
            ({"gen_ai.usage.input_tokens": True}, "gen_ai.usage.input_tokens is not a token count"),
            ({"gen_ai.usage.cost": "free"}, "gen_ai.usage.cost is not a number"),
            ({"gen_ai.usage.cost": -1.0}, "gen_ai.usage.cost is not a cost in USD"),
            # Found by the fuzz suite: sums of such values overflowed the store and failed every retry.
            ({"gen_ai.usage.input_tokens": 2**62}, "gen_ai.usage.input_tokens is too large for one request"),
            (
                {"gen_ai.usage.output_tokens": "1e16"},
                "gen_ai.usage.output_tokens is too large for one request",
            ),
            ({"gen_ai.usage.cost": 5e8}, "gen_ai.usage.cost is not a cost in USD"),
            # Each count within bounds, but input plus cache (input counted without cache) is not.
            (
                {
                    "gen_ai.usage.input_tokens": 10**10,
                    "gen_ai.usage.cache_read.input_tokens": 10**10,
                    "gen_ai.usage.cache_write.input_tokens": 1,
                },
                "input tokens plus cache tokens are too many for one request",
            ),
        ],
    )
    def test_unreadable_values_reject_only_that_span(self, attrs: dict, message: str) -> None:
        """A bad value rejects its span with a message naming the attribute; the other span is kept."""
        bad = span(chat(**attrs), name="bad-span")
        good = span(chat(user="fine"))
        mapped = map_request(request([bad, good]), compile_conventions(), now_unix_nano=NOW)
        assert [r.user_id for r in mapped.records] == ["fine"]
        (rejection,) = mapped.rejected
        assert message in rejection.reason
        assert rejection.span_id == bad.span_id.hex() and rejection.name == "bad-span"

    @pytest.mark.parametrize(
        ("kw", "message"),
        [
            ({"start": 0}, "no start time"),
            ({"start": NOW + 2 * 86_400 * 10**9}, "in the future"),
            ({"duration_ns": -5}, "ends before it starts"),
            ({"trace_id": b"\x01" * 8}, "trace id must be 16"),
            ({"span_id": b"\x00" * 8}, "span id must be 8"),
        ],
    )
    def test_bad_times_and_ids(self, kw: dict, message: str) -> None:
        """Spans with unusable timestamps or ids are rejected, not stored."""
        mapped = map_request(request([span(chat(), **kw)]), compile_conventions(), now_unix_nano=NOW)
        assert mapped.records == []
        assert message in mapped.rejected[0].reason

    @pytest.mark.parametrize(
        "kw, attrs",
        [
            ({"span_id": b"\x00" * 8}, {}),  # invalid ids
            ({"start": 0}, {}),  # no start time
            ({}, {"gen_ai.usage.input_tokens": -3}),  # unreadable tokens
        ],
    )
    def test_a_wrapper_over_a_rejected_call_stays_the_call(self, kw: dict, attrs: dict) -> None:
        """A token-less call over a call of its operation is a wrapper, skipped for its child; but a
        child that is rejected stands for nothing, so the wrapper is the only record of the call."""
        trace = os.urandom(16)
        wrapper = span({"gen_ai.operation.name": "chat"}, trace_id=trace)
        child = span({"gen_ai.operation.name": "chat", **attrs}, trace_id=trace, parent=wrapper.span_id, **kw)
        mapped = map_request(request([child, wrapper]), compile_conventions(), now_unix_nano=NOW)
        assert [r.span_id for r in mapped.records] == [wrapper.span_id.hex()]
        assert [r.span_id for r in mapped.rejected] == [child.span_id.hex()]
        valid = span({"gen_ai.operation.name": "chat"}, trace_id=trace, parent=wrapper.span_id)
        mapped = map_request(request([valid, wrapper]), compile_conventions(), now_unix_nano=NOW)
        assert ([r.span_id for r in mapped.records], mapped.skipped) == ([valid.span_id.hex()], 1)

    def test_an_all_zero_parent_names_no_wrapper(self) -> None:
        """A call whose parent id is all zero has no parent: a call with the all-zero span id (not a
        valid id: rejected) is not its wrapper."""
        trace = os.urandom(16)
        child = span({"gen_ai.operation.name": "chat"}, trace_id=trace, parent=b"\x00" * 8)
        zero = span({"gen_ai.operation.name": "chat"}, trace_id=trace, span_id=b"\x00" * 8)
        mapped = map_request(request([child, zero]), compile_conventions(), now_unix_nano=NOW)
        assert [r.span_id for r in mapped.records] == [child.span_id.hex()]
        assert [r.span_id for r in mapped.rejected] == [zero.span_id.hex()]

    def test_duplicate_span_in_one_request_is_one_record(self) -> None:
        """The same (trace_id, span_id) twice in a request maps to one record."""
        s = span(chat())
        mapped = map_request(request([s, s]), compile_conventions(), now_unix_nano=NOW)
        assert len(mapped.records) == 1

    def test_long_values_are_truncated_and_counted(self) -> None:
        """Values over the length limit are cut, and the cut is counted."""
        conv = compile_conventions(max_value_length=16)
        mapped = map_request(
            request([span(chat(user="u" * 100, **{"property.note": "n" * 100}))]), conv, now_unix_nano=NOW
        )
        (r,) = mapped.records
        assert r.user_id == "u" * 16 and r.properties == {"note": "n" * 16}
        assert mapped.truncated_values == 2

    def test_bare_property_key_that_clashes_is_refused(self) -> None:
        """An operator property key that already means something is a configuration error."""
        with pytest.raises(ValueError, match="already has a meaning"):
            compile_conventions(["user.id"])


class TestHostileValues:
    """Regressions the fuzz suite (test_fuzz.py) found, kept as plain examples."""

    def test_deeply_nested_json_in_an_attribute_is_not_json_to_us(self) -> None:
        record = map_one(
            chat(user="deep", **{"llm.invocation_parameters": '{"a": ' * 5000, "metadata": "[" * 5000})
        )
        assert record.user_id == "deep"

    def test_lone_surrogates_spelled_in_json_become_replacement_characters(self) -> None:
        attrs = chat(
            user=None,
            **{"llm.invocation_parameters": '{"user": "a\\ud800b"}', "metadata": '{"plan": "\\udfff"}'},
        )
        record = map_one(attrs)
        assert (record.user_id, record.properties) == ("a\ufffdb", {"plan": "\ufffd"})
        record.user_id.encode("utf-8")  # storable

    def test_escaped_valid_pairs_stay_one_character(self) -> None:
        record = map_one(chat(user=None, **{"llm.invocation_parameters": '{"user": "\\ud83d\\ude42"}'}))
        assert record.user_id == "\U0001f642"

    @pytest.mark.parametrize("usage", [{}, {"llm.token_count.prompt": 10, "llm.token_count.completion": 5}])
    def test_a_response_model_repeating_the_request_without_usage_is_no_response_model(
        self, usage: dict
    ) -> None:
        """OpenInference JS writes the model asked for as llm.model_name on a stream it read no usage
        from: with no usage, a response model equal to the request's names no model that answered
        (none is stored); with usage it is kept."""
        r = map_one(
            {
                "openinference.span.kind": "LLM",
                "llm.system": "openai",
                "llm.model_name": "gpt-4o-mini",
                "llm.invocation_parameters": json.dumps({"model": "gpt-4o-mini", "stream": True}),
                **usage,
            }
        )
        assert r.request_model == "gpt-4o-mini" and r.status == "ok"
        assert r.response_model == ("gpt-4o-mini" if usage else None)

    @pytest.mark.parametrize("parent", [b"\x01" * 7, b"\x01" * 5000, b"\x00" * 8])
    def test_an_invalid_parent_span_id_is_no_parent(self, parent: bytes) -> None:
        mapped = map_request(request([span(chat(), parent=parent)]), compile_conventions(), now_unix_nano=NOW)
        assert mapped.records[0].parent_span_id is None


class TestInputWithoutCache:
    """Anthropic counts input without cache; instrumentations pass that on. Stored input includes cache."""

    @pytest.mark.parametrize(
        "attrs",
        [
            ANTHROPIC_OPENLLMETRY,
            {  # OpenInference's Anthropic instrumentation
                "openinference.span.kind": "LLM",
                "llm.provider": "anthropic",
                "llm.model_name": "claude-sonnet-4-20250514",
                "llm.token_count.prompt": 12,
                "llm.token_count.completion": 300,
                "llm.token_count.prompt_details.cache_read": 5000,
                "llm.token_count.prompt_details.cache_write": 1000,
            },
            {  # Anthropic's usage block copied under the GenAI names
                "gen_ai.operation.name": "chat",
                "gen_ai.system": "anthropic",
                "gen_ai.request.model": "claude-sonnet-4-20250514",
                "gen_ai.usage.input_tokens": 12,
                "gen_ai.usage.output_tokens": 300,
                "gen_ai.usage.cache_read.input_tokens": 5000,
                "gen_ai.usage.cache_creation.input_tokens": 1000,
            },
        ],
    )
    def test_cache_larger_than_input_is_added_and_flagged(self, attrs: dict) -> None:
        """Cache read + write above the input count: input was exclusive; the sum is stored, flagged."""
        r = map_one(attrs)
        assert (r.input_tokens, r.cache_read_tokens, r.cache_write_tokens) == (6012, 5000, 1000)
        assert r.output_tokens == 300 and r.cache_added_to_input is True

    def test_cache_without_input_is_the_input(self) -> None:
        """Cache counts with no input count: the input is the cache."""
        attrs = chat(**{"gen_ai.usage.cache_read.input_tokens": 700})
        del attrs["gen_ai.usage.input_tokens"]
        r = map_one(attrs)
        assert (r.input_tokens, r.cache_read_tokens, r.cache_added_to_input) == (700, 700, True)

    @pytest.mark.parametrize(
        ("cache", "flag"),
        [
            ({"gen_ai.usage.cache_read.input_tokens": 11}, False),
            ({}, False),
            ({"gen_ai.usage.cache_read.input_tokens": 0}, False),
        ],
    )
    def test_input_that_includes_cache_is_kept(self, cache: dict, flag: bool) -> None:
        """OpenAI-style counts (cache within input) and spans without cache are stored as sent."""
        r = map_one(chat(inp=33, **cache))
        assert (r.input_tokens, r.cache_added_to_input) == (33, flag)

    def test_exclusive_input_above_its_cache_cannot_be_told_and_is_kept(self) -> None:
        """Exclusive input larger than its cache looks like inclusive input: stored as sent."""
        r = map_one(chat(inp=5000, **{"gen_ai.usage.cache_read.input_tokens": 1000}))
        assert (r.input_tokens, r.cache_added_to_input) == (5000, False)

    def test_no_token_counts_is_not_flagged(self) -> None:
        """A stream without usage has nothing to add."""
        attrs = chat()
        del attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]
        r = map_one(attrs)
        assert (r.input_tokens, r.cache_added_to_input) == (None, False)


class TestServerAddress:
    def test_server_address_and_openllmetry_api_base_are_read(self) -> None:
        """server.address (semconv host) wins over OpenLLMetry's gen_ai.openai.api_base URL."""
        both = {"server.address": "api.groq.com", "gen_ai.openai.api_base": "https://openrouter.ai/api/v1"}
        assert map_one(chat(**both)).server_address == "api.groq.com"
        base = {"gen_ai.openai.api_base": "https://openrouter.ai/api/v1"}
        assert map_one(chat(**base)).server_address == "https://openrouter.ai/api/v1"
        assert map_one(chat()).server_address is None

    @pytest.mark.parametrize(
        ("capture", "address"),
        [("otel-contrib-openai-v2", "127.0.0.1"), ("openllmetry-standalone", "http://127.0.0.1:")],
    )
    def test_captures_carry_their_api_address(self, capture: str, address: str) -> None:
        """The real instrumentations' spans yield the address they sent the call to."""
        from conftest import capture_requests
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        records = [
            r
            for body in capture_requests(capture)
            for r in map_request(
                ExportTraceServiceRequest.FromString(body), compile_conventions(), now_unix_nano=2**63 - 1
            ).records
        ]
        assert len(records) == 12
        assert all(r.server_address is not None and r.server_address.startswith(address) for r in records)
