"""The HTTP listeners' bounds over real sockets, on both listeners: the receive deadline (408), slow
senders that hold no worker, the bytes of bodies and the connections per listener (503), request
heads (431), and every answer in one send.

No client here waits longer than CLIENT_BOUND_S: where the bounds are missing, a test fails
instead of hanging.
"""

from __future__ import annotations

import http.client
import json
import logging
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import Service, cuts
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from otlp import chat, request, span
from senders import post

PROTOBUF = "application/x-protobuf"
CLIENT_BOUND_S = 20.0
# What an answer is, as read by a raw client: (status, headers, body); or what happened instead.
Outcome = tuple[int, dict[str, str], bytes] | str


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def otlp_head(length: int | str = "", path: str = "/v1/traces") -> bytes:
    """The request line and headers of an OTLP/HTTP export of ``length`` bytes."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {PROTOBUF}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def read_answer(sock: socket.socket) -> Outcome:
    """The HTTP answer arriving on ``sock``, or "closed" when the server closed without one."""
    response = http.client.HTTPResponse(sock, method="POST")
    try:
        response.begin()
        return response.status, dict(response.getheaders()), response.read()
    except (http.client.HTTPException, ConnectionError):
        return "closed"


def trickle(
    where: tuple[str, int],
    first: bytes,
    then: bytes = b"a" * 1000,
    *,
    stop: threading.Event | None = None,
    sent: threading.Semaphore | None = None,
    wrap: Callable[[socket.socket], socket.socket] | None = None,
) -> Outcome:
    """Send ``first``, then a byte of ``then`` every 0.25 s until the server answers or closes.

    "still sending" when CLIENT_BOUND_S pass (or ``stop`` is set) first.
    """
    sock = socket.create_connection(where, timeout=CLIENT_BOUND_S)
    if wrap is not None:
        sock = wrap(sock)
    with sock:
        sock.sendall(first)
        if sent is not None:
            sent.release()
        deadline = time.monotonic() + CLIENT_BOUND_S
        for byte in then:
            if select.select([sock], [], [], 0.25)[0]:
                return read_answer(sock)
            if time.monotonic() > deadline or (stop is not None and stop.is_set()):
                return "still sending"
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                return read_answer(sock)
    return "still sending"


def sdk_spans(users: list[str]) -> list[ReadableSpan]:
    """One finished LLM span per user, made by the OTel SDK."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests")
    for user in users:
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 100,
            "gen_ai.usage.output_tokens": 10,
            "user.id": user,
        }
        tracer.start_span("chat gpt-4o-mini", kind=SpanKind.CLIENT, attributes=attributes).end()
    provider.shutdown()
    return list(memory.get_finished_spans())


def small_export(user: str = "small") -> bytes:
    return request([span(chat(user=user))]).SerializeToString()


def accepted(url: str, body: bytes) -> bool:
    """Whether an export is taken (200); not when answered otherwise or closed without an answer."""
    try:
        return post(url, body)[0] == 200
    except (http.client.HTTPException, ConnectionError):
        return False


def status_message(outcome: Outcome) -> tuple[int, int, str]:
    """(HTTP status, google.rpc code, message) of an OTLP/HTTP error answer."""
    assert isinstance(outcome, tuple), outcome
    status, _, body = outcome
    error = status_pb2.Status.FromString(body)
    return status, error.code, error.message


class TestReceiveDeadline:
    def test_slow_senders_hold_no_worker(self, tmp_path: Path) -> None:
        """20 senders trickling bodies (more than the 16 workers): the SDK's exporter still gets through."""
        svc = Service(tmp_path / "um.duckdb")  # 16 workers; the slow ones stay within their 30 s
        app = svc.start()
        stop, sent = threading.Event(), threading.Semaphore(0)
        try:
            with ThreadPoolExecutor(20) as pool:
                where = address(app.otlp_http_url)
                slow = [
                    pool.submit(trickle, where, otlp_head(5000) + b"\x0a", stop=stop, sent=sent)
                    for _ in range(20)
                ]
                for _ in slow:
                    assert sent.acquire(timeout=CLIENT_BOUND_S)
                time.sleep(0.5)  # the server has their headers: the old code gave each a worker now
                exporter = HttpSpanExporter(endpoint=f"{app.otlp_http_url}/v1/traces", timeout=CLIENT_BOUND_S)
                try:
                    assert exporter.export(sdk_spans(["eve", "fay"])) is SpanExportResult.SUCCESS
                finally:
                    exporter.shutdown()
                stop.set()
                # Still within the deadline: nobody was answered or cut off.
                assert [f.result() for f in slow] == ["still sending"] * 20
            assert app.stats.exports_refused["workers_busy"] == 0
        finally:
            stop.set()
            svc.stop()
        assert sorted(r["user_id"] for r in svc.rows()) == ["eve", "fay"]

    def test_a_request_not_received_whole_in_time_is_408_closed_and_counted(self, tmp_path: Path) -> None:
        """Trickled bodies, headers and request lines, on both listeners: 408 at the total deadline, however
        steadily the bytes come, in each listener's error format; counted on /metrics."""
        svc = Service(tmp_path / "um.duckdb", receive_timeout_seconds=2, metrics_refresh_seconds=0)
        app = svc.start()
        otlp, api = address(app.otlp_http_url), address(app.api_url)
        cases = [(otlp, otlp_head(5000) + b"\x0a")] * 16 + [
            (otlp, b"POST /v1/traces HTTP/1.1\r\nHost: test\r\n"),  # headers
            (otlp, b"PO"),  # the request line
            (api, b"GET /healthz HTTP/1.1\r\nHost: test\r\n"),
            (api, b"POST /api/v1/sql HTTP/1.1\r\nHost: test\r\nContent-Length: 900\r\n\r\n{"),
        ]
        try:
            with ThreadPoolExecutor(len(cases)) as pool:
                outcomes = list(pool.map(lambda case: trickle(*case), cases))
            for (where, _), outcome in zip(cases, outcomes, strict=True):
                assert isinstance(outcome, tuple), outcome
                status, headers, body = outcome
                assert (status, headers["Connection"]) == (408, "close")
                if where == otlp:
                    assert headers["Content-Type"] == PROTOBUF
                    _, code, message = status_message(outcome)
                    assert code == 4 and "receive_timeout_seconds" in message  # DEADLINE_EXCEEDED
                else:
                    assert json.loads(body)["status"] == 408
            assert cuts(app.api_url)["receive_timeout_seconds"] == len(cases)
            # The listeners still serve.
            assert post(app.otlp_http_url, small_export())[0] == 200
        finally:
            svc.stop()

    def test_the_deadline_holds_over_tls(self, tmp_path: Path, certificates: dict[str, Path]) -> None:  # noqa: F811
        """TLS records trickled one byte each reach 408 at the deadline too, on both listeners."""
        svc = Service(
            tmp_path / "um.duckdb",
            receive_timeout_seconds=2,
            tls_cert_file=str(certificates["cert"]),
            tls_key_file=str(certificates["key"]),
        )
        app = svc.start()
        context = ssl.create_default_context(cafile=str(certificates["ca"]))

        def wrap(sock: socket.socket) -> socket.socket:
            return context.wrap_socket(sock, server_hostname="127.0.0.1")

        try:
            otlp = trickle(address(app.otlp_http_url), otlp_head(5000) + b"\x0a", wrap=wrap)
            api = trickle(address(app.api_url), b"GET /healthz HTTP/1.1\r\nHost: test\r\n", wrap=wrap)
            assert status_message(otlp)[:2] == (408, 4)
            assert isinstance(api, tuple) and api[0] == 408
            assert app.stats.limit_cuts["receive_timeout_seconds"] == 2
        finally:
            svc.stop()

    def test_keep_alive_idle_time_is_not_the_receive_deadline(self, tmp_path: Path) -> None:
        """A keep-alive connection idle longer than receive_timeout_seconds between requests is still served."""
        svc = Service(tmp_path / "um.duckdb", receive_timeout_seconds=1)
        app = svc.start()
        try:
            conn = http.client.HTTPConnection(*address(app.api_url), timeout=CLIENT_BOUND_S)
            for _ in range(2):
                conn.request("GET", "/healthz")
                response = conn.getresponse()
                assert (response.status, response.will_close) == (200, False)
                response.read()
                time.sleep(2)
            conn.close()
            assert app.stats.limit_cuts["receive_timeout_seconds"] == 0
        finally:
            svc.stop()


class TestBounds:
    def test_bodies_being_received_are_bounded_in_bytes(self, tmp_path: Path) -> None:
        """Two 1 MiB uploads stalled before their last byte hold the listener's 2 MiB (2 workers x 1 MiB):
        another export gets 503 with Retry-After, counted; once they end, exports are taken again."""
        svc = Service(tmp_path / "um.duckdb", max_message_mib=1, http_workers=2, receive_timeout_seconds=60)
        app = svc.start()
        where = address(app.otlp_http_url)
        size = 1024 * 1024 - 100
        uploads = [socket.create_connection(where, timeout=CLIENT_BOUND_S) for _ in range(2)]
        try:
            for sock in uploads:
                sock.sendall(otlp_head(size) + b"\x00" * (size - 1))
            deadline = time.monotonic() + CLIENT_BOUND_S
            while app.otlp_http.budget.used < 2 * size:  # the server has read all but their last bytes
                assert time.monotonic() < deadline, f"the uploads hold {app.otlp_http.budget.used} bytes"
                time.sleep(0.05)
            outcome = post(app.otlp_http_url, small_export())
            status, headers, body = outcome
            assert (status, headers["Retry-After"]) == (503, "1")
            assert "request bodies being received" in status_message((status, headers, body))[2]
            assert app.stats.exports_refused["bodies_full"] == 1
            assert app.stats.exports_refused["workers_busy"] == 0
            for sock in uploads:
                sock.sendall(b"\x00")
                assert status_message(read_answer(sock))[0] == 400  # zeros are no protobuf
            assert post(app.otlp_http_url, small_export("after"))[0] == 200
        finally:
            for sock in uploads:
                sock.close()
            svc.stop()
        assert "after" in {r["user_id"] for r in svc.rows()}

    def test_connections_over_the_bound_get_503_or_are_closed(self, tmp_path: Path) -> None:
        """With 2 connections open, the next 16 are each answered 503 with Retry-After (in the listener's
        format) and closed; further ones are closed at once. Every one of them is counted."""
        svc = Service(tmp_path / "um.duckdb", http_max_connections=2, receive_timeout_seconds=30)
        app = svc.start()
        opened: list[socket.socket] = []

        def connect(url: str) -> socket.socket:
            opened.append(socket.create_connection(address(url), timeout=CLIENT_BOUND_S))
            return opened[-1]

        try:
            for url in (app.otlp_http_url, app.api_url):
                connect(url), connect(url)  # idle: they hold the listener's two connections
            refused = [connect(app.otlp_http_url) for _ in range(16)]  # each waits for its request
            last = connect(app.otlp_http_url)
            assert last.recv(100) == b""  # closed without a word
            refused[0].sendall(otlp_head(len(small_export())) + small_export())
            outcome = read_answer(refused[0])
            assert isinstance(outcome, tuple) and outcome[1]["Retry-After"] == "1"
            assert status_message(outcome) == (503, 14, "more than 2 connections are open; retry later")
            api = connect(app.api_url)
            api.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            outcome = read_answer(api)
            assert isinstance(outcome, tuple) and outcome[1]["Retry-After"] == "1"
            assert (outcome[0], json.loads(outcome[2])["status"]) == (503, 503)
            assert app.stats.exports_refused["connections_full"] == len(refused) + 1 + 1
        finally:
            for sock in opened:
                sock.close()
        try:
            deadline = time.monotonic() + CLIENT_BOUND_S
            while not accepted(app.otlp_http_url, small_export("after")):  # until their threads end
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            svc.stop()

    def test_a_client_gone_mid_body_ends_its_connection_quietly(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A connection reset while its body is read is no internal error: no ERROR log, its thread ends."""
        svc = Service(tmp_path / "um.duckdb", http_max_connections=1)
        app = svc.start()
        try:
            sock = socket.create_connection(address(app.otlp_http_url), timeout=CLIENT_BOUND_S)
            sock.sendall(otlp_head(5000) + b"\x0a")
            deadline = time.monotonic() + CLIENT_BOUND_S
            while app.otlp_http.budget.used == 0:  # its body is being read
                assert time.monotonic() < deadline
                time.sleep(0.05)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # a reset, not a FIN
            while not accepted(app.otlp_http_url, small_export()):  # its thread (the only one) has ended
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            svc.stop()
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []

    @pytest.mark.parametrize(
        ("head", "status"),
        [
            (b"".join(b"X-Big-%d: %s\r\n" % (i, b"a" * 3000) for i in range(60)), 431),  # 180 KiB in all
            (b"X-Line: %s\r\n" % (b"a" * 70_000), 431),  # http.server's own bounds
            (b"".join(b"X-Many-%d: a\r\n" % i for i in range(101)), 431),
            (b"", 414),
        ],
        ids=["head-bytes", "header-line", "header-count", "request-line"],
    )
    def test_request_line_and_headers_are_bounded(self, service: Service, head: bytes, status: int) -> None:
        """A request line and headers over their bounds get 414 or 431, counted; the connection is closed."""
        assert service.app is not None
        path = b"/healthz?" + b"a" * 70_000 if status == 414 else b"/healthz"
        with socket.create_connection(address(service.app.api_url), timeout=CLIENT_BOUND_S) as sock:
            sock.sendall(b"GET %s HTTP/1.1\r\nHost: test\r\n%s\r\n" % (path, head))
            outcome = read_answer(sock)
        assert isinstance(outcome, tuple) and outcome[0] == status
        assert service.app.stats.limit_cuts["request_head_bytes"] == 1


class Sends:
    """Records every sendall of the listeners' sockets (local port ``ports``), with TCP_NODELAY."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, ports: set[int]) -> None:
        self.calls: list[tuple[int, bool]] = []  # (bytes, TCP_NODELAY set)
        original = socket.socket.sendall

        def spy(sock: socket.socket, data: Any, *args: Any) -> None:
            if sock.getsockname()[1] in ports:
                nodelay = bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                self.calls.append((len(data), nodelay))
            original(sock, data, *args)

        monkeypatch.setattr(socket.socket, "sendall", spy)


@pytest.fixture
def sends(service: Service, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sends]:
    assert service.app is not None and service.app.api is not None and service.app.otlp_http is not None
    yield Sends(monkeypatch, {service.app.api.port, service.app.otlp_http.port})


class TestOneSend:
    def test_every_answer_is_one_send(self, service: Service, sends: Sends) -> None:
        """Answers with bodies, HEAD, errors of both listeners and of the HTTP parser: headers and body
        in one send each (two sends wait ~40 ms for the client's delayed ACK), with TCP_NODELAY."""
        assert service.app is not None
        requests = [
            (service.app.api_url, "GET", "/healthz", None, {}),
            (service.app.api_url, "HEAD", "/healthz", None, {}),
            (service.app.api_url, "GET", "/api/v1/nope", None, {}),
            (service.app.api_url, "GET", "/", None, {}),
            (service.app.otlp_http_url, "POST", "/v1/traces", small_export(), {"Content-Type": PROTOBUF}),
            (service.app.otlp_http_url, "POST", "/v1/traces", b"x", {"Content-Type": "text/plain"}),
            (service.app.otlp_http_url, "GET", "/v1/traces", None, {}),
        ]
        connections: dict[str, http.client.HTTPConnection] = {}
        for url, method, path, body, headers in requests * 3:  # three rounds on each keep-alive connection
            conn = connections.setdefault(
                url, http.client.HTTPConnection(*address(url), timeout=CLIENT_BOUND_S)
            )
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            assert not response.will_close
            response.read()
        for conn in connections.values():
            conn.close()
        with socket.create_connection(address(service.app.api_url), timeout=CLIENT_BOUND_S) as sock:
            sock.sendall(b"BREW /pot HTTP/1.1\r\nHost: test\r\n\r\n")  # answered by http.server itself
            outcome = read_answer(sock)
        assert isinstance(outcome, tuple) and outcome[0] == 501 and outcome[2]
        assert len(sends.calls) == len(requests) * 3 + 1
        assert all(nodelay for _, nodelay in sends.calls)
