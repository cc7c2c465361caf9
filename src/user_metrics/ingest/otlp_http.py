"""OTLP/HTTP front-end: ``POST /v1/traces`` over the shared ingest core (default 127.0.0.1:4318).

Speaks both encodings of the specification, binary protobuf (``application/x-protobuf``) and
JSON (``application/json``), plain or ``Content-Encoding: gzip``, and answers in the request's
encoding: an ``ExportTraceServiceResponse`` (with partial success) on 200, a ``google.rpc.Status``
on every error. Status codes: 400 undecodable, 401 no valid ingest token, 404/405 wrong path or
method, 408 not received whole within ``receive_timeout_seconds``, 411 no length, 413 over
``max_message_mib`` (compressed or not) or over GZIP_MAX_MEMBERS gzip members, 415 another content
type or encoding, 503 with ``Retry-After`` when the write queue, the worker slots, the listener's
connections or the bytes of bodies being received are full.
"""

from __future__ import annotations

import logging
import ssl
import threading
import zlib
from collections.abc import Callable

from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from user_metrics.errors import (
    InvalidInput,
    MethodNotAllowed,
    NotFound,
    Overloaded,
    RequestTimeout,
    TooLarge,
    UnsupportedMediaType,
    UserMetricsError,
    grpc_status,
    http_status,
    message,
)
from user_metrics.ingest.ingestor import (
    ExportResult,
    Ingestor,
    decode_json,
    decode_json_bounded,
    decode_protobuf,
)
from user_metrics.net.auth import Tokens
from user_metrics.net.http_server import BackgroundServer, Bounds, Handler
from user_metrics.stats import Stats

log = logging.getLogger(__name__)

PATH = "/v1/traces"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
DECODERS: dict[str, Callable[[bytes | bytearray], ExportTraceServiceRequest]] = {
    PROTOBUF: decode_protobuf,
    JSON: decode_json,
}


GZIP_MAX_MEMBERS = 1024  # gzip streams concatenated in one body; real senders send one


class TooManyMembers(TooLarge):
    """A gzip body of more than GZIP_MAX_MEMBERS members."""


def gunzip(data: bytes | bytearray, limit: int) -> bytearray:
    """Decompress gzip (every member) to at most ``limit`` bytes.

    TooLarge beyond it, TooManyMembers beyond GZIP_MAX_MEMBERS, InvalidInput if corrupt. Linear
    in the body: each member's input is given in growing pieces, so where it ends is found by
    copying what is left of one piece (``unused_data``), not of the whole body.
    """
    out = bytearray()
    with memoryview(data) as view:
        at = members = 0
        while at < len(view):
            members += 1
            if members > GZIP_MAX_MEMBERS:
                raise TooManyMembers(f"the body has more than {GZIP_MAX_MEMBERS} gzip members")
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            step = 256
            while not inflater.eof:
                if at == len(view):
                    raise InvalidInput("the body is not valid gzip: it ends before the gzip stream does")
                piece = view[at : at + step]
                try:
                    out += inflater.decompress(piece, limit + 1 - len(out))
                except zlib.error as exc:
                    raise InvalidInput(f"the body is not valid gzip: {exc}") from None
                if len(out) > limit:
                    raise TooLarge(f"the body is larger than {limit} bytes once decompressed")
                # Under the output limit, the piece was consumed whole but for what follows the member.
                at += len(piece) - len(inflater.unused_data)
                step = min(2 * step, 1024 * 1024)
    return out


class OtlpHttpServer(BackgroundServer):
    """The receiver; ``workers`` bounds the requests processed at once.

    Bodies are read before a worker is taken; those being read or held at once take at most
    ``workers`` x ``max_body_bytes``, the memory the workers could hold before.
    """

    def __init__(
        self,
        address: tuple[str, int],
        ingestor: Ingestor,
        stats: Stats,
        *,
        max_body_bytes: int,
        workers: int,
        receive_timeout: float,
        max_connections: int,
        ingest_tokens: Tokens | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.ingestor = ingestor
        self.stats = stats
        self.max_body_bytes = max_body_bytes
        self.ingest_tokens = ingest_tokens or Tokens((), "ingest")
        self.slots = threading.BoundedSemaphore(workers)
        receiver = self

        class OtlpHandler(_OtlpHandler):
            server_receiver = receiver

        bounds = Bounds(receive_timeout, max_connections, workers * max_body_bytes)
        super().__init__(address, OtlpHandler, tls, stats, bounds)


class _OtlpHandler(Handler):
    server_receiver: OtlpHttpServer

    def serve(self, method: str) -> None:
        receiver = self.server_receiver
        content_type = self._content_type()
        try:
            if self.path.split("?")[0] != PATH:
                raise NotFound(f"no such endpoint: {self.path[:200]}; OTLP/HTTP traces go to POST {PATH}")
            if method != "POST":
                raise MethodNotAllowed(f"{method} is not allowed here; use POST", allow="POST")
            self.authenticate(receiver.ingest_tokens)
            if content_type not in DECODERS:
                raise UnsupportedMediaType(
                    f"Content-Type {content_type or '(none)'!r} is not supported; use {PROTOBUF} or {JSON}"
                )
            encoding = self.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding not in ("identity", "gzip"):
                raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported; use gzip")
            # The whole body first (within the receive deadline), so a slow sender holds no worker.
            result = self._export(self.read_body(receiver.max_body_bytes, required=True), encoding)
            self.release_body()  # gone: its bytes are free for other requests while this one is answered
        except (RequestTimeout, ConnectionError):
            raise  # 408 from the Handler, which counts it; or the client is gone
        except UserMetricsError as exc:
            if isinstance(exc, TooManyMembers):
                receiver.stats.cut("gzip_members")
            elif isinstance(exc, TooLarge):
                receiver.stats.cut("max_message_mib")
            # An unread body is drained (small enough) so the client reads the answer, not a reset.
            if not self.finish_body():
                self.close_connection = True
            self.answer_error(exc)
            return
        except Exception as exc:  # noqa: BLE001 - a bug must still get an answer
            log.exception("POST %s failed", PATH)
            self.close_connection = True
            self.answer_error(UserMetricsError(f"internal error: {exc}"))
            return
        self._message(200, result.to_response(), self._answer_type())

    def _export(self, data: bytearray, encoding: str) -> ExportResult:
        """Decompress, decode and store a body in one of the ``workers`` slots (503 when none is free)."""
        receiver = self.server_receiver
        if not receiver.slots.acquire(blocking=False):
            receiver.stats.refuse("workers_busy")
            raise Overloaded(f"all {PATH} workers are busy; retry later")
        try:
            if encoding == "gzip":
                data = gunzip(data, receiver.max_body_bytes)
            if self._content_type() == JSON:
                request, dropped = decode_json_bounded(data, receiver.ingestor.max_span_attributes)
                return receiver.ingestor.export(request, dropped_attributes=dropped)
            return receiver.ingestor.export_body(data)
        finally:
            receiver.slots.release()

    def _content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip().lower()

    def _answer_type(self) -> str:
        """Answers are in the request's encoding; protobuf when it has none we speak."""
        content_type = self._content_type()
        return content_type if content_type in DECODERS else PROTOBUF

    def answer_error(self, error: UserMetricsError) -> None:
        status = http_status(error)
        error_status = status_pb2.Status(code=grpc_status(error).value[0], message=message(error))
        self._message(status, error_status, self._answer_type(), self.error_headers(error))

    def _message(
        self, status: int, message: Message, answer_type: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        if answer_type == JSON:
            data = json_format.MessageToJson(message, indent=None).encode("utf-8")
        else:
            data = message.SerializeToString()
        self.send(status, data, answer_type, headers or [])
