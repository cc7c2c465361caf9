"""The HTTP listeners over real sockets: every answer in one send."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import Service
from otlp import chat, request, span

PROTOBUF = "application/x-protobuf"
CLIENT_BOUND_S = 20.0
# What an answer is, as read by a raw client: (status, headers, body); or what happened instead.
Outcome = tuple[int, dict[str, str], bytes] | str


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def read_answer(sock: socket.socket) -> Outcome:
    """The HTTP answer arriving on ``sock``, or "closed" when the server closed without one."""
    response = http.client.HTTPResponse(sock, method="POST")
    try:
        response.begin()
        return response.status, dict(response.getheaders()), response.read()
    except (http.client.HTTPException, ConnectionError):
        return "closed"


def small_export(user: str = "small") -> bytes:
    return request([span(chat(user=user))]).SerializeToString()


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
