"""OpenInference on LangChain: openinference-instrumentation-langchain and -openai with
langchain-openai's ChatOpenAI and OpenAIEmbeddings.

Both instrumentors are enabled, as Phoenix's `register(auto_instrument=True)` does with every
OpenInference instrumentation installed (https://arize.com/docs/phoenix/tracing/llm-traces-1/
quickstart-tracing-python): a call has LangChain's LLM span and the openai span inside it.
How user, session and properties are attached: `using_attributes(user_id=..., session_id=...,
metadata={...})` (https://arize-ai.github.io/openinference/python/openinference-instrumentation/).
"""

from common import langchain_call, openinference_attach, otel_provider, run, shutdown_global_provider
from openinference.instrumentation.langchain import LangChainInstrumentor
from openinference.instrumentation.openai import OpenAIInstrumentor

provider = otel_provider()
LangChainInstrumentor().instrument(tracer_provider=provider)
OpenAIInstrumentor().instrument(tracer_provider=provider)


run(langchain_call, openinference_attach)
shutdown_global_provider()
