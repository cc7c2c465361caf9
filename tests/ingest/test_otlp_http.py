"""OTLP/HTTP ``POST /v1/traces`` against a real server: the SDK's HTTP exporter, the spec's JSON, raw HTTP."""

from __future__ import annotations

import copy
import gzip
import http.client
import json
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import Service
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from otlp import chat, request, span
from senders import CALLS, PROTOBUF, post, raw_export, send_with_sdk

JSON = "application/json"

# The OTLP specification's JSON example, verbatim: opentelemetry-proto/examples/trace.json
# (a server span, so nothing for us to store, but it must be accepted).
SPEC_EXAMPLE = """{
  "resourceSpans": [
    {
      "resource": {
        "attributes": [
          {
            "key": "service.name",
            "value": {
              "stringValue": "my.service"
            }
          }
        ]
      },
      "scopeSpans": [
        {
          "scope": {
            "name": "my.library",
            "version": "1.0.0",
            "attributes": [
              {
                "key": "my.scope.attribute",
                "value": {
                  "stringValue": "some scope attribute"
                }
              }
            ]
          },
          "spans": [
            {
              "traceId": "5B8EFFF798038103D269B633813FC60C",
              "spanId": "EEE19B7EC3C1B174",
              "parentSpanId": "EEE19B7EC3C1B173",
              "name": "I'm a server span",
              "startTimeUnixNano": 1544712660000000000,
              "endTimeUnixNano": 1544712661000000000,
              "kind": 2,
              "attributes": [
                {
                  "key": "my.span.attr",
                  "value": {
                    "stringValue": "some value"
                  }
                }
              ]
            }
          ]
        }
      ]
    }
  ]
}"""


@pytest.fixture
def service(service_on_each_path: Service) -> Service:
    """Every test of this file that takes ``service`` runs on both ingest paths (conftest.INGEST_PATHS)."""
    return service_on_each_path


def llm_example() -> dict[str, Any]:
    """The spec's example made an LLM call: 64-bit integers as strings and as numbers, unknown fields."""
    doc = json.loads(SPEC_EXAMPLE)
    target = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    target.update(
        name="chat gpt-4o-mini",
        kind=3,
        startTimeUnixNano="1795000000000000000",  # a string, as the JSON mapping writes int64
        endTimeUnixNano=1795000000250000000,  # a number, which receivers must accept too
        status={"code": 0},
        futureField={"anything": [1, 2]},  # unknown fields are ignored
    )
    target["attributes"] = [
        {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
        {"key": "gen_ai.provider.name", "value": {"stringValue": "openai"}},
        {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o-mini"}},
        {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "1000"}},
        {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 20}},
        {"key": "user.id", "value": {"stringValue": "json-user"}},
        {"key": "property.plan", "value": {"stringValue": "pro"}},
    ]
    return doc


def status_of(body: bytes, content_type: str) -> status_pb2.Status:
    """The google.rpc.Status an error answer carries, in the request's encoding."""
    if content_type == JSON:
        document = json.loads(body)
        return status_pb2.Status(code=document.get("code", 0), message=document.get("message", ""))
    return status_pb2.Status.FromString(body)


def llm_request(user: str = "u1", **attrs: Any) -> bytes:
    return request([span(chat(user=user, **attrs))]).SerializeToString()


class TestSdkExporter:
    def test_http_exporter_stores_what_the_grpc_exporter_stores(self, service: Service) -> None:
        """The SDK's OTLP/HTTP exporter (protobuf, gzip) leads to the same rows as the gRPC one."""
        url = service.app.otlp_http_url
        exporter = HttpSpanExporter(endpoint=f"{url}/v1/traces", compression=Compression.Gzip)
        send_with_sdk("", CALLS, exporter)
        rows = service.rows()
        assert [(r["user_id"], r["request_model"]) for r in rows] == [(c["user"], c["model"]) for c in CALLS]
        assert [r["properties"] for r in rows] == [{"plan": c["plan"]} for c in CALLS]
        assert [(r["input_tokens"], r["output_tokens"]) for r in rows] == [(c["in"], c["out"]) for c in CALLS]
        assert all(r["cost_usd"] is not None for r in rows if r["request_model"] != "no-such-model-xyz")

    def test_uncompressed_export(self, service: Service) -> None:
        exporter = HttpSpanExporter(endpoint=f"{service.app.otlp_http_url}/v1/traces")
        send_with_sdk("", CALLS[:2], exporter)
        assert len(service.rows()) == 2


class TestJson:
    def test_the_specification_example_is_accepted(self, service: Service) -> None:
        """A server span: accepted with an empty response in JSON, counted as received, nothing stored."""
        status, headers, body = post(service.app.otlp_http_url, SPEC_EXAMPLE.encode(), JSON)
        assert (status, headers["Content-Type"], json.loads(body)) == (200, JSON, {})
        assert (service.app.stats.spans_received, service.app.stats.spans_skipped) == (1, 1)
        assert service.rows() == []

    def test_an_llm_span_in_json_is_stored_with_its_hex_ids(self, service: Service) -> None:
        status, _, body = post(service.app.otlp_http_url, json.dumps(llm_example()).encode(), JSON)
        assert (status, json.loads(body)) == (200, {})
        [row] = service.rows()
        assert (row["trace_id"], row["span_id"], row["parent_span_id"]) == (
            "5b8efff798038103d269b633813fc60c",
            "eee19b7ec3c1b174",
            "eee19b7ec3c1b173",
        )
        assert (row["user_id"], row["properties"], row["input_tokens"], row["output_tokens"]) == (
            "json-user",
            {"plan": "pro"},
            1000,
            20,
        )
        assert row["duration_ms"] == pytest.approx(250.0)
        assert row["service_name"] == "my.service"

    def test_json_and_protobuf_and_grpc_share_one_dedupe(self, service: Service) -> None:
        """The same span over JSON, gzip'd JSON, protobuf and gRPC is stored once."""
        doc = json.dumps(llm_example()).encode()
        url = service.app.otlp_http_url
        assert post(url, doc, JSON)[0] == 200
        assert post(url, gzip.compress(doc), JSON, {"Content-Encoding": "gzip"})[0] == 200
        from user_metrics.ingest.ingestor import decode_json

        as_protobuf = decode_json(doc).SerializeToString()
        assert post(url, as_protobuf)[0] == 200
        raw_export(service.target, as_protobuf)
        assert len(service.rows()) == 1
        assert service.app is None

    def test_partial_success_in_json(self, service: Service) -> None:
        """A rejected span is reported in the JSON response (int64 as a string), the rest stored."""
        doc = llm_example()
        spans = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
        bad = copy.deepcopy(spans[0])
        bad["spanId"] = "00000000000000AA"
        bad["attributes"][3] = {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "-5"}}
        spans.append(bad)
        status, _, body = post(service.app.otlp_http_url, json.dumps(doc).encode(), JSON)
        answer = json.loads(body)
        assert status == 200
        assert answer["partialSuccess"]["rejectedSpans"] == "1"
        assert "negative" in answer["partialSuccess"]["errorMessage"]
        assert len(service.rows()) == 1

    @pytest.mark.parametrize(
        ("body", "needle"),
        [
            (b"{not json", "not JSON"),
            (b"[1, 2]", "not a JSON object"),
            (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', "traceId must be hex"),
            (b'{"resourceSpans": "many"}', "not an OTLP"),
            (
                b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]}',
                "not an OTLP",
            ),
            (b"\xff\xfe{}", "not JSON"),
            # Found by the fuzz suite: a lone surrogate made the decoder raise SystemError (500), and
            # one quoted in the error message made the answer itself fail (no answer at all).
            (b'{"\\ud800": 1}', "not an OTLP"),
            (b'{"resourceSpans": "\\ud800"}', "not an OTLP"),
        ],
    )
    def test_undecodable_json_is_400_with_a_json_status(
        self, service: Service, body: bytes, needle: str
    ) -> None:
        status, headers, answer = post(service.app.otlp_http_url, body, JSON)
        assert (status, headers["Content-Type"]) == (400, JSON)
        error = status_of(answer, JSON)
        assert error.code == 3 and needle in error.message  # INVALID_ARGUMENT


class TestProtobuf:
    def test_partial_success_in_protobuf(self, service: Service) -> None:
        body = request([span(chat(user="ok")), span(chat(user="bad", inp=-1))]).SerializeToString()
        status, headers, answer = post(service.app.otlp_http_url, body)
        response = ExportTraceServiceResponse.FromString(answer)
        assert (status, headers["Content-Type"]) == (200, PROTOBUF)
        assert response.partial_success.rejected_spans == 1
        assert [r["user_id"] for r in service.rows()] == ["ok"]

    def test_undecodable_protobuf_is_400(self, service: Service) -> None:
        status, _, answer = post(service.app.otlp_http_url, b"\x0a\xff\xff\xff\xff\x0f garbage")
        error = status_of(answer, PROTOBUF)
        assert status == 400 and error.code == 3 and "not an OTLP" in error.message

    def test_content_type_parameters_are_ignored(self, service: Service) -> None:
        status, _, _ = post(
            service.app.otlp_http_url, llm_request(), "application/x-protobuf; charset=binary"
        )
        assert status == 200
        assert len(service.rows()) == 1

    def test_keep_alive_connection_serves_several_exports(self, service: Service) -> None:
        parts = urlsplit(service.app.otlp_http_url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        for i in range(3):
            conn.request("POST", "/v1/traces", body=llm_request(f"k{i}"), headers={"Content-Type": PROTOBUF})
            response = conn.getresponse()
            response.read()
            assert response.status == 200
        conn.close()
        assert len(service.rows()) == 3

    def test_chunked_body(self, service: Service) -> None:
        body = llm_request("chunky")
        parts = urlsplit(service.app.otlp_http_url)
        with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
            head = (
                "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            )
            half = len(body) // 2
            chunks = b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in (body[:half], body[half:]))
            sock.sendall(head.encode() + chunks + b"0\r\n\r\n")
            answer = b""
            while data := sock.recv(65536):
                answer += data
        assert answer.startswith(b"HTTP/1.1 200")
        assert [r["user_id"] for r in service.rows()] == ["chunky"]


class TestRefusals:
    @pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
    def test_wrong_content_type_wrong_encoding_wrong_path_wrong_method(
        self, service: Service, content_type: str
    ) -> None:
        """415, 415, 404, 405 — each with a google.rpc.Status in the request's encoding; nothing stored."""
        url = service.app.otlp_http_url
        status, _, body = post(url, b"hello", "text/plain")
        assert status == 415 and "text/plain" in status_of(body, PROTOBUF).message
        status, headers, body = post(url, llm_request(), content_type, {"Content-Encoding": "br"})
        assert (status, headers["Content-Type"]) == (415, content_type)
        assert "br" in status_of(body, content_type).message
        status, _, body = post(url, llm_request(), content_type, path="/v1/metrics")
        assert status == 404 and "/v1/traces" in status_of(body, content_type).message
        status, headers, _ = post(url, b"", content_type, method="GET")
        assert (status, headers["Allow"]) == (405, "POST")
        status, headers, body = post(url, b"", content_type, method="HEAD")
        assert (status, headers["Allow"], body) == (405, "POST", b"")
        assert service.rows() == []

    def test_over_the_size_limit_is_413_and_counted(self, tmp_path: Any) -> None:
        """Too large as sent, and too large once decompressed (a gzip bomb): 413, counted, nothing stored."""
        service = Service(tmp_path / "um.duckdb", max_message_mib=1)
        app = service.start()
        try:
            big = request([span(chat(user="big", blob="x" * (1024 * 1024)))]).SerializeToString()
            status, _, body = post(app.otlp_http_url, big)
            assert status == 413 and "larger than" in status_of(body, PROTOBUF).message
            bomb = gzip.compress(b"\x00" * (8 * 1024 * 1024))
            assert len(bomb) < 100_000
            status, _, body = post(app.otlp_http_url, bomb, PROTOBUF, {"Content-Encoding": "gzip"})
            assert status == 413 and "decompressed" in status_of(body, PROTOBUF).message
            status, _, body = post(
                app.otlp_http_url, gzip.compress(llm_request())[:-9], PROTOBUF, {"Content-Encoding": "gzip"}
            )
            assert status == 400 and "gzip" in status_of(body, PROTOBUF).message
            assert app.stats.limit_cuts["max_message_mib"] == 2
            assert post(app.otlp_http_url, llm_request("small"))[0] == 200
            assert [r["user_id"] for r in service.rows()] == ["small"]
        finally:
            service.stop()

    def test_no_length_is_411(self, service: Service) -> None:
        parts = urlsplit(service.app.otlp_http_url)
        with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
            sock.sendall(
                b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n\r\n"
            )
            assert sock.recv(65536).startswith(b"HTTP/1.1 411")


def raw_post(url: str, data: bytes, *, half_close: bool = False) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` as it is on a fresh connection and read the answer (30 s at most)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        response = http.client.HTTPResponse(sock, method="POST")
        response.begin()
        return response.status, dict(response.getheaders()), response.read()


CHUNKED_HEAD = (
    b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


def chunked(body: bytes, size: Callable[[int], bytes] = lambda n: b"%x" % n) -> bytes:
    """``body`` in two chunks, each announced by ``size(length)``, then the last chunk."""
    half = len(body) // 2
    return b"".join(size(len(c)) + b"\r\n" + c + b"\r\n" for c in (body[:half], body[half:])) + b"0\r\n\r\n"


class TestChunkedFraming:
    def test_extensions_and_trailers_are_accepted(self, service: Service) -> None:
        body = chunked(llm_request("framed"), lambda n: b"%X ;name=value;x" % n)
        status, _, _ = raw_post(service.app.otlp_http_url, CHUNKED_HEAD + body[:-2] + b"Trailer-A: 1\r\n\r\n")
        assert status == 200
        assert [r["user_id"] for r in service.rows()] == ["framed"]

    @pytest.mark.parametrize(
        ("size", "needle"),
        [
            (lambda n: b"-1", "'-1' is not a hexadecimal number"),  # read to the end of the stream before
            (lambda n: b"+%x" % n, "is not a hexadecimal number"),  # int(..., 16) took these before
            (lambda n: b"0x%x" % n, "is not a hexadecimal number"),
            (lambda n: (b"%x" % n)[:1] + b"_" + (b"%x" % n)[1:], "is not a hexadecimal number"),
            (lambda n: b" %x" % n, "is not a hexadecimal number"),
            (lambda n: b"", "is not a hexadecimal number"),
            (lambda n: b"zz", "is not a hexadecimal number"),
            (lambda n: b"%x;" % n + b"e" * 2000, "over 1024 bytes"),
        ],
        ids=["minus", "plus", "0x", "underscore", "space", "empty", "not-hex", "long-extension"],
    )
    def test_malformed_chunk_sizes_are_400(
        self, service: Service, size: Callable[[int], bytes], needle: str
    ) -> None:
        """Each is refused at once with a clear status, never read to the end of the stream; nothing stored."""
        status, headers, answer = raw_post(
            service.app.otlp_http_url, CHUNKED_HEAD + chunked(llm_request(), size)
        )
        assert (status, headers["Connection"]) == (400, "close")
        assert needle in status_of(answer, PROTOBUF).message
        assert service.rows() == []

    @pytest.mark.parametrize("size", [b"f" * 16, b"1" + b"0" * 40])
    def test_a_chunk_over_the_limit_is_413_before_it_is_read(self, service: Service, size: bytes) -> None:
        status, _, answer = raw_post(service.app.otlp_http_url, CHUNKED_HEAD + size + b"\r\nxx")
        assert status == 413 and "larger than the limit" in status_of(answer, PROTOBUF).message
        assert service.app.stats.limit_cuts["max_message_mib"] == 1

    @pytest.mark.parametrize(
        ("framing", "needle"),
        [
            (b"5\r\nabcdeXY\r\n0\r\n\r\n", "not followed by CRLF"),
            (b"5\r\nabcde\r\n0\r\n" + b"T: x\r\n" * 65 + b"\r\n", "trailer lines"),
            (b"5\r\nab", "ended before"),  # and the client sends no more
        ],
        ids=["chunk-without-crlf", "endless-trailers", "cut-short"],
    )
    def test_malformed_chunks_are_400(self, service: Service, framing: bytes, needle: str) -> None:
        status, _, answer = raw_post(service.app.otlp_http_url, CHUNKED_HEAD + framing, half_close=True)
        assert status == 400 and needle in status_of(answer, PROTOBUF).message

    @pytest.mark.parametrize(
        ("headers", "needle"),
        [
            (b"Transfer-Encoding: gzip, chunked\r\n", "Transfer-Encoding 'gzip, chunked' is not supported"),
            (
                b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                "both Content-Length and Transfer-Encoding",
            ),
            (b"Content-Length: 5\r\nContent-Length: 6\r\n", "Content-Length is not a number"),
            (
                "Content-Length: \u00b2\r\n".encode("latin-1"),
                "Content-Length is not a number",
            ),  # a 500 before
        ],
        ids=["other-coding", "both", "two-lengths", "superscript-two"],
    )
    def test_untrustworthy_framing_is_400(self, service: Service, headers: bytes, needle: str) -> None:
        head = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n" + headers
        status, _, answer = raw_post(service.app.otlp_http_url, head + b"\r\n5\r\nabcde\r\n0\r\n\r\n")
        assert status == 400 and needle in status_of(answer, PROTOBUF).message


class TestGzipMembers:
    def test_a_body_in_many_members_is_stored(self, service: Service) -> None:
        """A body cut into 1024 gzip members (the most taken), most of them empty, is stored whole."""
        body = llm_request("members")
        step = -(-len(body) // 1023)
        members = [gzip.compress(body[i : i + step], mtime=0) for i in range(0, len(body), step)]
        packed = gzip.compress(b"", mtime=0) * (1024 - len(members)) + b"".join(members)
        status, _, _ = post(service.app.otlp_http_url, packed, PROTOBUF, {"Content-Encoding": "gzip"})
        assert status == 200
        assert [r["user_id"] for r in service.rows()] == ["members"]

    def test_too_many_members_are_413_at_once_and_counted(self, service: Service) -> None:
        """4 MiB of empty gzip members (took minutes before: each member copied the rest of the body)."""
        packed = gzip.compress(b"", mtime=0) * (4 * 1024 * 1024 // 20)
        status, _, answer = post(service.app.otlp_http_url, packed, PROTOBUF, {"Content-Encoding": "gzip"})
        assert status == 413 and "more than 1024 gzip members" in status_of(answer, PROTOBUF).message
        assert service.app.stats.limit_cuts["gzip_members"] == 1
        assert service.app.stats.limit_cuts["max_message_mib"] == 0
