"""The gRPC listener (OTLP Export and the query service): a ``grpc.aio`` server on a thread of its own.

Why asyncio: grpcio's thread-per-call server gives each call a worker thread before the call's
request message has arrived, and has no way to bound the wait for it; so calls that sent their
headers and never their message (with a token or without) held every worker, and every method
stopped. Here waiting costs no thread. Each method is request-streaming on the server side (the
same on the wire as unary, so unary clients and stubs are unchanged): it reads its one message for
at most ``receive_timeout`` seconds, and only then takes one of the ``workers`` threads for its
work (decoding, ingest, DuckDB). A call whose message has not arrived by then is answered
``DEADLINE_EXCEEDED`` and counted as a cut of ``receive_timeout_seconds``.

Domain errors raised by the work become the call's status here, at the edge; retryable ones carry
a ``google.rpc.RetryInfo`` detail saying when to retry.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn, TypeVar

import grpc
import grpc.aio
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from user_metrics.errors import UserMetricsError, grpc_status, message
from user_metrics.stats import Stats

R = TypeVar("R")
# A unary method's behaviour once its request message has arrived: (request, context) -> response.
Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


async def abort(context: grpc.aio.ServicerContext, error: UserMetricsError) -> NoReturn:
    """End the call with the error's status; retryable errors say when to retry (RetryInfo)."""
    code = grpc_status(error)
    trailers: tuple[tuple[str, bytes], ...] = ()
    delay = getattr(error, "retry_after_seconds", None)
    if delay is not None:
        retry_info = error_details_pb2.RetryInfo(retry_delay=Duration(seconds=delay))
        detail = AnyProto()
        detail.Pack(retry_info)
        status = status_pb2.Status(code=code.value[0], message=message(error), details=[detail])
        # The rich status is what gRPC clients (and the Collector) read; the OTel Python exporter
        # reads the RetryInfo from a trailer of its own.
        trailers = (
            ("grpc-status-details-bin", status.SerializeToString()),
            ("google.rpc.retryinfo-bin", retry_info.SerializeToString()),
        )
    await context.abort(code, message(error), trailers)
    raise AssertionError("context.abort returns only by raising")  # pragma: no cover


class Rpcs:
    """What every method shares: the bounded wait for its message, and the threads its work runs on.

    Exports and queries have ``workers`` threads each, so that queries, however many and slow,
    never hold up the Exports (reads never stop writes).
    """

    def __init__(self, workers: int, receive_timeout: float, stats: Stats) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="grpc")
        self._read_pool = ThreadPoolExecutor(workers, thread_name_prefix="grpc-read")
        self._receive_timeout = receive_timeout
        self._stats = stats

    def unary(
        self,
        behavior: Behavior,
        request_deserializer: Callable[[bytes], Any] | None = None,
        response_serializer: Callable[[Any], bytes] | None = None,
    ) -> grpc.RpcMethodHandler:
        """A unary method that runs ``behavior(request, context)`` once its one message has arrived."""

        async def handle(_requests: Any, context: grpc.aio.ServicerContext) -> Any:
            request = await self._receive(context)
            if request_deserializer is not None:
                try:
                    request = request_deserializer(request)
                except DecodeError as exc:
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT, f"the request message cannot be decoded: {exc}"
                    )
            return await behavior(request, context)

        # Raw bytes in: gRPC would answer an undecodable message UNKNOWN, without saying why.
        return grpc.stream_unary_rpc_method_handler(handle, response_serializer=response_serializer)

    async def _receive(self, context: grpc.aio.ServicerContext) -> Any:
        try:
            request = await asyncio.wait_for(context.read(), self._receive_timeout)
        except TimeoutError:
            self._stats.cut("receive_timeout_seconds")
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the request message did not arrive within receive_timeout_seconds "
                f"({self._receive_timeout:g} s)",
            )
        if request is grpc.aio.EOF:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "the call ended without its request message"
            )
        return request

    async def run(self, context: grpc.aio.ServicerContext, work: Callable[[], R], reads: bool = False) -> R:
        """``work()`` on a worker thread (one of the readers' if ``reads``); a domain error it raises
        ends the call with its status."""
        pool = self._read_pool if reads else self._pool
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, work)
        except UserMetricsError as exc:
            await abort(context, exc)

    def close(self) -> None:
        """Wait for the work in flight (an Export being committed) and end the threads."""
        self._pool.shutdown(wait=True)
        self._read_pool.shutdown(wait=True)


class GrpcServer:
    """The listener: ``bind``, then ``start``; ``stop`` finishes what is in flight.

    ``maximum_concurrent_rpcs`` bounds the calls in progress, waiting for their message or for a
    worker or being worked on; gRPC answers more with ``RESOURCE_EXHAUSTED``.
    """

    def __init__(
        self,
        rpcs: Rpcs,
        handlers: Sequence[grpc.GenericRpcHandler],
        interceptors: Sequence[grpc.aio.ServerInterceptor],
        options: Sequence[tuple[str, Any]],
        maximum_concurrent_rpcs: int,
    ) -> None:
        self._rpcs = rpcs
        self._handlers = tuple(handlers)
        self._interceptors = tuple(interceptors)
        self._options = tuple(options)
        self._maximum_concurrent_rpcs = maximum_concurrent_rpcs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: grpc.aio.Server | None = None
        self._started = False

    def bind(self, address: str, credentials: grpc.ServerCredentials | None = None) -> int:
        """Listen on ``address`` (calls are taken from ``start``); the port. RuntimeError if it cannot."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="grpc-loop", daemon=True)
        self._thread.start()
        return self._call(self._bind(address, credentials))

    async def _bind(self, address: str, credentials: grpc.ServerCredentials | None) -> int:
        # An aio server belongs to the loop it is made on.
        self._server = grpc.aio.server(
            handlers=self._handlers,
            interceptors=self._interceptors,
            options=self._options,
            maximum_concurrent_rpcs=self._maximum_concurrent_rpcs,
        )
        if credentials is None:
            return self._server.add_insecure_port(address)
        return self._server.add_secure_port(address, credentials)

    def start(self) -> None:
        """Start taking calls."""
        assert self._server is not None, "bind first"
        self._call(self._server.start())
        self._started = True

    def stop(self, grace: float) -> None:
        """Take no new calls, give those in flight ``grace`` seconds, then wait for their work."""
        if self._server is not None:
            if not self._started:
                self._call(self._server.start())  # only a started server gives its port back
            self._call(self._server.stop(grace))
        self._rpcs.close()
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
        self._server = self._loop = self._thread = None

    def _call(self, coroutine: Coroutine[Any, Any, R]) -> R:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()
