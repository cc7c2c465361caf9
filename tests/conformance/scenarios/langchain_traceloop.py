"""OpenLLMetry on LangChain: traceloop-sdk (it instruments langchain and openai both) with
langchain-openai's ChatOpenAI and OpenAIEmbeddings.

How user, session and properties are attached: `Traceloop.set_association_properties({...})`
(https://www.traceloop.com/docs/openllmetry/tracing/association), as for the openai client: the
LangChain instrumentation copies the association properties onto its spans as well.
"""

from common import OTLP_ENDPOINT, SERVICE_NAME, langchain_call, run, traceloop_attach
from traceloop.sdk import Traceloop

Traceloop.init(app_name=SERVICE_NAME, api_endpoint=OTLP_ENDPOINT, disable_batch=True, telemetry_enabled=False)


run(langchain_call, traceloop_attach)
