"""OpenLLMetry: traceloop-sdk with its Anthropic instrumentation
(opentelemetry-instrumentation-anthropic).

How user, session and properties are attached: `Traceloop.set_association_properties({...})`
(https://www.traceloop.com/docs/openllmetry/tracing/association); `user_id` / `session_id` keys
as in the docs. The anthropic `metadata.user_id` parameter is passed as well.
"""

from common import OTLP_ENDPOINT, SERVICE_NAME, anthropic_call, anthropic_client, run, traceloop_attach
from traceloop.sdk import Traceloop

Traceloop.init(app_name=SERVICE_NAME, api_endpoint=OTLP_ENDPOINT, disable_batch=True, telemetry_enabled=False)
client = anthropic_client()


run(lambda call: anthropic_call(client, call), traceloop_attach)
