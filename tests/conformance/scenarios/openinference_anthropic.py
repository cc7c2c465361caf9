"""OpenInference: openinference-instrumentation-anthropic.

How user, session and properties are attached: `using_attributes(user_id=..., session_id=...,
metadata={...})` (https://arize-ai.github.io/openinference/python/openinference-instrumentation/),
as for the OpenAI instrumentation.
"""

from common import (
    anthropic_call,
    anthropic_client,
    openinference_attach,
    otel_provider,
    run,
    shutdown_global_provider,
)
from openinference.instrumentation.anthropic import AnthropicInstrumentor

provider = otel_provider()
AnthropicInstrumentor().instrument(tracer_provider=provider)
client = anthropic_client()


run(lambda call: anthropic_call(client, call), openinference_attach)
shutdown_global_provider()
