"""OpenLLMetry: traceloop-sdk with its OpenAI instrumentation.

How user, session and properties are attached: `Traceloop.set_association_properties({...})`
(https://www.traceloop.com/docs/openllmetry/tracing/association), which writes
`traceloop.association.properties.<key>` on the spans that follow in the context; the keys
`user_id` and `session_id` are the ones the docs use for the user and the conversation.
The openai `user=` parameter is passed as well.
"""

from common import OTLP_ENDPOINT, SERVICE_NAME, openai_call, openai_client, run, traceloop_attach
from traceloop.sdk import Traceloop

Traceloop.init(app_name=SERVICE_NAME, api_endpoint=OTLP_ENDPOINT, disable_batch=True, telemetry_enabled=False)
client = openai_client()


run(lambda call: openai_call(client, call), traceloop_attach)
