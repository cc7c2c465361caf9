"""pydantic-ai (an Agent on OpenAIChatModel), instrumented through Logfire
(https://ai.pydantic.dev/logfire/).

How user, session and properties are attached: pydantic-ai has no end-user API; the application
names them with `logfire.set_baggage(...)` (https://logfire.pydantic.dev/docs/reference/advanced/baggage/):
`user.id`, `session.id`, bare `plan` / `feature` (service run with `--property-keys plan,feature`).
Logfire scrubs attributes whose key contains "session" on pydantic-ai's spans (its scrubber spares
only its own OpenAI and Anthropic spans), so `session.id` would arrive as "[Scrubbed due to
'session']": the application keeps it with Logfire's documented scrubbing callback
(https://logfire.pydantic.dev/docs/how-to-guides/scrubbing/).
pydantic-ai always asks for usage in streams, so call 12 is a stream with usage here; the
embedding goes through `pydantic_ai.Embedder` on the same OpenAI provider, instrumented with
`instrument=True` (`logfire.instrument_pydantic_ai()` instruments agents only).
"""

import asyncio

import logfire
import logfire_common as lc
import openai
from common import OPENAI_BASE_URL, run
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider


def keep_session_id(match):
    """Logfire's scrubbing callback: the session id is not a secret (None scrubs the rest)."""
    return match.value if match.path == ("attributes", "session.id") else None


lc.configure(scrubbing=logfire.ScrubbingOptions(callback=keep_session_id))
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
        from pydantic_ai.embeddings.openai import OpenAIEmbeddingModel

        embedder = Embedder(OpenAIEmbeddingModel(call["model"], provider=provider), instrument=True)
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
