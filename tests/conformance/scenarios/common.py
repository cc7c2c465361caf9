"""The scenario contract, Python side (a Node scenario follows the same contract).

The runner starts a scenario script in the library's own environment with:
- ``CONFORMANCE_CALLS``: a JSON file, the list of calls (n, kind, model, user, session,
  properties, messages / input, provider);
- ``CONFORMANCE_OUT``: where to write one JSON line per call: n, t0/t1 (wall-clock seconds around
  the call), trace_id (hex, of the span current during the call; "" if none), ok, error;
- ``CONFORMANCE_OPENAI_BASE_URL`` / ``CONFORMANCE_ANTHROPIC_BASE_URL``: the fake providers;
- ``CONFORMANCE_OTLP_ENDPOINT``: OTLP/HTTP base URL (traces go to ``<base>/v1/traces``);
- ``CONFORMANCE_SERVICE_NAME``: the ``service.name`` to use;
- ``CONFORMANCE_DISABLE_BATCH``: "1" for a library's ``-simple`` variant: the script asks the
  library to export each span on its own as it ends (``disable_batch=True``, or a
  SimpleSpanProcessor), so a call's spans arrive in separate Export requests.
The script makes each call with user, session and properties attached the way its library
documents, then flushes its exporter before it exits.

This module is imported by the Python scenario scripts only (it runs in the library's venv).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

with open(os.environ["CONFORMANCE_CALLS"]) as _f:
    CALLS: list[dict[str, Any]] = json.load(_f)
OPENAI_BASE_URL = os.environ["CONFORMANCE_OPENAI_BASE_URL"]
ANTHROPIC_BASE_URL = os.environ["CONFORMANCE_ANTHROPIC_BASE_URL"]
OTLP_ENDPOINT = os.environ["CONFORMANCE_OTLP_ENDPOINT"]
SERVICE_NAME = os.environ["CONFORMANCE_SERVICE_NAME"]
DISABLE_BATCH = os.environ.get("CONFORMANCE_DISABLE_BATCH") == "1"


def otel_provider() -> Any:
    """A global TracerProvider exporting OTLP/HTTP protobuf to the runner (for libraries that
    leave the SDK set-up to the application): batched, or each span as it ends (DISABLE_BATCH)."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    processor = SimpleSpanProcessor if DISABLE_BATCH else BatchSpanProcessor
    provider.add_span_processor(processor(OTLPSpanExporter(endpoint=OTLP_ENDPOINT + "/v1/traces")))
    trace.set_tracer_provider(provider)
    return provider


def shutdown_global_provider() -> None:
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    for name in ("force_flush", "shutdown"):
        with contextlib.suppress(Exception):
            getattr(provider, name)()


def current_trace_id() -> str:
    try:
        from opentelemetry import trace
    except ImportError:
        return ""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.trace_id else ""


@contextlib.contextmanager
def root_span(call: dict[str, Any]) -> Iterator[Any]:
    """A plain application span around the call, with no attributes (so the trace is the call's)."""
    from opentelemetry import trace

    with trace.get_tracer("conformance.app").start_as_current_span(f"handle call {call['n']}") as span:
        yield span


def openai_client() -> Any:
    import openai

    return openai.OpenAI(base_url=OPENAI_BASE_URL, api_key="test", max_retries=0)


def anthropic_client() -> Any:
    import anthropic

    return anthropic.Anthropic(base_url=ANTHROPIC_BASE_URL, api_key="test", max_retries=0)


def openai_call(client: Any, call: dict[str, Any]) -> None:
    """One call of the scenario with the openai client; the `user=` parameter when there is a user."""
    extra = {"user": call["user"]} if call["user"] else {}
    kind = call["kind"]
    if kind == "embed":
        client.embeddings.create(model=call["model"], input=call["input"], **extra)
        return
    if kind in ("stream", "stream_nousage"):
        options = {"stream_options": {"include_usage": True}} if kind == "stream" else {}
        for _ in client.chat.completions.create(
            model=call["model"], messages=call["messages"], stream=True, **options, **extra
        ):
            pass
        return
    client.chat.completions.create(model=call["model"], messages=call["messages"], **extra)


def anthropic_call(client: Any, call: dict[str, Any]) -> None:
    """One call with the anthropic client; `metadata.user_id` when there is a user."""
    extra = {"metadata": {"user_id": call["user"]}} if call["user"] else {}
    system = [m["content"] for m in call["messages"] if m["role"] == "system"]
    messages = [m for m in call["messages"] if m["role"] != "system"]
    args = dict(model=call["model"], max_tokens=256, messages=messages, system=system[0], **extra)
    if call["kind"] == "stream":
        with client.messages.stream(**args) as stream:
            for _ in stream.text_stream:
                pass
            stream.get_final_message()
        return
    client.messages.create(**args)


def run(
    do_call: Callable[[dict[str, Any]], None],
    attach: Callable[[dict[str, Any]], contextlib.AbstractContextManager[Any]],
    root: Callable[[dict[str, Any]], contextlib.AbstractContextManager[Any]] | None = root_span,
) -> None:
    """Make every call inside ``root`` (an application span) and ``attach`` (the library's way of
    naming user, session and properties); write what happened to CONFORMANCE_OUT."""
    with open(os.environ["CONFORMANCE_OUT"], "w") as out:
        for call in CALLS:
            row: dict[str, Any] = {"n": call["n"], "t0": time.time()}
            with root(call) if root else contextlib.nullcontext(), attach(call):
                row["trace_id"] = current_trace_id()
                try:
                    do_call(call)
                    row["ok"], row["error"] = True, None
                except Exception as exc:  # the 500 and the 429 are meant to fail
                    row["ok"], row["error"] = False, f"{type(exc).__module__}.{type(exc).__name__}"
            row["t1"] = time.time()
            out.write(json.dumps(row) + "\n")
            out.flush()
            time.sleep(0.02)  # calls never share a millisecond


@contextlib.contextmanager
def traceloop_attach(call: dict[str, Any]) -> Iterator[None]:
    """OpenLLMetry's way: association properties (user_id, session_id, the rest) on the context."""
    from traceloop.sdk import Traceloop

    props = (
        {"user_id": call["user"], "session_id": call["session"], **call["properties"]} if call["user"] else {}
    )
    Traceloop.set_association_properties(props)
    yield


def openinference_attach(call: dict[str, Any]) -> contextlib.AbstractContextManager[Any]:
    """OpenInference's way: `using_attributes(user_id=..., session_id=..., metadata={...})`."""
    from openinference.instrumentation import using_attributes

    if not call["user"]:
        return contextlib.nullcontext()
    return using_attributes(user_id=call["user"], session_id=call["session"], metadata=call["properties"])


def langchain_call(call: dict[str, Any]) -> None:
    """One call with langchain-openai: ChatOpenAI (``streaming=True``, ``stream_usage`` for the
    streams) or OpenAIEmbeddings; the openai `user=` parameter when there is a user."""
    from langchain_openai import ChatOpenAI, OpenAIEmbeddings

    common: dict[str, Any] = dict(
        model=call["model"], base_url=OPENAI_BASE_URL, api_key="test", max_retries=0
    )
    extra = {"user": call["user"]} if call["user"] else {}
    kind = call["kind"]
    if kind == "embed":
        # no tokenizer download (tiktoken) before the request: the input is short
        embeddings = OpenAIEmbeddings(**common, check_embedding_ctx_length=False, model_kwargs=extra)
        embeddings.embed_query(call["input"])
        return
    messages = [(m["role"], m["content"]) for m in call["messages"]]
    if kind in ("stream", "stream_nousage"):
        llm = ChatOpenAI(**common, streaming=True, stream_usage=kind == "stream")
        for _ in llm.stream(messages, **extra):
            pass
        return
    ChatOpenAI(**common).invoke(messages, **extra)
