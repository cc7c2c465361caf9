"""LiteLLM with its OpenTelemetry callback (`litellm.callbacks = ["otel"]`,
https://docs.litellm.ai/docs/observability/opentelemetry_integration).

How user, session and properties are attached: the `user=` parameter of `litellm.completion`
(written as `llm.user`), and `metadata={...}` (session id under `session_id`, plus `plan` /
`feature`), LiteLLM's per-call metadata for its logging callbacks. Its `otel` callback writes only
LiteLLM's own metadata keys (`metadata.user_api_key_*`, `metadata.usage_object`, ...): the session
and properties never reach a span (litellm 1.110.2; the library's gap).
Each call runs inside the application's span, so the run sets `USE_OTEL_LITELLM_REQUEST_SPAN=true`
(libraries.py): without it LiteLLM writes the call onto that span, after it has ended.
"""

import os

from common import OPENAI_BASE_URL, OTLP_ENDPOINT, otel_provider, run, shutdown_global_provider

os.environ["OTEL_EXPORTER"] = "otlp_http"
os.environ["OTEL_ENDPOINT"] = OTLP_ENDPOINT + "/v1/traces"
os.environ["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf"
provider = otel_provider()

import contextlib  # noqa: E402

import litellm  # noqa: E402

litellm.callbacks = ["otel"]


def do_call(call):
    extra = {}
    if call["user"]:
        extra = {"user": call["user"], "metadata": {"session_id": call["session"], **call["properties"]}}
    common = dict(
        model=f"openai/{call['model']}",
        api_base=OPENAI_BASE_URL,
        api_key="test",
        num_retries=0,
        max_retries=0,
        **extra,
    )
    if call["kind"] == "embed":
        litellm.embedding(input=[call["input"]], **common)
        return
    if call["kind"].startswith("stream"):
        options = {"stream_options": {"include_usage": True}} if call["kind"] == "stream" else {}
        for _ in litellm.completion(messages=call["messages"], stream=True, **options, **common):
            pass
        return
    litellm.completion(messages=call["messages"], **common)


run(do_call, lambda call: contextlib.nullcontext())
import time  # noqa: E402

time.sleep(2)  # the callback ends its spans after the call returns
shutdown_global_provider()
