"""What the two HTTP listeners share: a threaded server, optional TLS, answers, bearer checks.

The OTLP/HTTP receiver (``receivers/http.py``) and the JSON API (``api.py``) each define a
``Handler`` subclass and run it in a ``BackgroundServer``. TLS handshakes happen on the
connection's own thread, so a slow or silent client cannot hold up the accept loop. Every answer
goes out in one send.
"""

from __future__ import annotations

import io
import logging
import socket
import ssl
import threading
from collections.abc import Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from user_metrics import __version__
from user_metrics.auth import Tokens
from user_metrics.errors import Unauthenticated

log = logging.getLogger(__name__)

# A connection idle this long (or a client this slow to send its headers or body) is closed.
SOCKET_TIMEOUT_S = 60.0
# A refused request's body is read and thrown away up to this size, so that the client, still
# sending, reads the answer instead of a connection reset; beyond it the connection is closed.
DISCARD_MAX_BYTES = 64 * 1024 * 1024


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2 or newer) from PEM files."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


class _Writer(io.BufferedIOBase):
    """The sending side: what is written goes out at ``flush``, in one sendall.

    So each answer (headers and body, or the base class's error pages) is one send: sent in
    two, the second waits for the client's delayed ACK under Nagle's algorithm (~40 ms).
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock
        self._pending: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._pending.append(bytes(data))
        return len(self._pending[-1])

    def flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._sock.sendall(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    tls: ssl.SSLContext | None = None

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, address = super().get_request()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            conn = self.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        return conn, address


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive, timeouts, the TLS handshake, and plain answers."""

    protocol_version = "HTTP/1.1"
    server_version = f"user-metrics/{__version__}"
    timeout = SOCKET_TIMEOUT_S

    def serve(self, method: str) -> None:
        """Answer one request, whatever its method."""
        raise NotImplementedError

    def do_GET(self) -> None:  # noqa: N802 - the http.server naming
        self.serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self.serve("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self.serve("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self.serve("DELETE")

    def do_HEAD(self) -> None:  # noqa: N802 - answered as its GET would be, without the body
        self.serve("HEAD")

    def setup(self) -> None:
        super().setup()
        self.wfile = _Writer(self.connection)

    def handle_expect_100(self) -> bool:
        answer = super().handle_expect_100()
        self.wfile.flush()  # the client waits for it before sending the body
        return answer

    def handle(self) -> None:
        try:
            if isinstance(self.connection, ssl.SSLSocket):
                self.connection.do_handshake()  # bounded by the socket timeout set in setup()
            super().handle()
        except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
            log.debug("connection from %s ended: %s", self.client_address[0], exc)

    def send(
        self, status: int, data: bytes, content_type: str, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        """One complete answer with a body (its headers only, for HEAD), in one send."""
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

    def discard_body(self) -> bool:
        """Read and drop a body nobody will use; False when the connection must close instead."""
        length = self.headers.get("Content-Length", "0").strip() or "0"
        if "Transfer-Encoding" in self.headers or not length.isdigit() or int(length) > DISCARD_MAX_BYTES:
            return False
        left = int(length)
        while left:
            data = self.rfile.read(min(left, 65536))
            if not data:
                return False
            left -= len(data)
        return True

    def authenticate(self, tokens: Tokens) -> None:
        """Raise Unauthenticated unless the ``Authorization`` header carries one of ``tokens``."""
        authorization = self.headers.get("Authorization")
        if not tokens.allows(authorization):
            raise Unauthenticated(tokens.refusal(authorization))

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("%s " + format, self.address_string(), *args)


class BackgroundServer:
    """A ``Handler`` class served on its own thread (one more thread per connection)."""

    def __init__(self, address: tuple[str, int], handler: type[Handler], tls: ssl.SSLContext | None) -> None:
        self.httpd = _Server(address, handler)
        self.httpd.tls = tls
        self.scheme = "https" if tls is not None else "http"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name=handler.__name__, daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket; also for a server that was never started."""
        if self._thread.is_alive():
            self.httpd.shutdown()  # waits for serve_forever to return: only if it is running
            self._thread.join()
        self.httpd.server_close()
