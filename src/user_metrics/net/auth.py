"""Bearer tokens: who may send spans and who may read, on every listener.

Two independent sets: ingest tokens for OTLP Export (gRPC and HTTP), read tokens for the query
API, SQL, gRPC queries and ``/metrics``. An empty set leaves that side open, which is only allowed
on loopback addresses unless the operator opts in (``check_exposure``).

A presented token is hashed and compared with every configured token's hash by
``hmac.compare_digest``, so the time taken depends neither on where the first differing character
is nor on which token matched.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc
import grpc.aio

from user_metrics.settings import Settings, SettingsError, split_address

INGEST_METHOD_PREFIX = "/opentelemetry.proto.collector.trace.v1.TraceService/"


class Tokens:
    """A set of accepted bearer tokens; an empty set accepts any request."""

    def __init__(self, tokens: Iterable[str], purpose: str) -> None:
        self._digests = [hashlib.sha256(t.encode()).digest() for t in tokens]
        self.purpose = purpose  # "ingest" or "read", for messages

    @property
    def open(self) -> bool:
        return not self._digests

    def allows(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header value carries one of the tokens."""
        if self.open:
            return True
        scheme, _, token = (authorization or "").partition(" ")
        presented = hashlib.sha256(token.strip().encode("utf-8", "replace")).digest()
        matched = False
        for digest in self._digests:  # no early exit: every token is compared
            matched |= hmac.compare_digest(presented, digest)
        return matched and scheme.lower() == "bearer"

    def refusal(self, authorization: str | None) -> str:
        """Why a request was refused, without echoing what it sent."""
        what = "no bearer token" if not authorization else "a token that is not valid here"
        return f"unauthenticated: this endpoint needs an {self.purpose} token; the request had {what}"


def is_loopback(host: str) -> bool:
    """Whether a listen host only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def check_exposure(settings: Settings) -> None:
    """Refuse to serve a non-loopback address without the tokens guarding what it serves (a
    reader-only node receives no spans: it binds no OTLP/HTTP address and needs no ingest token)."""
    if settings.allow_unauthenticated:
        return
    needs = {
        "grpc_listen": ("ingest_tokens", "read_tokens"),  # OTLP Export and the query service
        "http_listen": ("ingest_tokens",),
        "api_listen": ("read_tokens",),
    }
    if not settings.ingest:
        needs = {"grpc_listen": ("read_tokens",), "api_listen": ("read_tokens",)}
    for listen, token_names in needs.items():
        address = getattr(settings, listen)
        host, _ = split_address(address, listen)
        missing = [name for name in token_names if not getattr(settings, name)]
        if missing and not is_loopback(host):
            raise SettingsError(
                f"{listen} {address} is not a loopback address and {' and '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} empty: anyone who reaches it could "
                f"{'send spans' if 'ingest_tokens' in missing else 'read every user'}. Set "
                f"{' and '.join(missing)}, or set allow_unauthenticated to accept that."
            )


class BearerInterceptor(grpc.aio.ServerInterceptor):
    """Checks the ``authorization`` metadata of every gRPC call: ingest or read tokens by method.

    A refused call is answered as soon as its headers arrive: the refusal is request-streaming
    and never reads the request message, so a caller that sends none holds nothing.
    """

    def __init__(self, ingest: Tokens, read: Tokens) -> None:
        self._ingest = ingest
        self._read = read

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        tokens = self._ingest if method.startswith(INGEST_METHOD_PREFIX) else self._read
        if tokens.open:
            return await continuation(handler_call_details)
        authorization = None
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                authorization = value if isinstance(value, str) else None
        if tokens.allows(authorization):
            return await continuation(handler_call_details)
        message = tokens.refusal(authorization)

        async def deny(_requests: Any, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        # Every method we serve is unary, which is the same on the wire as this.
        return grpc.stream_unary_rpc_method_handler(deny)
