"""The attribute conventions: which span attributes mean what, in every dialect we read.

This is data, not code. Each field lists its sources in priority order (first match wins).
A source is an attribute key, optionally with a key inside a JSON-encoded string value
(OpenInference's ``llm.invocation_parameters``, Langfuse's ``cost_details``).
``attributes.compile_conventions`` turns this table into a key -> targets index once at start-up,
so the per-span loop does one dictionary lookup per attribute.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    """One place a field can be read from: an attribute key, or a key inside its JSON value."""

    key: str
    # A key inside the JSON value; dots walk into nested objects when the value has no such key
    # ("prompt_tokens_details.cached_tokens").
    json_key: str | None = None
    # The value when the attribute is a JSON object without json_key (e.g. OpenAI's `stream`
    # parameter is false unless given).
    json_default: object = None


def _keys(*keys: str) -> tuple[Source, ...]:
    return tuple(Source(k) for k in keys)


# The Vercel AI SDK's identity keys. The application names the keys, so the usual spellings: v3-v6
# `experimental_telemetry.metadata` (on every span of a call), v7 `runtimeContext` kept by
# `telemetry.includeRuntimeContext` (on the root and step spans), and the Traceloop SDK's processor,
# which moves the metadata to association properties as spelled.
_AI_SDK_USER = (
    "ai.telemetry.metadata.userId",
    "ai.telemetry.metadata.user_id",
    "ai.settings.context.userId",
    "ai.settings.context.user_id",
    "traceloop.association.properties.userId",
)
_AI_SDK_SESSION = (
    "ai.telemetry.metadata.sessionId",
    "ai.telemetry.metadata.session_id",
    "ai.settings.context.sessionId",
    "ai.settings.context.session_id",
    "traceloop.association.properties.sessionId",
)


# field -> sources, first match wins. Identity fields (user_id, session_id) are inherited from
# ancestor spans of the same trace; the rest belong to the LLM span itself.
FIELDS: dict[str, tuple[Source, ...]] = {
    "user_id": _keys(
        "user.id",
        "langfuse.user.id",
        "traceloop.association.properties.user_id",
        *_AI_SDK_USER,
        "enduser.id",
        # The OpenAI `user` request parameter, as instrumentations record it.
        "gen_ai.request.user",
        "gen_ai.user",
        "llm.user",
    )
    + (
        Source("llm.invocation_parameters", "user"),
        Source("embedding.invocation_parameters", "user"),
        # Helicone-User-Id captured by an HTTP client instrumentation (string[] value; Python and
        # Node contrib instrumentations write `-` as `_` in the header name).
        Source("http.request.header.helicone-user-id"),
        Source("http.request.header.helicone_user_id"),
    ),
    "session_id": _keys(
        "session.id",
        "langfuse.session.id",
        "traceloop.association.properties.session_id",
        *_AI_SDK_SESSION,
        "http.request.header.helicone-session-id",
        "http.request.header.helicone_session_id",
    ),
    # A GenAI conversation id is the session only when no session id is on the span, its
    # ancestors or the resource: pydantic-ai writes a new one per agent run (inheritance.py).
    "conversation_id": _keys("gen_ai.conversation.id"),
    "operation": _keys("gen_ai.operation.name", "llm.request.type"),
    "openinference_kind": _keys("openinference.span.kind"),
    # The Vercel AI SDK's own name of the span (v3-v6, v7 LegacyOpenTelemetry): see AI_SDK_OPERATIONS.
    "ai_sdk_operation": _keys("ai.operationId"),
    # Attributes recorded only when a response was streamed (the AI SDK's time to first chunk).
    # A first chunk, which only a stream has. Langfuse's Python OpenAI integration writes its
    # completion start time on streamed calls only.
    "stream_marker": _keys(
        "ai.response.msToFirstChunk",
        "gen_ai.client.operation.time_to_first_chunk",
        "langfuse.observation.completion_start_time",
    ),
    # LiteLLM's `provider/model` as called, for the provider when gen_ai.system is empty.
    "provider_model": _keys("litellm.provider.model"),
    "langfuse_type": _keys("langfuse.observation.type"),
    # Langfuse's usage object as written (dialects.py adds its `input_*`/`output_*` details back),
    # and its level and message, which say that a call failed where the span status does not (JS).
    "langfuse_usage": _keys("langfuse.observation.usage_details"),
    "langfuse_level": _keys("langfuse.observation.level"),
    # A stream as Langfuse JS declares it (Python's model parameters never name `stream`): its
    # model name is then the one asked for, as it reads no model from the chunks.
    "langfuse_stream": (Source("langfuse.observation.model.parameters", "stream"),),
    "langfuse_status_message": _keys("langfuse.observation.status_message"),
    "response_model": _keys(
        "gen_ai.response.model",
        "llm.response.model_name",
        "llm.model_name",
        "embedding.model_name",
        "ai.response.model",  # Vercel AI SDK
    ),
    "request_model": _keys(
        "gen_ai.request.model",
        "llm.request.model",
        "llm.request.model_name",  # OpenInference Anthropic 3.x
        "embedding.model_name",
    )
    + (
        Source("llm.invocation_parameters", "model"),
        Source("embedding.invocation_parameters", "model"),
    )
    + _keys("ai.model.id"),
    # Langfuse's one model name: the response's after a response, else the one asked for (dialects.py).
    "langfuse_model": _keys("langfuse.observation.model.name"),
    "provider": _keys(
        "gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system", "ai.model.provider"
    ),
    # The API the call went to, so pricing can tell the real provider behind an OpenAI client
    # (a host, or OpenLLMetry's base URL).
    "server_address": _keys("server.address", "gen_ai.openai.api_base"),
    "input_tokens": _keys(
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.prompt_tokens",
        "llm.usage.prompt_tokens",
        "llm.token_count.prompt",
    )
    + (
        Source("langfuse.observation.usage_details", "input"),
        Source("langfuse.observation.usage_details", "prompt_tokens"),
        Source("langfuse.observation.usage_details", "input_tokens"),  # OpenAI Responses API
    )
    # Vercel AI SDK: v5+ (input including cache), v4, and embeddings.
    + _keys("ai.usage.inputTokens", "ai.usage.promptTokens", "ai.usage.tokens"),
    "output_tokens": _keys(
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.completion_tokens",
        "llm.usage.completion_tokens",
        "llm.token_count.completion",
    )
    + (
        Source("langfuse.observation.usage_details", "output"),
        Source("langfuse.observation.usage_details", "completion_tokens"),
        Source("langfuse.observation.usage_details", "output_tokens"),
    )
    + _keys("ai.usage.outputTokens", "ai.usage.completionTokens"),  # Vercel AI SDK (incl. reasoning)
    "cache_read_tokens": _keys(
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_read_input_tokens",
        "llm.token_count.prompt_details.cache_read",
        "gen_ai.usage.details.cache_read_tokens",  # pydantic-ai
        "ai.usage.inputTokenDetails.cacheReadTokens",  # Vercel AI SDK v6+
        "ai.usage.cachedInputTokens",  # Vercel AI SDK v5+
    )
    + (
        # Langfuse's OpenAI integration passes OpenAI's usage object on as it is.
        Source("langfuse.observation.usage_details", "prompt_tokens_details.cached_tokens"),
        Source("langfuse.observation.usage_details", "input_tokens_details.cached_tokens"),
        Source("langfuse.observation.usage_details", "cache_read_input_tokens"),
        Source("langfuse.observation.usage_details", "input_cached_tokens"),  # Langfuse JS
        Source("metadata.usage_object", "prompt_tokens_details.cached_tokens"),  # LiteLLM
    ),
    "cache_write_tokens": _keys(
        "gen_ai.usage.cache_write.input_tokens",
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_creation_input_tokens",
        "llm.token_count.prompt_details.cache_write",
        "gen_ai.usage.details.cache_write_tokens",  # pydantic-ai
        "ai.usage.inputTokenDetails.cacheWriteTokens",  # Vercel AI SDK v6+
    )
    + (Source("langfuse.observation.usage_details", "cache_creation_input_tokens"),),
    "reasoning_tokens": _keys(
        "gen_ai.usage.reasoning.output_tokens",
        "gen_ai.usage.reasoning_tokens",
        "llm.usage.reasoning_tokens",
        "llm.token_count.completion_details.reasoning",
        "gen_ai.usage.details.reasoning_tokens",  # pydantic-ai
        "ai.usage.outputTokenDetails.reasoningTokens",  # Vercel AI SDK v6+ (v7: `usage: true`)
        "ai.usage.reasoningTokens",  # Vercel AI SDK v5+
    )
    + (
        Source("langfuse.observation.usage_details", "completion_tokens_details.reasoning_tokens"),
        Source("langfuse.observation.usage_details", "output_tokens_details.reasoning_tokens"),
        Source("langfuse.observation.usage_details", "output_reasoning_tokens"),  # Langfuse JS
        # Logfire writes reasoning only inside the provider's raw usage object.
        Source("gen_ai.usage.raw", "completion_tokens_details.reasoning_tokens"),
        Source("gen_ai.usage.raw", "output_tokens_details.reasoning_tokens"),
        Source("metadata.usage_object", "completion_tokens_details.reasoning_tokens"),  # LiteLLM
    ),
    "cost": _keys("gen_ai.usage.cost", "llm.cost.total", "operation.cost")
    + (Source("langfuse.observation.cost_details", "total"),)
    + _keys("gen_ai.cost.total_cost"),  # LiteLLM's own cost of the call
    "streaming": _keys(
        "gen_ai.request.stream", "gen_ai.is_streaming", "llm.is_streaming", "gen_ai.request.is_stream"
    )
    + (
        Source("llm.invocation_parameters", "stream", json_default=False),
        Source("embedding.invocation_parameters", "stream", json_default=False),
        Source("langfuse.observation.model.parameters", "stream", json_default=False),  # Langfuse JS
    ),
    "error_type": _keys("error.type"),
    "response_id": _keys("gen_ai.response.id"),
    # Logfire: "span" or "log", and the message template that names what the span is.
    "logfire_span_type": _keys("logfire.span_type"),
    "logfire_template": _keys("logfire.msg_template"),
    "logfire_duration": _keys("duration"),  # seconds, on Logfire's streaming-response log
}

# Fields that an LLM span inherits from its ancestors (nearest first) and, last, from the resource.
IDENTITY_FIELDS = ("user_id", "session_id")

# Fields that must be whole, non-negative numbers.
TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)

# What marks a span as an LLM call: a model operation, an LLM kind, or (for an unknown operation
# or none) a model attribute together with a token attribute. Keys are the field names above.
MODEL_OPERATIONS = frozenset(
    {"chat", "generate_content", "text_completion", "completion", "embeddings", "embedding"}
)
LLM_KIND_VALUES = {
    "openinference_kind": frozenset({"llm", "embedding"}),
    "langfuse_type": frozenset({"generation", "embedding"}),
}
# GenAI operations that describe work around model calls, not a model call: an agent span carries
# aggregated usage of the calls inside it, so counting it would count those tokens twice.
NON_MODEL_OPERATIONS = frozenset(
    {
        "invoke_agent",
        "create_agent",
        "execute_tool",
        "invoke_workflow",
        "retrieval",
        "plan",
        "workflow",
        "task",
        "tool",
        "agent",
        "rerank",
    }
)
# How operation names are written down (older OpenLLMetry `llm.request.type`, OpenInference kinds).
OPERATION_ALIASES = {
    "completion": "text_completion",
    "embedding": "embeddings",
    "llm": "chat",
    "generation": "chat",
}

# The Vercel AI SDK's span names (`ai.operationId`, lower-cased) -> (operation, streamed), or None
# for the spans around the provider calls: `ai.generateText` and the like hold the summed usage of
# all their steps, so only the per-call span inside (`.doGenerate`, `.doStream`, `.doEmbed`) is a
# request. This decides for AI SDK spans whatever else they declare (the Traceloop processor adds
# GenAI names to both). Names not listed here fall back to the general rules.
AI_SDK_OPERATIONS: dict[str, tuple[str, bool | None] | None] = {
    "ai.generatetext.dogenerate": ("chat", False),
    "ai.generateobject.dogenerate": ("chat", False),
    "ai.streamtext.dostream": ("chat", True),
    "ai.streamobject.dostream": ("chat", True),
    "ai.embed.doembed": ("embeddings", None),
    "ai.embedmany.doembed": ("embeddings", None),
    "ai.generatetext": None,
    "ai.generateobject": None,
    "ai.streamtext": None,
    "ai.streamobject": None,
    "ai.embed": None,
    "ai.embedmany": None,
    "ai.toolcall": None,
    "ai.rerank": None,
}

# Custom properties: these prefixes are stripped and the rest of the key, lower-cased, is the
# property name. Earlier prefixes win when two name the same property on one span.
PROPERTY_PREFIXES = (
    "property.",
    "helicone.property.",
    "traceloop.association.properties.",
    "langfuse.trace.metadata.",
    "langfuse.metadata.",
    "langfuse.observation.metadata.",
    "http.request.header.helicone-property-",
    "http.request.header.helicone_property_",
    "ai.telemetry.metadata.",  # Vercel AI SDK v3-v6
    "ai.settings.context.",  # Vercel AI SDK v7 (@ai-sdk/otel with `runtimeContext: true`)
)
# Property names under those prefixes that are identity, not properties.
PROPERTY_EXCLUDED = frozenset({"user_id", "session_id"})
# Attributes whose value is a JSON object of properties (its top-level scalar keys).
PROPERTY_JSON_KEYS = ("metadata",)

# Property prefixes whose values are JSON-encoded (Langfuse v5 encodes every metadata value,
# strings included: "\"free\""). A value that is a JSON string is stored decoded.
JSON_VALUED_PROPERTY_PREFIXES = frozenset(
    {"langfuse.trace.metadata.", "langfuse.metadata.", "langfuse.observation.metadata."}
)
# LangChain's run metadata (LangSmith's `ls_*`, `lc_versions`), copied by OpenLLMetry and OpenInference.
LANGCHAIN_METADATA = frozenset(
    """ls_provider ls_model_name ls_model_type ls_integration ls_temperature ls_max_tokens ls_stop
    ls_structured_output_format ls_embedding_provider ls_agent_type lc_versions""".split()  # noqa: SIM905
)
# Property names a library writes under a prefix or in a JSON key, beside the application's: not properties.
# Langfuse's OpenAI integration puts the finish reason, structured-output formats and (for a
# streamed Responses API call) the response's own fields in the observation metadata.
LIBRARY_PROPERTY_NAMES = {
    "langfuse.observation.metadata.": frozenset(
        """
        finish_reason response_format text_format id object status error incomplete_details
        instructions max_output_tokens max_tool_calls parallel_tool_calls previous_response_id
        reasoning service_tier temperature tool_choice tools top_logprobs top_p truncation
        background conversation prompt prompt_cache_key prompt_cache_retention safety_identifier
        completed_at user
        """.split()  # noqa: SIM905 (one word list keeps the table short)
    ),
    "traceloop.association.properties.": LANGCHAIN_METADATA,
    "metadata": LANGCHAIN_METADATA,
}

# Library-specific rules (dialects.py).
# Provider SDKs that make a span of their own for every call once a tracer provider is set
# (anthropic 2.14+). Under an instrumentation's span for the same call it is not a second call.
PROVIDER_SDK_SCOPES = frozenset({"com.anthropic.sdk.python"})
# Frameworks whose LLM span wraps a client instrumentation's span of the call (framework_spans.py).
FRAMEWORK_SCOPES = frozenset({"openinference.instrumentation.langchain"})
# Langfuse's OpenAI integration names no provider; its default observation names do.
LANGFUSE_SPAN_NAME_PROVIDERS = {
    "OpenAI-generation": "openai",
    "OpenAI-embedding": "openai",
    "OpenAI.chat": "openai",  # Langfuse JS observeOpenAI
    "OpenAI.embeddings": "openai",
}
# ... and what they called, where the observation type says only "generation" (JS embeddings).
LANGFUSE_SPAN_NAME_OPERATIONS = {"OpenAI-embedding": "embeddings", "OpenAI.embeddings": "embeddings"}
# What a library writes in place of a value it withheld: no value. Logfire's scrubber replaces
# values whose key looks sensitive ("session", "auth", ...; on pydantic-ai's spans `session.id`).
REDACTED_VALUE_PREFIXES = ("[Scrubbed due to ",)
# Langfuse's level of a failed observation.
LANGFUSE_ERROR_LEVEL = "ERROR"
# Logfire records a streamed call twice: the request span (no response: no usage, no response
# id) and, once the stream is read, a zero-length log with this template holding the response.
LOGFIRE_STREAM_LOG_TEMPLATE = "streaming response from "
LOGFIRE_REQUEST_SPAN_TYPE = "span"
LOGFIRE_LOG_SPAN_TYPE = "log"

# Resource attributes.
SERVICE_NAME_KEY = "service.name"
ENVIRONMENT_KEYS = ("deployment.environment.name", "deployment.environment")

# Provider names as instrumentations write them -> the stored, lower-case name.
PROVIDER_ALIASES = {
    "az.ai.openai": "azure.ai.openai",
    "az.ai.inference": "azure.ai.inference",
    # Vercel AI SDK provider ids (API suffix removed), as its v7 OpenTelemetry integration names them.
    "google.generative-ai": "gcp.gemini",
    "google.vertex": "gcp.vertex_ai",
    "google-vertex": "gcp.vertex_ai",
    "amazon-bedrock": "aws.bedrock",
    "azure-openai": "azure.ai.openai",
}
# The Vercel AI SDK's provider ids name the API after the provider (`openai.chat`,
# `openai.responses`, `anthropic.messages`, `openai.embedding`): the API is cut off.
PROVIDER_API_SUFFIXES = (".chat", ".responses", ".messages", ".completion", ".embedding", ".textembedding")

# Attributes whose value is a Python literal (`str(dict)`: single quotes, None), not JSON, read like
# a JSON object: LiteLLM's `metadata.usage_object`, the provider's usage with OpenAI's nested cached
# and reasoning counts (which LiteLLM writes nowhere else).
PYTHON_LITERAL_KEYS = frozenset({"metadata.usage_object"})
# Cost keys whose 0 is no price: OpenLIT writes `gen_ai.usage.cost` 0 whenever its price list
# (fetched from GitHub at start-up) lacks the model or could not be fetched, or pricing failed. A
# call that used tokens and reports 0 there is priced from the tokens instead.
ZERO_IS_NO_PRICE_COST_KEYS = frozenset({"gen_ai.usage.cost"})

# ---- the coverage report (coverage_scan.py) -----------------------------------------------------
# A span the rules above do not count still "looks like" an LLM call when it has one of these
# fields, or an attribute no convention reads whose key starts with one of LLM_LIKE_PREFIXES and
# contains one of LLM_LIKE_WORDS (the AI SDK's `ai.model.id`, `ai.usage.tokens`). A span whose
# declared operation is one of NON_MODEL_OPERATIONS is skipped on purpose and never listed.
LLM_LIKE_FIELDS = ("request_model", "response_model", *TOKEN_FIELDS, "cost")
LLM_LIKE_PREFIXES = ("gen_ai.", "llm.", "ai.", "embedding.", "langfuse.observation.")
LLM_LIKE_WORDS = ("model", "usage", "token", "cost")
# Span names that look like a call but never are one: LiteLLM's `raw_gen_ai_request`, the provider's
# raw request and answer (`llm.<provider>.model`, `llm.<provider>.usage`) beneath the call's span.
NOT_CALL_SPAN_NAMES = frozenset({"raw_gen_ai_request"})
