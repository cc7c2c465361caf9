"""Logfire: `logfire.instrument_openai()`.

How user, session and properties are attached: `logfire.set_baggage(...)`, which Logfire copies
onto every span below as attributes (https://logfire.pydantic.dev/docs/reference/advanced/baggage/):
`user.id`, `session.id`, and the bare keys `plan` / `feature` (the service runs with
`--property-keys plan --property-keys feature`). The openai `user=` parameter is passed as well. Each call runs
in a `logfire.span` of the application.
"""

import logfire
import logfire_common as lc
from common import openai_call, openai_client, run

lc.configure()
client = openai_client()
logfire.instrument_openai(client)
run(lambda call: openai_call(client, call), lc.attach, root=lc.root)
lc.shutdown()
