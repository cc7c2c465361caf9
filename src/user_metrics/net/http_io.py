"""A connection's bytes within bounds: one deadline per request, one send per answer, body framing.

``DeadlineReader`` is the receiving side of a connection. Every recv it makes ends by the
request's deadline, so a client trickling bytes cannot make a request last longer than
``receive_timeout_seconds``: a socket timeout bounds one recv only, and one ``readline`` may make
thousands. ``Sender`` is the sending side: an answer goes out in one send. ``read_body`` reads
a Content-Length or chunked body, taking each piece from the listener's ``ByteBudget`` before
reading it; malformed chunked framing is refused, never read to the end of the stream.
"""

from __future__ import annotations

import io
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from email.message import Message
from typing import Any

from user_metrics.errors import InvalidInput, RequestTimeout, TooLarge

CHUNKED = -1  # body_length() of a chunked body
PIECE = 64 * 1024  # bytes taken from the budget and read at a time
MAX_CHUNK_LINE = 1024  # a chunk-size line with its extensions, CRLF included
MAX_TRAILER_LINE = 8192
MAX_TRAILER_LINES = 64
SEND_TIMEOUT_S = 60.0  # to write one answer to a client that does not read it
_HEX = re.compile(rb"[0-9A-Fa-f]+")
_DIGITS = re.compile(r"[0-9]+")


class HeadTooLarge(Exception):
    """The request line and headers need more than the reader's ``head_limit`` bytes."""


class DeadlineReader(io.RawIOBase):
    """A socket's receiving side whose every recv ends by one deadline (TLS sockets too).

    ``start(seconds)`` sets the deadline; past it a read raises RequestTimeout. While
    ``head_limit`` is set, a read past that many bytes since ``start`` raises HeadTooLarge.
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock
        self.seconds = 0.0
        self._deadline = 0.0
        self._received = 0
        self.head_limit: int | None = None

    def start(self, seconds: float) -> None:
        """The next reads must all end within ``seconds`` from now."""
        self.seconds = seconds
        self._deadline = time.monotonic() + seconds
        self._received = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        if self.head_limit is not None and self._received >= self.head_limit:
            raise HeadTooLarge(f"the request line and headers are larger than {self.head_limit} bytes")
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise self._late()
        # An SSLSocket ends its whole read by this timeout too (CPython gives each call a deadline).
        self._sock.settimeout(left)
        try:
            received = self._sock.recv_into(buffer)
        except TimeoutError:
            raise self._late() from None
        self._received += received
        return received

    def _late(self) -> RequestTimeout:
        return RequestTimeout(
            f"the request did not arrive whole within {self.seconds:g} s (receive_timeout_seconds)"
        )


class Sender(io.BufferedIOBase):
    """The sending side: what is written goes out at ``flush``, in one sendall.

    So each answer (headers and body; http.server's own error pages too) is one send: sent in
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
            self._sock.settimeout(SEND_TIMEOUT_S)
            self._sock.sendall(data)


class ByteBudget:
    """Bytes of request bodies being read or held at once, shared by one listener's connections."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        return self._used

    def fits(self, size: int) -> bool:
        """Whether ``size`` more bytes fit now (nothing is taken)."""
        return self._used + size <= self.limit

    def take(self, size: int) -> bool:
        """Take ``size`` bytes; False (nothing taken) when they do not fit."""
        with self._lock:
            if self._used + size > self.limit:
                return False
            self._used += size
            return True

    def give(self, size: int) -> None:
        """Give back bytes taken earlier."""
        with self._lock:
            self._used -= size


def body_length(headers: Message) -> int | None:
    """Content-Length, CHUNKED for a chunked body, None when the request declares no body.

    InvalidInput for framing that cannot be trusted: a transfer coding other than chunked, both
    Content-Length and Transfer-Encoding (a request smuggling shape), or a malformed or
    conflicting Content-Length. TooLarge for a Content-Length too long to be a size.
    """
    codings = [c.strip().lower() for c in ",".join(headers.get_all("Transfer-Encoding", [])).split(",")]
    lengths = [v.strip() for v in headers.get_all("Content-Length", [])]
    if codings != [""]:
        if codings != ["chunked"]:
            coding = ", ".join(codings)[:60]
            raise InvalidInput(f"Transfer-Encoding {coding!r} is not supported; use chunked")
        if lengths:
            raise InvalidInput("a request may not have both Content-Length and Transfer-Encoding")
        return CHUNKED
    if not lengths:
        return None
    if any(not _DIGITS.fullmatch(v) for v in lengths) or len(set(lengths)) > 1:
        raise InvalidInput(f"Content-Length is not a number: {', '.join(lengths)[:40]!r}")
    digits = lengths[0].lstrip("0") or "0"
    if len(digits) > 18:
        raise TooLarge(f"the body is {digits[:20]}... bytes, far over any limit")
    return int(digits)


def read_body(rfile: io.BufferedIOBase, length: int, limit: int, hold: Callable[[int], None]) -> bytearray:
    """The body of ``length`` bytes (or CHUNKED), at most ``limit``; ``hold(n)`` before reading n more.

    TooLarge beyond ``limit``; InvalidInput for a body that ends early or malformed chunked framing.
    """
    body = bytearray()
    for size in _sizes(rfile, length, limit):
        _copy(rfile, size, hold, body)
    return body


def skip_body(rfile: io.BufferedIOBase, length: int, limit: int) -> None:
    """Read and drop a body of ``length`` bytes (or CHUNKED), at most ``limit``."""
    for size in _sizes(rfile, length, limit):
        _copy(rfile, size, lambda _size: None, None)


def _sizes(rfile: io.BufferedIOBase, length: int, limit: int) -> Iterator[int]:
    """The sizes of the body's pieces of data, to be read by the caller in turn."""
    if length != CHUNKED:
        if length > limit:
            raise TooLarge(f"the body is {length} bytes, larger than the limit of {limit}")
        yield length
        return
    total = 0
    while True:
        size = _chunk_size(rfile.readline(MAX_CHUNK_LINE + 1))
        if size == 0:
            break
        total += size
        if total > limit:
            raise TooLarge(f"the chunked body is larger than the limit of {limit} bytes")
        yield size
        if rfile.readline(3) != b"\r\n":
            raise InvalidInput("malformed chunked body: a chunk's data is not followed by CRLF")
    for _ in range(MAX_TRAILER_LINES):
        line = rfile.readline(MAX_TRAILER_LINE + 1)
        if line == b"\r\n":
            return
        if not line.endswith(b"\r\n"):
            raise InvalidInput(
                f"malformed chunked body: a trailer line is cut short or over {MAX_TRAILER_LINE} bytes"
            )
    raise InvalidInput(f"malformed chunked body: more than {MAX_TRAILER_LINES} trailer lines")


def _chunk_size(line: bytes) -> int:
    if not line.endswith(b"\r\n"):
        raise InvalidInput(
            f"malformed chunked body: a chunk-size line is cut short or over {MAX_CHUNK_LINE} bytes"
        )
    size = line[:-2].split(b";", 1)[0].rstrip(b" \t")  # whitespace may precede the extensions
    if not _HEX.fullmatch(size):
        text = size[:32].decode("latin-1")
        raise InvalidInput(f"malformed chunked body: chunk size {text!r} is not a hexadecimal number")
    return int(size, 16)


def _copy(rfile: io.BufferedIOBase, size: int, hold: Callable[[int], None], out: bytearray | None) -> None:
    while size:
        piece = min(size, PIECE)
        hold(piece)
        data = rfile.read(piece)
        if len(data) != piece:
            raise InvalidInput("the body ended before its declared length")
        if out is not None:
            out += data
        size -= piece
