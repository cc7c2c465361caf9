"""OpenLLMetry: traceloop-sdk with its Anthropic instrumentation
(opentelemetry-instrumentation-anthropic).

How user, session and properties are attached: `Traceloop.set_association_properties({...})`
(https://www.traceloop.com/docs/openllmetry/tracing/association); `user_id` / `session_id` keys
as in the docs. The anthropic `metadata.user_id` parameter is passed as well.
Spans are batched (the SDK's default; the docs suggest `disable_batch=True` only to see traces at
once in local development). The `traceloop-anthropic-simple` variant sets `disable_batch=True`:
each span is its own Export request, and anthropic's own SDK span (a sibling of `anthropic.chat`
here, not its child) arrives apart from OpenLLMetry's span of the same call.
"""

from common import (
    DISABLE_BATCH,
    OTLP_ENDPOINT,
    SERVICE_NAME,
    anthropic_call,
    anthropic_client,
    run,
    traceloop_attach,
)
from traceloop.sdk import Traceloop

Traceloop.init(
    app_name=SERVICE_NAME, api_endpoint=OTLP_ENDPOINT, telemetry_enabled=False, disable_batch=DISABLE_BATCH
)
client = anthropic_client()


run(lambda call: anthropic_call(client, call), traceloop_attach)
