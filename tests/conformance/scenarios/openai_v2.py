"""opentelemetry-instrumentation-openai-v2 (the official OpenTelemetry instrumentation).

How user, session and properties are attached: the instrumentation has no API for them
(https://opentelemetry-python-contrib.readthedocs.io/en/latest/instrumentation-genai/openai.html),
so the application puts them on its own span around the call, as this service's README documents
("Sending spans"): `user.id`, `session.id`, `property.<name>` on the parent span; the instrumented
call's span inherits them.
"""

import contextlib

from common import openai_call, openai_client, otel_provider, run, shutdown_global_provider
from opentelemetry import trace
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

provider = otel_provider()
OpenAIInstrumentor().instrument(tracer_provider=provider)
client = openai_client()


@contextlib.contextmanager
def attach(call):
    span = trace.get_current_span()
    if call["user"]:
        span.set_attribute("user.id", call["user"])
        span.set_attribute("session.id", call["session"])
        for key, value in call["properties"].items():
            span.set_attribute(f"property.{key}", value)
    yield


run(lambda call: openai_call(client, call), attach)
shutdown_global_provider()
