"""The libraries the conformance suite tries, and the scenario's calls.

A library is a scenario script plus what to install: pip packages into its own venv (``kind``
"python"), or npm packages into its own folder (``kind`` "node", a ``.mjs`` script run by node
with the same contract, see scenarios/common.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

OTEL_HTTP = ["opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http"]
# The OpenTelemetry JS SDK a Node application sets up itself (scenarios/common.mjs, otelProvider),
# pinned to its newest complete line: the registry has @opentelemetry/api 1.10.0 and part of the
# SDK 3.x line (resources 3.1, exporters 0.301) but no sdk-trace-node/-base 3.x, and the newest of
# those (2.12.1) accept only @opentelemetry/api <1.10, so unpinned npm stops with ERESOLVE. Raise
# these when sdk-trace-node 3 is published.
OTEL_JS = [
    "@opentelemetry/api@~1.9",
    "@opentelemetry/sdk-trace-node@2",
    "@opentelemetry/sdk-trace-base@2",
    "@opentelemetry/resources@2",
    "@opentelemetry/exporter-trace-otlp-proto@~0.223",
]
OTEL_JS_INSTRUMENTATION = "@opentelemetry/instrumentation@~0.223"
# The oldest Node major the JavaScript libraries run on (ai 6/7, @ai-sdk/openai 3+ declare
# engines.node >=22): with an older system node the runner installs the `node@<major>` npm package.
NODE_MAJOR = 22


@dataclass(frozen=True)
class Library:
    name: str  # also the capture directory under tests/captures/
    packages: list[str]  # what to install (pip or npm)
    script: str  # under scenarios/
    provider: str  # "openai" or "anthropic": which flavour of the scenario
    version_of: list[str]  # the packages whose versions the table shows
    doc: str  # where the library documents attaching user, session, metadata
    kind: str = "python"
    service_args: list[str] = field(default_factory=list)
    # Attribute keys where the library reports its own cost (the truth for cost when present).
    reported_cost_keys: tuple[str, ...] = ()
    # A regex on span names: the span that represents the call, when it is not the innermost one.
    call_span: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    # pip constraints (`-c`): what the resolver cannot find out alone here (each with its reason).
    constraints: tuple[str, ...] = ()
    # A package released in lock-step with the bare-named packages it requires (OpenLLMetry's
    # traceloop-sdk requires ~30 `opentelemetry-instrumentation-*` with no version): its latest
    # release is installed with each of them pinned to the same version, or pip backtracks for
    # longer than the suite's time-out through every older release of each.
    release_line: str | None = None


# opentelemetry-python-contrib 0.66b2 is published for some packages only (logging, redis,
# requests, sqlalchemy, ...; not threading or urllib3, whose newest is 0.66b1): a library that
# requires several of them unpinned sends pip backtracking for longer than the suite's time-out,
# or to ResolutionImpossible. They are pinned to the newest complete line (a `<0.66b2` range
# still makes pip give up): raise CONTRIB when contrib publishes a newer complete one.
CONTRIB = "0.66b1"


def contrib(*names: str) -> tuple[str, ...]:
    return (
        f"opentelemetry-instrumentation=={CONTRIB}",
        *(f"opentelemetry-instrumentation-{name}=={CONTRIB}" for name in names),
    )


# traceloop-sdk 0.62.4: its milvus and pinecone instrumentations (0.61+) need
# opentelemetry-semantic-conventions-ai>=0.5.2, which the index does not have (0.5.1 is the
# newest).
TRACELOOP_CONSTRAINTS = (
    "opentelemetry-instrumentation-milvus<0.61",
    "opentelemetry-instrumentation-pinecone<0.61",
    *contrib("logging", "redis", "requests", "sqlalchemy", "threading", "urllib3"),
)

# Logfire's log span for the end of a streamed call (a sibling of its request span).
LOGFIRE_STREAM_LOG = r"^streaming response from "

LIBRARIES = [
    Library(
        "openai-v2",
        # 2.4b0 imports httpx without requiring it, and opentelemetry.util.genai.instruments,
        # which opentelemetry-util-genai 1.2b0 removed (it asks for >=0.4b0.dev, unbounded).
        [
            "opentelemetry-instrumentation-openai-v2",
            "openai",
            "httpx",
            "opentelemetry-util-genai>=1.0b0,<1.2b0",  # a pre-release lower bound lets pip take one
            *OTEL_HTTP,
        ],
        "openai_v2.py",
        "openai",
        ["opentelemetry-instrumentation-openai-v2", "opentelemetry-util-genai", "openai"],
        "https://opentelemetry-python-contrib.readthedocs.io/en/latest/instrumentation-genai/openai.html",
    ),
    Library(
        "traceloop-openai",
        # traceloop-sdk 0.62.4 imports httpx (traceloop.sdk.evaluator) without requiring it
        ["traceloop-sdk", "openai", "httpx"],
        "traceloop_openai.py",
        "openai",
        ["traceloop-sdk", "opentelemetry-instrumentation-openai", "openai"],
        "https://www.traceloop.com/docs/openllmetry/tracing/association",
        constraints=TRACELOOP_CONSTRAINTS,
        release_line="traceloop-sdk",
    ),
    Library(
        "openinference-openai",
        ["openinference-instrumentation-openai", "openai", *OTEL_HTTP],
        "openinference_openai.py",
        "openai",
        ["openinference-instrumentation-openai", "openinference-instrumentation", "openai"],
        "https://arize-ai.github.io/openinference/python/openinference-instrumentation/",
    ),
    Library(
        "openinference-anthropic",
        ["openinference-instrumentation-anthropic", "anthropic", *OTEL_HTTP],
        "openinference_anthropic.py",
        "anthropic",
        ["openinference-instrumentation-anthropic", "openinference-instrumentation", "anthropic"],
        "https://arize-ai.github.io/openinference/python/openinference-instrumentation/",
    ),
    Library(
        "openlit",
        ["openlit", "openai"],
        "openlit_openai.py",
        "openai",
        ["openlit", "openai"],
        "https://docs.openlit.io/latest/sdk-configuration",
        service_args=["--property-keys", "plan", "--property-keys", "feature"],  # the flag repeats
        constraints=contrib(
            *("aiohttp-client", "asgi", "django", "falcon", "fastapi", "flask", "httpx"),
            *("pyramid", "requests", "starlette", "tornado", "urllib", "urllib3"),
        ),
    ),
    Library(
        "logfire-openai",
        ["logfire", "openai"],
        "logfire_openai.py",
        "openai",
        ["logfire", "openai"],
        "https://logfire.pydantic.dev/docs/integrations/llms/openai/",
        # Logfire adds baggage to spans as bare attributes: `plan` and `feature` are properties
        service_args=["--property-keys", "plan", "--property-keys", "feature"],  # the flag repeats
        # A streamed call's response and usage are on Logfire's "streaming response" log, not on
        # the request span that encloses the moment the provider was called.
        call_span=LOGFIRE_STREAM_LOG,
    ),
    Library(
        "logfire-anthropic",
        ["logfire", "anthropic"],
        "logfire_anthropic.py",
        "anthropic",
        ["logfire", "anthropic"],
        "https://logfire.pydantic.dev/docs/integrations/llms/anthropic/",
        # Logfire adds baggage to spans as bare attributes: `plan` and `feature` are properties
        service_args=["--property-keys", "plan", "--property-keys", "feature"],  # the flag repeats
        # A streamed call's response and usage are on Logfire's "streaming response" log, not on
        # the request span that encloses the moment the provider was called.
        call_span=LOGFIRE_STREAM_LOG,
    ),
    Library(
        "langfuse-openai",
        ["langfuse", "openai"],
        "langfuse_openai.py",
        "openai",
        ["langfuse", "openai"],
        "https://langfuse.com/docs/integrations/openai/python/get-started",
    ),
    Library(
        "pydantic-ai",
        ["pydantic-ai-slim[openai]", "logfire"],
        "pydantic_ai_openai.py",
        "openai",
        ["pydantic-ai-slim", "logfire", "openai"],
        "https://ai.pydantic.dev/logfire/",
        # Logfire adds baggage to spans as bare attributes: `plan` and `feature` are properties
        service_args=["--property-keys", "plan", "--property-keys", "feature"],  # the flag repeats
    ),
    Library(
        "litellm",
        ["litellm", "openai", *OTEL_HTTP],
        "litellm_otel.py",
        "openai",
        ["litellm", "openai"],
        "https://docs.litellm.ai/docs/observability/opentelemetry_integration",
        reported_cost_keys=("gen_ai.cost.total_cost",),
        call_span=r"^litellm_request$",
        # Since 1.81.0 the callback writes a call onto the application's span around it instead of
        # a `litellm_request` span of its own; the sync client's callback runs after that span has
        # ended, so everything is dropped ("Setting attribute on ended span"; 1.110.2), and several
        # calls under one span overwrite each other (LiteLLM's docs say so). The documented switch
        # back to one span per call:
        env={"USE_OTEL_LITELLM_REQUEST_SPAN": "true"},
    ),
    Library(
        "traceloop-anthropic",
        # traceloop-sdk 0.62.4 imports httpx (traceloop.sdk.evaluator) without requiring it
        ["traceloop-sdk", "anthropic", "httpx"],
        "traceloop_anthropic.py",
        "anthropic",
        ["traceloop-sdk", "opentelemetry-instrumentation-anthropic", "anthropic"],
        "https://www.traceloop.com/docs/openllmetry/tracing/association",
        constraints=TRACELOOP_CONSTRAINTS,
        release_line="traceloop-sdk",
    ),
    # LangChain (langchain-openai's ChatOpenAI / OpenAIEmbeddings) under the two instrumentations
    # that trace it; each also instruments the openai client below it, so a call has LangChain's
    # LLM span and the openai span inside it.
    Library(
        "langchain-traceloop",
        # traceloop-sdk 0.62.4 imports httpx (traceloop.sdk.evaluator) without requiring it, and
        # instruments LangChain only when the `langchain` (or `langgraph`) package is installed:
        # with langchain-core and langchain-openai alone there are only the openai spans.
        ["traceloop-sdk", "langchain", "langchain-openai", "httpx"],
        "langchain_traceloop.py",
        "openai",
        [
            "traceloop-sdk",
            "opentelemetry-instrumentation-langchain",
            "opentelemetry-instrumentation-openai",
            "langchain",
            "langchain-core",
            "langchain-openai",
        ],
        "https://www.traceloop.com/docs/openllmetry/tracing/association",
        constraints=TRACELOOP_CONSTRAINTS,
        release_line="traceloop-sdk",
    ),
    Library(
        "langchain-openinference",
        [
            "openinference-instrumentation-langchain",
            "openinference-instrumentation-openai",
            "langchain-openai",
            *OTEL_HTTP,
        ],
        "langchain_openinference.py",
        "openai",
        [
            "openinference-instrumentation-langchain",
            "openinference-instrumentation-openai",
            "openinference-instrumentation",
            "langchain-core",
            "langchain-openai",
        ],
        "https://arize.com/docs/phoenix/integrations/frameworks/langchain/langchain-tracing",
    ),
    # JavaScript: npm packages into .conformance-cache/<name>/ (a bare name is installed @latest),
    # a `.mjs` scenario run by Node >= NODE_MAJOR (scenarios/common.mjs). The AI SDK is tried at its
    # current major (7) and the previous one (6), each with the @ai-sdk/openai major released for it.
    Library(
        "js-ai-sdk-v6",
        ["ai@6", "@ai-sdk/openai@3", *OTEL_JS],
        "ai_sdk_v6.mjs",
        "openai",
        ["ai", "@ai-sdk/openai"],
        "https://ai-sdk.dev/v6/docs/ai-sdk-core/telemetry",
        kind="node",
    ),
    Library(
        "js-ai-sdk-v7",
        ["ai@7", "@ai-sdk/openai@4", "@ai-sdk/otel", *OTEL_JS],
        "ai_sdk_v7.mjs",
        "openai",
        ["ai", "@ai-sdk/otel", "@ai-sdk/openai"],
        "https://ai-sdk.dev/docs/ai-sdk-core/telemetry",
        kind="node",
    ),
    Library(
        "js-traceloop-ai-sdk-v6",
        ["@traceloop/node-server-sdk", "ai@6", "@ai-sdk/openai@3", *OTEL_JS],
        "traceloop_ai_sdk_v6.mjs",
        "openai",
        ["@traceloop/node-server-sdk", "ai", "@ai-sdk/openai"],
        "https://www.traceloop.com/docs/openllmetry/integrations/vercel-ai",
        kind="node",
    ),
    Library(
        "js-traceloop-openai",
        ["@traceloop/node-server-sdk", "openai", *OTEL_JS],
        "traceloop_openai.mjs",
        "openai",
        ["@traceloop/node-server-sdk", "@traceloop/instrumentation-openai", "openai"],
        "https://www.traceloop.com/docs/openllmetry/tracing/association",
        kind="node",
    ),
    Library(
        "js-otel-instrumentation-openai",
        # 0.22.0 requires @opentelemetry/api ^1.10 (see OTEL_JS): 0.21 is the newest that installs.
        # It patches openai `>=4.19.0 <7` only: with openai 7 (the latest) it records nothing.
        ["@opentelemetry/instrumentation-openai@~0.21", OTEL_JS_INSTRUMENTATION, "openai@6", *OTEL_JS],
        "otel_instrumentation_openai.mjs",
        "openai",
        ["@opentelemetry/instrumentation-openai", "openai"],
        "https://www.npmjs.com/package/@opentelemetry/instrumentation-openai",
        kind="node",
    ),
    Library(
        "js-openinference-openai",
        [
            "@arizeai/openinference-instrumentation-openai",
            "@arizeai/openinference-core",
            OTEL_JS_INSTRUMENTATION,
            "openai",
            *OTEL_JS,
        ],
        "openinference_openai.mjs",
        "openai",
        ["@arizeai/openinference-instrumentation-openai", "@arizeai/openinference-core", "openai"],
        "https://arize-ai.github.io/openinference/js/packages/openinference-core/",
        kind="node",
    ),
    Library(
        "js-langfuse",
        ["@langfuse/otel", "@langfuse/openai", "@langfuse/tracing", "openai", *OTEL_JS],
        "langfuse_openai.mjs",
        "openai",
        ["@langfuse/otel", "@langfuse/openai", "@langfuse/tracing", "openai"],
        "https://langfuse.com/docs/observability/sdk/typescript/instrumentation",
        kind="node",
    ),
]
# The same libraries exporting each span on its own as it ends (their `disable_batch=True`, or a
# SimpleSpanProcessor): a call's spans arrive in separate Export requests. Not recorded as
# captures (tests/ingest/test_captures.py maps each request alone); tests/store covers the store.
LIBRARIES += [
    replace(lib, name=f"{lib.name}-simple", env={**lib.env, "CONFORMANCE_DISABLE_BATCH": "1"})
    for lib in LIBRARIES
    if lib.name in ("traceloop-anthropic", "openlit", "openinference-anthropic", "langchain-openinference")
]
BY_NAME = {lib.name: lib for lib in LIBRARIES}

SYSTEM = {"role": "system", "content": "You are a concise assistant."}
# n, user, plan, feature, session, model (openai), kind: the calls of tests/captures/README.md.
TABLE: list[tuple[int, str | None, str | None, str | None, str | None, str, str]] = [
    (1, "user-alice", "free", "chat", "sess-alice-01", "gpt-4o-mini", "chat"),
    (2, "user-alice", "free", "chat", "sess-alice-01", "gpt-4o-mini", "stream"),
    (3, "user-alice", "free", "chat", "sess-alice-01", "gpt-4o", "chat"),
    (4, "user-bob", "premium", "search", "sess-bob-01", "gpt-4o", "chat"),
    (5, "user-bob", "premium", "search", "sess-bob-01", "gpt-4o-mini", "stream"),
    (6, "user-bob", "premium", "search", "sess-bob-01", "text-embedding-3-small", "embed"),
    (7, "user-carol", "premium", "chat", "sess-carol-01", "gpt-4o-mini", "chat"),
    (8, "user-carol", "premium", "chat", "sess-carol-01", "gpt-4o", "chat"),
    (9, "user-carol", "premium", "chat", "sess-carol-01", "gpt-4o", "error500"),
    (10, "user-alice", "free", "chat", "sess-alice-01", "gpt-4o-mini", "error429"),
    (11, None, None, None, None, "gpt-4o-mini", "chat"),
    (12, "user-carol", "premium", "chat", "sess-carol-01", "gpt-4o", "stream_nousage"),
]
# Anthropic has no embeddings and always reports usage in streams: call 6 is a chat, call 12 a
# stream (with usage).
ANTHROPIC_MODELS = {"gpt-4o-mini": "claude-3-5-haiku-latest", "gpt-4o": "claude-sonnet-4-0"}
ANTHROPIC_KINDS = {"embed": "chat", "stream_nousage": "stream"}


def calls(provider: str) -> list[dict[str, Any]]:
    """The 12 calls of the scenario, in the flavour of one provider API."""
    out = []
    for n, user, plan, feature, session, model, kind in TABLE:
        if provider == "anthropic":
            kind = ANTHROPIC_KINDS.get(kind, kind)
            model = ANTHROPIC_MODELS.get(model, "claude-3-5-haiku-latest")
        fail = {"error500": " [fail 500]", "error429": " [fail 429]"}.get(kind, "")
        question = f"[call {n}] What is OpenTelemetry in one sentence?{fail}"
        messages = [SYSTEM, {"role": "user", "content": question}]
        if n == 7:
            messages = [
                SYSTEM,
                {"role": "user", "content": "[call 7] What is a span?"},
                {"role": "assistant", "content": "A span is one timed operation in a trace."},
                {"role": "user", "content": "[call 7] Continue the conversation about tracing, briefly."},
            ]
        out.append(
            {
                "n": n,
                "kind": kind,
                "model": model,
                "user": user,
                "session": session,
                "properties": {"plan": plan, "feature": feature} if user else {},
                "messages": messages,
                "input": f"[call {n}] embedding input for semantic search",
                "provider": provider,
            }
        )
    return out
