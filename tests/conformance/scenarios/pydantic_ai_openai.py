"""pydantic-ai (an Agent on OpenAIChatModel), instrumented through Logfire
(https://ai.pydantic.dev/logfire/).

How user, session and properties are attached: pydantic-ai has no end-user API; the application
names them with `logfire.set_baggage(...)` (https://logfire.pydantic.dev/docs/reference/advanced/baggage/):
`user.id`, `session.id`, bare `plan` / `feature` (service run with `--property-keys plan,feature`).
pydantic-ai always asks for usage in streams, so call 12 is a stream with usage here; the
embedding goes through `pydantic_ai.Embedder` where the release has it.
"""

import asyncio

import logfire
import logfire_common as lc
import openai
from common import OPENAI_BASE_URL, run
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

lc.configure()
logfire.instrument_pydantic_ai()
provider = OpenAIProvider(
    openai_client=openai.AsyncOpenAI(base_url=OPENAI_BASE_URL, api_key="test", max_retries=0)
)
loop = asyncio.new_event_loop()


def history(call):
    from pydantic_ai.messages import ModelRequest, ModelResponse, TextPart, UserPromptPart

    msgs = call["messages"][1:-1]
    out = []
    for m in msgs:
        out.append(
            ModelRequest(parts=[UserPromptPart(content=m["content"])])
            if m["role"] == "user"
            else ModelResponse(parts=[TextPart(content=m["content"])])
        )
    return out or None


async def one(call):
    if call["kind"] == "embed":
        from pydantic_ai import Embedder  # raises ImportError where the release has none

        embedder = (
            Embedder(f"openai:{call['model']}", provider=provider)
            if "provider" in Embedder.__init__.__code__.co_varnames
            else Embedder(f"openai:{call['model']}")
        )
        await embedder.embed_query(call["input"])
        return
    agent = Agent(
        OpenAIChatModel(call["model"], provider=provider), system_prompt=call["messages"][0]["content"]
    )
    prompt = call["messages"][-1]["content"]
    if call["kind"].startswith("stream"):
        async with agent.run_stream(prompt, message_history=history(call)) as result:
            async for _ in result.stream_text():
                pass
        return
    await agent.run(prompt, message_history=history(call))


run(lambda call: loop.run_until_complete(one(call)), lc.attach, root=lc.root)
lc.shutdown()
