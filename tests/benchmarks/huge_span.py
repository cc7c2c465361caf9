"""One LLM span with a huge attribute list (issue 13: a million attributes took 52-82 s, 1.28 GB).

Starts the service on a temporary database and free loopback ports, then sends one Export of one
LLM span carrying ``--attributes`` ``property.kN`` attributes over gRPC (protobuf) and over
OTLP/HTTP (JSON), and prints the time each took and the process's peak RSS.

    .venv/bin/python tests/benchmarks/huge_span.py --attributes 1000000
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import duckdb
import grpc

sys.path.insert(0, str(Path(__file__).parent.parent))
from otlp import (  # noqa: E402
    chat,
    request,
    span,
    to_otlp_json,  # noqa: E402
)

from user_metrics.app import App  # noqa: E402
from user_metrics.settings import Settings  # noqa: E402

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--attributes", type=int, default=1_000_000)
    args = parser.parse_args()
    print(f"# one span, {args.attributes:,} attributes; DuckDB {duckdb.__version__}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        app = App(
            Settings(
                db=str(Path(tmp) / "bench.duckdb"),
                grpc_listen="127.0.0.1:0",
                http_listen="127.0.0.1:0",
                api_listen="127.0.0.1:0",
            )
        )
        app.start()
        try:
            attrs = chat(user="huge") | {f"property.k{i}": "x" for i in range(args.attributes)}
            message = request([span(attrs, start=time.time_ns())])
            body = message.SerializeToString()
            channel = grpc.insecure_channel(
                app.grpc_address, options=[("grpc.max_send_message_length", 200 << 20)]
            )
            call = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
            started = time.perf_counter()
            call(body, timeout=600)
            print(f"gRPC, protobuf {len(body) / 1e6:.1f} MB: {time.perf_counter() - started:.2f} s")
            channel.close()

            message.resource_spans[0].scope_spans[0].spans[0].span_id = os.urandom(8)
            document = json.dumps(to_otlp_json(message)).encode()
            address = urlsplit(app.otlp_http_url)
            connection = http.client.HTTPConnection(address.hostname, address.port, timeout=600)
            started = time.perf_counter()
            connection.request("POST", "/v1/traces", document, {"Content-Type": "application/json"})
            answer = connection.getresponse()
            answer.read()
            took = time.perf_counter() - started
            print(f"OTLP/HTTP, JSON {len(document) / 1e6:.1f} MB: HTTP {answer.status} in {took:.2f} s")
            print(f"peak RSS of this process (client and server): {peak_mib():.0f} MiB")
        finally:
            app.stop()


if __name__ == "__main__":
    main()
