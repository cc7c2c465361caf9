"""Bearer tokens on every endpoint, the loopback rule, and TLS — against real servers and real clients."""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import pytest
import trustme
from conftest import INGEST, READ, Service
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from otlp import chat, request, span
from senders import CALLS, EXPORT, send_with_sdk
from servers import cli

from user_metrics import connect
from user_metrics.app import App
from user_metrics.errors import Unauthenticated
from user_metrics.net.auth import Tokens, check_exposure, is_loopback
from user_metrics.settings import Settings, SettingsError
from user_metrics.v1 import user_metrics_pb2 as pb
from user_metrics.v1 import user_metrics_pb2_grpc as pb_grpc

WRONG = "wrong-token-0123456789abcdef"
# What each attempt sends: no token, a wrong one, the other side's, and the right one.
ATTEMPTS = {"none": None, "wrong": WRONG, "read-for-write": READ, "ingest-for-read": INGEST}


def bearer(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def http_call(
    url: str, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def grpc_export(target: str, token: str | None, body: bytes) -> grpc.StatusCode:
    metadata = None if token is None else (("authorization", f"Bearer {token}"),)
    with grpc.insecure_channel(target) as channel:
        try:
            channel.unary_unary(EXPORT)(body, timeout=30, metadata=metadata)
            return grpc.StatusCode.OK
        except grpc.RpcError as exc:
            return exc.code()


def grpc_totals(target: str, token: str | None) -> grpc.StatusCode:
    metadata = None if token is None else (("authorization", f"Bearer {token}"),)
    with grpc.insecure_channel(target) as channel:
        try:
            pb_grpc.UserMetricsServiceStub(channel).GetTotals(
                pb.GetTotalsRequest(), timeout=30, metadata=metadata
            )
            return grpc.StatusCode.OK
        except grpc.RpcError as exc:
            return exc.code()


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[Service]:
    svc = Service(tmp_path / "um.duckdb", ingest_tokens=(INGEST,), read_tokens=(READ,))
    svc.start()
    yield svc
    svc.stop()


class TestEveryEndpoint:
    @pytest.mark.parametrize("attempt", ["none", "wrong", "read-for-write"])
    def test_writing_without_the_ingest_token_is_refused_and_stores_nothing(
        self, guarded: Service, attempt: str
    ) -> None:
        token = ATTEMPTS[attempt]
        body = request([span(chat(user="intruder"))]).SerializeToString()
        assert grpc_export(guarded.target, token, body) == grpc.StatusCode.UNAUTHENTICATED
        status, headers, answer = http_call(
            guarded.app.otlp_http_url,
            "POST",
            "/v1/traces",
            body,
            {"Content-Type": "application/x-protobuf", **bearer(token)},
        )
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        assert b"ingest token" in answer
        assert guarded.rows() == []

    @pytest.mark.parametrize("attempt", ["none", "wrong", "ingest-for-read"])
    def test_reading_without_the_read_token_is_refused(self, guarded: Service, attempt: str) -> None:
        token = ATTEMPTS[attempt]
        api = guarded.app.api_url
        assert grpc_totals(guarded.target, token) == grpc.StatusCode.UNAUTHENTICATED
        for method, path, body in (
            ("GET", "/api/v1/users", b""),
            ("GET", "/api/v1/users/alice", b""),
            ("GET", "/api/v1/totals", b""),
            ("POST", "/api/v1/sql", b'{"sql": "SELECT count(*) FROM requests"}'),
            ("GET", "/metrics", b""),
        ):
            status, headers, answer = http_call(api, method, path, body, bearer(token))
            assert status == 401, (method, path)
            assert json.loads(answer) == {"error": json.loads(answer)["error"], "status": 401}
            assert "read token" in json.loads(answer)["error"]
            assert "Bearer" in headers["WWW-Authenticate"]
        for path in ("/api/v1/totals", "/metrics"):  # HEAD is a read too
            status, headers, answer = http_call(api, "HEAD", path, b"", bearer(token))
            assert (status, answer) == (401, b"") and "Bearer" in headers["WWW-Authenticate"]
        with pytest.raises(Unauthenticated), connect(url=api, token=token) as client:
            client.users()

    def test_the_right_tokens_write_and_read(self, guarded: Service) -> None:
        body = request([span(chat(user="member"))]).SerializeToString()
        assert grpc_export(guarded.target, INGEST, body) == grpc.StatusCode.OK
        other = request([span(chat(user="member"))]).SerializeToString()
        status, _, _ = http_call(
            guarded.app.otlp_http_url,
            "POST",
            "/v1/traces",
            other,
            {"Content-Type": "application/x-protobuf", "Authorization": f"bearer {INGEST}"},  # any case
        )
        assert status == 200
        assert grpc_totals(guarded.target, READ) == grpc.StatusCode.OK
        for path in ("/api/v1/users", "/api/v1/totals", "/metrics"):
            assert http_call(guarded.app.api_url, "GET", path, headers=bearer(READ))[0] == 200, path
        with connect(url=guarded.app.api_url, token=READ) as client:
            assert client.user("member").requests == 2
        assert http_call(guarded.app.api_url, "GET", "/healthz")[0] == 200  # liveness stays open

    def test_the_sdk_exporters_send_their_configured_headers(self, guarded: Service) -> None:
        headers = {"authorization": f"Bearer {INGEST}"}
        send_with_sdk(
            "", CALLS[:2], GrpcSpanExporter(endpoint=guarded.target, insecure=True, headers=headers)
        )
        url = f"{guarded.app.otlp_http_url}/v1/traces"
        send_with_sdk("", CALLS[2:], HttpSpanExporter(endpoint=url, headers=headers))
        assert len(guarded.rows()) == len(CALLS)

    def test_cli_reads_with_a_token(self, guarded: Service) -> None:
        url = guarded.app.api_url
        window = ("--since", "2026-11-01T00:00:00Z", "--until", "2026-11-02T00:00:00Z")
        refused = cli("totals", "--url", url, "--format", "json", *window)
        assert refused.returncode == 1 and "read token" in refused.stderr
        allowed = cli("totals", "--url", url, "--format", "json", "--token", READ, *window)
        assert allowed.returncode == 0, allowed.stderr
        env = {"USER_METRICS_TOKEN": READ}
        from_env = cli("totals", "--url", url, "--format", "json", *window, env=env)
        assert from_env.returncode == 0 and json.loads(from_env.stdout) == json.loads(allowed.stdout)


class TestTokens:
    def test_only_the_exact_token_with_the_bearer_scheme_passes(self) -> None:
        tokens = Tokens([READ, "second-token-000000000000"], "read")
        assert tokens.allows(f"Bearer {READ}") and tokens.allows("BEARER second-token-000000000000")
        for value in (None, "", READ, f"Basic {READ}", f"Bearer {READ[:-1]}", f"Bearer {READ}x", "Bearer "):
            assert not tokens.allows(value), value
        assert Tokens([], "read").allows(None)

    def test_short_or_odd_tokens_are_refused_at_start(self) -> None:
        for bad in ("short", "with space in the middle!", "naïve-token-0123456789"):
            with pytest.raises(SettingsError, match="read_tokens"):
                Settings(read_tokens=(bad,))


class TestLoopbackRule:
    @pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"])
    def test_loopback_hosts(self, host: str) -> None:
        assert is_loopback(host.strip("[]"))

    @pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "example.com", ""])
    def test_other_hosts(self, host: str) -> None:
        assert not is_loopback(host)

    @pytest.mark.parametrize(
        ("listen", "needs"),
        [
            ("grpc_listen", "ingest_tokens and read_tokens"),
            ("http_listen", "ingest_tokens"),
            ("api_listen", "read_tokens"),
        ],
    )
    def test_a_public_address_without_tokens_is_refused(self, listen: str, needs: str) -> None:
        settings = Settings(**{listen: "0.0.0.0:0"})
        with pytest.raises(SettingsError, match=f"{listen} 0.0.0.0:0 is not a loopback address and {needs}"):
            check_exposure(settings)
        with pytest.raises(SettingsError, match="allow_unauthenticated"):
            App(settings)  # before anything is opened or bound
        check_exposure(Settings(**{listen: "0.0.0.0:0"}, allow_unauthenticated=True))
        check_exposure(Settings(**{listen: "0.0.0.0:0"}, ingest_tokens=(INGEST,), read_tokens=(READ,)))

    def test_a_reader_only_node_needs_read_tokens_only(self) -> None:
        """No spans are received: public addresses need the read tokens, not the ingest ones."""
        public = {name: "0.0.0.0:0" for name in ("grpc_listen", "http_listen", "api_listen")}
        reader = Settings(**public, ingest=False, lake="host=pg dbname=lake", read_tokens=(READ,))
        check_exposure(reader)
        with pytest.raises(SettingsError, match="grpc_listen 0.0.0.0:0 .* ingest_tokens is empty"):
            check_exposure(Settings(**public, lake="host=pg dbname=lake", read_tokens=(READ,)))
        with pytest.raises(SettingsError, match="grpc_listen 0.0.0.0:0 .* read_tokens is empty"):
            check_exposure(Settings(**public, ingest=False, lake="host=pg dbname=lake"))

    def test_serve_exits_with_the_reason(self, tmp_path: Path) -> None:
        db = tmp_path / "um.duckdb"
        result = subprocess.run(
            [sys.executable, "-m", "user_metrics", "serve", "--db", str(db), "--api-listen", "0.0.0.0:0"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2
        assert "api_listen 0.0.0.0:0 is not a loopback address and read_tokens is empty" in result.stderr
        assert not db.exists()


class TestTls:
    def test_every_listener_speaks_tls_and_the_clients_verify_it(
        self, tmp_path: Path, certificates: dict[str, Path], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # requests lets these override the HTTP exporter's own certificate_file (a session-level verify).
        monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
        monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
        svc = Service(
            tmp_path / "um.duckdb",
            tls_cert_file=str(certificates["cert"]),
            tls_key_file=str(certificates["key"]),
            read_tokens=(READ,),
        )
        app = svc.start()
        try:
            assert app.otlp_http_url.startswith("https://") and app.api_url.startswith("https://")
            root = certificates["ca"].read_bytes()
            grpc_exporter = GrpcSpanExporter(
                endpoint=app.grpc_address, credentials=grpc.ssl_channel_credentials(root_certificates=root)
            )
            send_with_sdk("", CALLS[:2], grpc_exporter)
            http_exporter = HttpSpanExporter(
                endpoint=f"{app.otlp_http_url}/v1/traces", certificate_file=str(certificates["ca"])
            )
            send_with_sdk("", CALLS[2:], http_exporter)
            with connect(url=app.api_url, token=READ, ca_file=str(certificates["ca"])) as client:
                assert client.totals().requests == len(CALLS)
            # Plain text to a TLS port gets nowhere; an unverified certificate is refused by the client.
            parts = urlsplit(app.api_url)
            with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
                http_call(f"http://{parts.netloc}", "GET", "/healthz")
            with pytest.raises(ssl.SSLError):
                conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=10)
                conn.request("GET", "/healthz")
            assert grpc_totals(app.grpc_address, READ) == grpc.StatusCode.UNAVAILABLE  # no TLS: no call
        finally:
            svc.stop()
        assert len(svc.rows()) == len(CALLS)

    def test_missing_or_mismatched_files_are_clear_errors(
        self, tmp_path: Path, certificates: dict[str, Path]
    ) -> None:
        with pytest.raises(SettingsError, match="go together"):
            Settings(tls_cert_file=str(certificates["cert"]))
        settings = Settings(
            db=str(tmp_path / "um.duckdb"), tls_cert_file=str(tmp_path / "nope.pem"), tls_key_file="nope.key"
        )
        with pytest.raises(SettingsError, match="cannot load TLS certificate"):
            App(settings)
        other_key = trustme.CA().issue_cert("127.0.0.1").private_key_pem
        other_key.write_to_path(str(tmp_path / "other.key"))
        settings = Settings(
            db=str(tmp_path / "um.duckdb"),
            tls_cert_file=str(certificates["cert"]),
            tls_key_file=str(tmp_path / "other.key"),
        )
        with pytest.raises(SettingsError, match="cannot load TLS certificate"):
            App(settings)
