"""OpenInference: openinference-instrumentation-openai.

How user, session and properties are attached: `using_attributes(user_id=..., session_id=...,
metadata={...})` from openinference-instrumentation
(https://arize-ai.github.io/openinference/python/openinference-instrumentation/ and
https://docs.arize.com/phoenix/tracing/how-to-tracing/add-metadata/customize-spans), which sets
`user.id`, `session.id` and a JSON `metadata` attribute on the spans made inside it.
"""

from common import (
    openai_call,
    openai_client,
    openinference_attach,
    otel_provider,
    run,
    shutdown_global_provider,
)
from openinference.instrumentation.openai import OpenAIInstrumentor

provider = otel_provider()
OpenAIInstrumentor().instrument(tracer_provider=provider)
client = openai_client()


run(lambda call: openai_call(client, call), openinference_attach)
shutdown_global_provider()
