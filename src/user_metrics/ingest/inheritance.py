"""Identity inheritance: a span's user, session and properties, completed from its ancestors.

``inherit`` walks an LLM span's parents in the same request, nearest first, then takes what the
resource has. A session id anywhere on that path beats a GenAI conversation id anywhere on it: a
conversation id is the session only when no session id is known (pydantic-ai writes a new one per
agent run on every span, which must not hide the application's ``session.id`` on an ancestor).
``fact`` is what every span leaves behind (a ``SpanFact``), so that spans of later requests can
inherit from it too; ``wait`` says whether an LLM span waits for them. Span ids count as OTLP
defines them: 8 bytes, not all zero.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from user_metrics.ingest.attributes import Conventions
from user_metrics.store.records import RequestRecord, SpanFact


class Identity(NamedTuple):
    """A span's own identity facts, as its attributes say, and its parent span id."""

    user_id: str | None
    session_id: str | None
    properties: dict[str, str]
    parent: bytes
    conversation_id: str | None = None  # gen_ai.conversation.id: the session when no session id is known


class Inherited(NamedTuple):
    user_id: str | None
    session_id: str | None
    properties: dict[str, str]
    # The id of the first ancestor missing from this request (None when the walk reached a root
    # or went round a cycle): a later request may still bring it.
    resume: bytes | None
    session_is_conversation: bool  # session_id is a conversation id: no session id was found


class Wait(NamedTuple):
    """Why a record waits for spans of later requests before it is stored.

    ``ancestor``: the hex id of the first ancestor missing from its request, when the record has no
    user id, or a user id alone (a later request may bring the rest; ``wait``). ``counterpart``: it
    is a provider SDK's own span whose instrumentation span may be in another request.
    ``conversation``: its session id is a conversation id, which an ancestor's session id beats.
    """

    ancestor: str | None
    counterpart: bool
    conversation: bool


def inherit(
    span: Any,
    own: Identity,
    resource: Identity,
    identities: dict[tuple[bytes, bytes], Identity],
) -> Inherited:
    """The span's own identity, completed from its ancestors (nearest first), then the resource."""
    user_id, session_id, conversation_id = own.user_id, own.session_id, own.conversation_id
    chain: list[dict[str, str]] = [own.properties]
    parent = own.parent
    visited = {span.span_id}
    resume = None
    while parent and parent not in visited:
        visited.add(parent)
        ancestor = identities.get((span.trace_id, parent))
        if ancestor is None:
            resume = parent if _is_span_id(parent) else None
            break
        user_id = user_id or ancestor.user_id
        session_id = session_id or ancestor.session_id
        conversation_id = conversation_id or ancestor.conversation_id
        chain.append(ancestor.properties)
        parent = ancestor.parent
    user_id = user_id or resource.user_id
    session_id = session_id or resource.session_id
    conversation_id = conversation_id or resource.conversation_id
    chain.append(resource.properties)
    properties: dict[str, str] = {}
    for props in reversed(chain):  # nearer wins: apply farthest first
        properties.update(props)
    if session_id is None and conversation_id is not None:
        return Inherited(user_id, conversation_id, properties, resume, True)
    return Inherited(user_id, session_id, properties, resume, False)


def _is_span_id(value: bytes) -> bool:
    """8 bytes, not all zero: what OTLP calls a valid span id (anything else names no span)."""
    return len(value) == 8 and any(value)


def parent_hex(parent: bytes) -> str | None:
    return parent.hex() if _is_span_id(parent) else None


def valid_ids(trace_id: bytes, span_id: bytes) -> bool:
    return len(trace_id) == 16 and any(trace_id) and _is_span_id(span_id)


def fact(span: Any, identity: Identity, conv: Conventions) -> SpanFact:
    """What a later request's span may inherit from this one, bounded as records are."""
    limit = conv.max_value_length
    properties = identity.properties
    if len(properties) > conv.max_properties:
        properties = {k: properties[k] for k in sorted(properties)[: conv.max_properties]}
    return SpanFact(
        span.trace_id.hex(),
        span.span_id.hex(),
        parent_hex(span.parent_span_id),
        identity.user_id[:limit] if identity.user_id else None,
        session[:limit] if (session := identity.session_id or identity.conversation_id) else None,
        {k[:limit]: v[:limit] for k, v in properties.items()},
    )


def wait(record: RequestRecord, found: Inherited, counterpart: bool) -> Wait | None:
    """Why the record waits (``Wait``), or None when it is stored at once.

    A record whose ancestry is incomplete in its request waits for the missing ancestor when it
    has no user id, or a user id alone: no session id (a conversation id is not one yet, an
    ancestor's session id beats it) and no property. A user id alone is what libraries take from
    the API call (OpenAI's ``user=``); the application's session and properties are then on its
    spans. Libraries that carry the application's context put all of it on the span: a span with
    a user and a session or a property is stored at once.
    """
    resume, conversation = found.resume, found.session_is_conversation
    has_session = record.session_id is not None and not conversation
    lacks = record.user_id is None or not (has_session or record.properties)
    ancestor = resume.hex() if resume is not None and lacks else None
    if ancestor is None and not counterpart:
        return None
    return Wait(ancestor, counterpart, conversation)
