"""Langfuse Python SDK (v3+, OpenTelemetry based) with its OpenAI drop-in (`from langfuse.openai
import OpenAI`).

How user, session and properties are attached: inside `langfuse.start_as_current_span(...)`,
`propagate_attributes(user_id=..., session_id=..., metadata={...})` where the release has it
(https://langfuse.com/docs/observability/features/users, /sessions, /metadata), else
`span.update_trace(user_id=..., session_id=..., metadata={...})`.
The Langfuse host is the runner's OTLP endpoint (the SDK posts to `/api/public/otel/v1/traces`).
"""

import contextlib
import os

from common import OPENAI_BASE_URL, OTLP_ENDPOINT, SERVICE_NAME, openai_call, run

os.environ.update(
    OTEL_SERVICE_NAME=SERVICE_NAME,  # Langfuse's tracer provider takes the OTel SDK's resource
    LANGFUSE_PUBLIC_KEY="pk-lf-conformance",
    LANGFUSE_SECRET_KEY="sk-lf-conformance",
    LANGFUSE_HOST=OTLP_ENDPOINT,
    LANGFUSE_BASE_URL=OTLP_ENDPOINT,
    LANGFUSE_TRACING_ENVIRONMENT="conformance",
)

import langfuse  # noqa: E402
from langfuse.openai import OpenAI  # noqa: E402

client_lf = langfuse.get_client()
client = OpenAI(base_url=OPENAI_BASE_URL, api_key="test", max_retries=0)


def root(call):
    start = getattr(client_lf, "start_as_current_span", None) or client_lf.start_as_current_observation
    return start(name=f"handle call {call['n']}")


@contextlib.contextmanager
def attach(call):
    if not call["user"]:
        yield
        return
    propagate = getattr(langfuse, "propagate_attributes", None)
    if propagate is not None:
        with propagate(user_id=call["user"], session_id=call["session"], metadata=call["properties"]):
            yield
        return
    client_lf.update_current_trace(
        user_id=call["user"], session_id=call["session"], metadata=call["properties"]
    )
    yield


run(lambda call: openai_call(client, call), attach, root=root)
client_lf.flush()
client_lf.shutdown()
