"""What the two HTTP listeners share: a threaded server within bounds, TLS, answers, bearer checks.

The OTLP/HTTP receiver (``ingest/otlp_http.py``) and the JSON API (``serve/http_api.py``) each define a
``Handler`` subclass and run it in a ``BackgroundServer`` with its ``Bounds``: connections (a
thread each), the time to receive one request (``http_io.DeadlineReader``), the bytes of bodies
being read or held. TLS handshakes happen on the connection's own thread, within the receive
deadline. Every answer goes out in one send.
"""

from __future__ import annotations

import http.client
import io
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

from user_metrics import __version__
from user_metrics.errors import (
    InvalidInput,
    LengthRequired,
    MethodNotAllowed,
    Overloaded,
    RequestTimeout,
    TooLarge,
    Unauthenticated,
    UserMetricsError,
)
from user_metrics.net.auth import Tokens
from user_metrics.net.http_io import (
    CHUNKED,
    ByteBudget,
    DeadlineReader,
    HeadTooLarge,
    Sender,
    body_length,
    read_body,
    skip_body,
)
from user_metrics.stats import Stats

log = logging.getLogger(__name__)

# A keep-alive connection idle this long between requests is closed (no answer: the client may
# be sending its next request just then).
IDLE_TIMEOUT_S = 60.0
# A refused request's body is read and thrown away up to this size, so that the client, still
# sending, reads the answer instead of a connection reset; beyond it the connection is closed.
DISCARD_MAX_BYTES = 64 * 1024 * 1024
# Connections beyond max_connections given a thread to be answered 503; beyond these, closed.
REFUSING_CONNECTIONS = 16
# After its last answer a connection is half-closed, and what the client still sends is read and
# dropped for up to this long: closed with unread bytes, it would reset, and the client could lose
# the answer (a 408 or a 503 to a client still sending, say).
LINGER_S = 2.0
# The request line (at most 64 KiB, else 414) and the headers, together.
MAX_HEAD_BYTES = 128 * 1024


@dataclass(frozen=True)
class Bounds:
    """What the clients of one listener may hold."""

    receive_timeout: float  # seconds to send one request: request line, headers and body
    max_connections: int  # connections served at once, a thread each
    body_bytes: int  # bytes of request bodies being read or held at once, all connections together


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2 or newer) from PEM files."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # connections waiting for accept(); socketserver's 5 drops bursts

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[Handler],
        tls: ssl.SSLContext | None,
        stats: Stats,
        bounds: Bounds,
    ) -> None:
        self.handler = handler
        self.tls = tls
        self.stats = stats
        self.bounds = bounds
        self.budget = ByteBudget(bounds.body_bytes)
        self._serving = threading.BoundedSemaphore(bounds.max_connections)
        self._refusing = threading.BoundedSemaphore(REFUSING_CONNECTIONS)
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, address = super().get_request()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            conn = self.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        return conn, address

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread for the connection: to serve it, to answer it 503, or none (closed at once)."""
        if self._serving.acquire(blocking=False):
            slots = self._serving
        else:
            self.stats.refuse("connections_full")
            if not self._refusing.acquire(blocking=False):
                self.close_request(request)  # no lingering on the accept loop's thread
                return
            slots = self._refusing
        refusing = slots is self._refusing
        try:
            threading.Thread(
                target=self._serve, args=(request, client_address, slots, refusing), daemon=True
            ).start()
        except RuntimeError:  # no thread to be had
            slots.release()
            self.close_request(request)

    def _serve(
        self, request: Any, client_address: Any, slots: threading.BoundedSemaphore, refusing: bool
    ) -> None:
        try:
            self.handler(request, client_address, self, refusing)
        except Exception:  # noqa: BLE001 - as socketserver's own threads do
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            slots.release()

    def shutdown_request(self, request: Any) -> None:
        """Half-close, drop what the client still sends (LINGER_S at most), then close."""
        try:
            request.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_S
            while (left := deadline - time.monotonic()) > 0:
                request.settimeout(left)
                if not request.recv(65536):
                    break
        except OSError:  # timed out, reset, or never connected
            pass
        self.close_request(request)


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive within the listener's bounds, the TLS handshake, and plain answers."""

    protocol_version = "HTTP/1.1"
    server_version = f"user-metrics/{__version__}"
    server: _Server

    def __init__(self, request: Any, client_address: Any, server: _Server, refusing: bool = False) -> None:
        self.refusing = refusing  # over max_connections: every request is answered 503
        self.body_state = "untouched"  # then "reading", then "read"
        self._held = 0  # bytes this request holds of the listener's body budget
        super().__init__(request, client_address, server)

    def serve(self, method: str) -> None:
        """Answer one request, whatever its method."""
        raise NotImplementedError

    def answer_error(self, error: UserMetricsError) -> None:
        """Answer ``error`` in this listener's format (the request may not have been parsed)."""
        raise NotImplementedError

    def do_GET(self) -> None:  # noqa: N802 - the http.server naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def do_HEAD(self) -> None:  # noqa: N802 - answered as its GET would be, without the body
        self._dispatch("HEAD")

    def setup(self) -> None:
        self.connection = self.request
        self.reader = DeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self.reader)
        self.wfile = Sender(self.connection)

    def handle(self) -> None:
        try:
            if isinstance(self.connection, ssl.SSLSocket):
                self.connection.settimeout(self.server.bounds.receive_timeout)
                try:
                    self.connection.do_handshake()
                except TimeoutError:
                    self.server.stats.cut("receive_timeout_seconds")
                    raise
            super().handle()
        except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
            log.debug("connection from %s ended: %s", self.client_address[0], exc)

    def handle_one_request(self) -> None:
        """One request within the bounds: the idle wait for it, then its receive deadline."""
        self.command, self.path, self.requestline = "", "", ""
        self.request_version = self.protocol_version  # until parsed: a 408 still gets a status line
        self.headers = http.client.HTTPMessage()
        self.body_state = "untouched"
        if not self._next_request():
            self.close_connection = True
            return
        self.reader.start(self.server.bounds.receive_timeout)
        self.reader.head_limit = MAX_HEAD_BYTES  # lifted in _dispatch, once the headers are parsed
        try:
            super().handle_one_request()
        except RequestTimeout as exc:
            self.server.stats.cut("receive_timeout_seconds")
            self.close_connection = True
            self.answer_error(exc)
        except HeadTooLarge as exc:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, str(exc))
        finally:
            self.release_body()
        self.wfile.flush()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        if code in (HTTPStatus.REQUEST_URI_TOO_LONG, HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE):
            # MAX_HEAD_BYTES, and http.server's own bounds: a line over 64 KiB, over 100 headers.
            self.server.stats.cut("request_head_bytes")
        super().send_error(code, message, explain)

    def handle_expect_100(self) -> bool:
        answer = super().handle_expect_100()
        self.wfile.flush()  # the client waits for it before sending the body
        return answer

    def _next_request(self) -> bool:
        """Wait for the first byte of the next request; False when the client closed or went idle."""
        idle = self.server.bounds.receive_timeout if self.refusing else IDLE_TIMEOUT_S
        self.reader.start(idle)
        self.reader.head_limit = None
        try:
            return bool(cast(io.BufferedReader, self.rfile).peek(1))
        except RequestTimeout:
            return False

    def _dispatch(self, method: str) -> None:
        self.reader.head_limit = None
        if not self.refusing:
            self.serve(method)
            return
        self.close_connection = True
        self.discard_body()
        limit = self.server.bounds.max_connections
        self.answer_error(Overloaded(f"more than {limit} connections are open; retry later"))

    def send(
        self, status: int, data: bytes, content_type: str, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        """One complete answer with a body (its headers only, for HEAD), in one send."""
        self.release_body()  # answered: the body is done with, and the client may send the next at once
        self.send_response(HTTPStatus(status))
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()

    def read_body(self, limit: int, *, required: bool) -> bytearray:
        """The request's body, at most ``limit`` bytes, held in the listener's budget until answered.

        LengthRequired when ``required`` and none is declared (empty when not required);
        InvalidInput for malformed framing, TooLarge over ``limit``, Overloaded when the
        listener's bodies hold its budget, RequestTimeout past the receive deadline.
        """
        length = body_length(self.headers)
        if length is None:
            if required:
                raise LengthRequired("the request needs a Content-Length or chunked transfer encoding")
            return bytearray()
        if length > limit:
            raise TooLarge(f"the body is {length} bytes, larger than the limit of {limit}")
        if length != CHUNKED and not self.server.budget.fits(length):
            raise self._no_room()  # before reading any of it: the body can still be drained
        self.body_state = "reading"
        body = read_body(self.rfile, length, limit, self._hold)
        self.body_state = "read"
        return body

    def release_body(self) -> None:
        """Give the body's bytes back to the listener's budget (the body must no longer be used)."""
        if self._held:
            self.server.budget.give(self._held)
            self._held = 0

    def finish_body(self) -> bool:
        """After an error: True when the connection can take another request (the body was read, or
        is drained now); False when it must close (half read, or too large or malformed to drain)."""
        if self.body_state == "untouched":
            return self.discard_body()
        return self.body_state == "read"

    def discard_body(self) -> bool:
        """Read and drop a body nobody will use; False when the connection must close instead."""
        try:
            length = body_length(self.headers)
            if length is not None:
                skip_body(self.rfile, length, DISCARD_MAX_BYTES)
        except (InvalidInput, TooLarge):
            return False
        self.body_state = "read"
        return True

    def _hold(self, size: int) -> None:
        if not self.server.budget.take(size):
            raise self._no_room()
        self._held += size

    def _no_room(self) -> Overloaded:
        self.server.stats.refuse("bodies_full")
        limit = self.server.budget.limit
        return Overloaded(f"the request bodies being received hold all {limit} bytes allowed; retry later")

    @staticmethod
    def error_headers(error: UserMetricsError) -> list[tuple[str, str]]:
        """The headers an error answer carries: WWW-Authenticate (401), Allow (405), Retry-After."""
        headers = []
        if isinstance(error, Unauthenticated):
            headers.append(("WWW-Authenticate", 'Bearer realm="user-metrics"'))
        if isinstance(error, MethodNotAllowed):
            headers.append(("Allow", error.allow))
        retry_after = getattr(error, "retry_after_seconds", None)
        if retry_after is not None:
            headers.append(("Retry-After", str(retry_after)))
        return headers

    def authenticate(self, tokens: Tokens) -> None:
        """Raise Unauthenticated unless the ``Authorization`` header carries one of ``tokens``."""
        authorization = self.headers.get("Authorization")
        if not tokens.allows(authorization):
            raise Unauthenticated(tokens.refusal(authorization))

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("%s " + format, self.address_string(), *args)


class BackgroundServer:
    """A ``Handler`` class served on its own thread (one more thread per connection)."""

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[Handler],
        tls: ssl.SSLContext | None,
        stats: Stats,
        bounds: Bounds,
    ) -> None:
        self.httpd = _Server(address, handler, tls, stats, bounds)
        self.scheme = "https" if tls is not None else "http"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name=handler.__name__, daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def budget(self) -> ByteBudget:
        """The bytes of request bodies being read or held, and their limit."""
        return self.httpd.budget

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket; also for a server that was never started."""
        if self._thread.is_alive():
            self.httpd.shutdown()  # waits for serve_forever to return: only if it is running
            self._thread.join()
        self.httpd.server_close()
