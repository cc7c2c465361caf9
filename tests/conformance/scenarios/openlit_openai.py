"""OpenLIT (openlit.init, OpenAI instrumentation).

How user, session and properties are attached: OpenLIT records the openai `user=` parameter as
the end user (`gen_ai.request.user`; https://docs.openlit.io/latest/sdk-configuration). It has
no API for a session or custom metadata, so they go on the application's span around the call:
`session.id` and the bare keys `plan` / `feature` (the service is started with
`--property-keys plan,feature`, as README "What is recognised" says for OpenLIT).
Spans are batched (OpenLIT's default). The `openlit-simple` variant sets `disable_batch=True`:
each span is its own Export request, and the call's span, which carries the user alone
(`gen_ai.request.user`), arrives before its parent with the session and properties.
"""

import contextlib

import openlit
from common import (
    DISABLE_BATCH,
    OTLP_ENDPOINT,
    SERVICE_NAME,
    openai_call,
    openai_client,
    run,
    shutdown_global_provider,
)
from opentelemetry import trace

openlit.init(
    otlp_endpoint=OTLP_ENDPOINT,
    application_name=SERVICE_NAME,
    environment="conformance",
    disable_metrics=True,
    disable_batch=DISABLE_BATCH,
)
client = openai_client()


@contextlib.contextmanager
def attach(call):
    if call["user"]:
        span = trace.get_current_span()
        span.set_attribute("session.id", call["session"])
        for key, value in call["properties"].items():
            span.set_attribute(key, value)
    yield


run(lambda call: openai_call(client, call), attach)
shutdown_global_provider()
