"""Logfire: `logfire.instrument_anthropic()`.

How user, session and properties are attached: `logfire.set_baggage(...)`
(https://logfire.pydantic.dev/docs/reference/advanced/baggage/): `user.id`, `session.id`, and the
bare keys `plan` / `feature` (service run with `--property-keys plan --property-keys feature`); the anthropic
`metadata.user_id` parameter is passed as well.
"""

import logfire
import logfire_common as lc
from common import anthropic_call, anthropic_client, run

lc.configure()
client = anthropic_client()
logfire.instrument_anthropic(client)
run(lambda call: anthropic_call(client, call), lc.attach, root=lc.root)
lc.shutdown()
