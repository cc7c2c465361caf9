"""HTTP keep-alive benchmark: milliseconds per request on one connection, both HTTP listeners.

    python tests/benchmarks/http_keepalive.py [--requests 200]

Starts the real service on free loopback ports (a fresh DuckDB file in a temporary directory),
then on ONE ``http.client`` keep-alive connection per case sends REQUESTS sequential requests
(client socket with TCP_NODELAY, as urllib3 sets it) and prints the mean and median
milliseconds per request (after 10 warm-up requests):
``GET /healthz`` and ``HEAD /healthz`` on the API, an error answer (404) on the API,
``POST /v1/traces`` with a one-span protobuf body (200, stored), and an error answer (415) on
OTLP/HTTP; and, for comparison, the same export made in-process (the store's commit, no HTTP). An answer written in two sends (headers, then body) waits for the client's delayed
ACK under Nagle's algorithm: ~40 ms a request on Linux loopback; one send takes well under 1 ms.
Bounded: a fixed number of requests per case, each with a 30 s client timeout.
"""

from __future__ import annotations

import argparse
import http.client
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from otlp import chat, request, span  # noqa: E402

from user_metrics.app import App  # noqa: E402
from user_metrics.ingest.ingestor import decode_protobuf  # noqa: E402
from user_metrics.settings import Settings  # noqa: E402


def per_request(
    url: str, method: str, path: str, body: bytes | None, headers: dict[str, str], n: int
) -> list[float]:
    """Milliseconds of each of n sequential requests on one keep-alive connection."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.connect()
    # As urllib3 (the OTel HTTP exporter's transport) does: http.client sends a request's headers
    # and body in two sends, and the body would wait for the server's delayed ACK.
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    times = []
    try:
        for i in range(n + 10):
            started = time.perf_counter()
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.will_close:
                raise SystemExit(f"{method} {path}: the server closed the connection ({response.status})")
            if i >= 10:
                times.append((time.perf_counter() - started) * 1000)
    finally:
        conn.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        settings = Settings(
            db=str(Path(directory) / "bench.duckdb"),
            grpc_listen="127.0.0.1:0",
            api_listen="127.0.0.1:0",
            http_listen="127.0.0.1:0",
        )
        app = App(settings)
        app.start()
        try:
            protobuf = {"Content-Type": "application/x-protobuf"}
            export = request([span(chat(user="bench"))]).SerializeToString()
            cases = [
                ("API GET /healthz", app.api_url, "GET", "/healthz", None, {}),
                ("API HEAD /healthz", app.api_url, "HEAD", "/healthz", None, {}),
                ("API GET unknown (404)", app.api_url, "GET", "/api/v1/nope", None, {}),
                ("OTLP POST /v1/traces (200)", app.otlp_http_url, "POST", "/v1/traces", export, protobuf),
                (
                    "OTLP POST text/plain (415)",
                    app.otlp_http_url,
                    "POST",
                    "/v1/traces",
                    b"x",
                    {"Content-Type": "text/plain"},
                ),
            ]
            print(
                f"{args.requests} sequential requests on one keep-alive connection; "
                f"Python {platform.python_version()}, {platform.platform()}"
            )
            times = []
            for _ in range(args.requests):  # the same export without HTTP: what the store's commit takes
                started = time.perf_counter()
                app.ingestor.export(decode_protobuf(export))
                times.append((time.perf_counter() - started) * 1000)
            print(
                f"{'(export in-process, no HTTP)':30} mean {statistics.mean(times):7.2f} ms   "
                f"median {statistics.median(times):7.2f} ms"
            )
            for name, url, method, path, body, headers in cases:
                times = per_request(url, method, path, body, headers, args.requests)
                print(
                    f"{name:30} mean {statistics.mean(times):7.2f} ms   median {statistics.median(times):7.2f} ms"
                )
        finally:
            app.stop()


if __name__ == "__main__":
    main()
