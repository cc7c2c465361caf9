"""Ingest benchmark: durable spans/s over loopback gRPC and OTLP/HTTP, against the parse-only ceiling.

    python tests/benchmarks/ingest.py [--requests 400] [--threads 1,4] [--http] [--mixed]
        [--paths native,python]

For each client thread count, a separate client process pre-builds N Export requests of 512
realistic LLM spans (unique ids, 1,000 users, 3 models, semconv attributes as the contrib and
OpenLLMetry instrumentations write them), then sends them over loopback gRPC and times it.
It runs twice: against the real service on a fresh DuckDB file (every answer means committed),
and against a servicer that only parses the same requests (the ceiling). With ``--http`` it also
sends the same requests as ``application/x-protobuf`` to the OTLP/HTTP receiver (one keep-alive
connection per thread). Prints spans/s and the ratio. Bounded: N requests per run, loopback only.

``--mixed``: the issue's mixed traffic instead. Of the 512 spans of a request, every 10th is an
LLM span exactly as above (52 per request); the others are half HTTP server spans (10
attributes, scope opentelemetry.instrumentation.fastapi) and half DB client spans (7
attributes, psycopg), with no user or session. It prints every span accepted per second (each
answer means the request's LLM spans are committed) and the LLM spans per second.

Each run prints which ingest path the service ran (native or python: what
``user_metrics.ingest.native_scan`` says, and the service's log line about it, if any).
``--paths native,python`` runs the whole benchmark once per path, each in a process of its own,
the python one with USER_METRICS_INGEST_PATH=python (the service falls back to the Python
mapper), so that one command compares both on the same machine at the same time.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from otlp import attributes  # noqa: E402

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
SPANS_PER_REQUEST = 512
MODELS = [
    ("gpt-4o-mini", "gpt-4o-mini-2024-07-18"),
    ("gpt-4o", "gpt-4o-2024-08-06"),
    ("o3-mini", "o3-mini-2025-01-31"),
]


def build_request(rng: random.Random, now_ns: int) -> bytes:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(
        attributes(
            {
                "service.name": "chat-api",
                "deployment.environment.name": "prod",
                "telemetry.sdk.language": "python",
                "telemetry.sdk.name": "opentelemetry",
                "telemetry.sdk.version": "1.45.2",
            }
        )
    )
    ss = rs.scope_spans.add()
    ss.scope.name = "opentelemetry.instrumentation.openai_v2"
    ss.scope.version = "2.4b0"
    for _ in range(SPANS_PER_REQUEST):
        user = int(rng.paretovariate(1.2)) % 1000
        request_model, response_model = rng.choice(MODELS)
        inp = rng.randint(20, 4000)
        out = rng.randint(5, 1500)
        start = now_ns - rng.randint(0, 60_000_000_000)
        span = ss.spans.add()
        span.trace_id = os.urandom(16)
        span.span_id = os.urandom(8)
        span.parent_span_id = os.urandom(8)
        span.name = f"chat {request_model}"
        span.kind = 3  # CLIENT
        span.start_time_unix_nano = start
        span.end_time_unix_nano = start + rng.randint(200_000_000, 9_000_000_000)
        span.attributes.extend(
            attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": request_model,
                    "gen_ai.response.model": response_model,
                    "gen_ai.response.id": f"chatcmpl-{rng.getrandbits(64):x}",
                    "gen_ai.response.finish_reasons": ["stop"],
                    "gen_ai.usage.input_tokens": inp,
                    "gen_ai.usage.output_tokens": out,
                    "gen_ai.usage.cache_read.input_tokens": rng.randint(0, inp),
                    "gen_ai.usage.reasoning.output_tokens": rng.randint(0, out)
                    if request_model == "o3-mini"
                    else 0,
                    "gen_ai.request.stream": rng.random() < 0.3,
                    "server.address": "api.openai.com",
                    "server.port": 443,
                    "user.id": f"user-{user:04d}",
                    "session.id": f"sess-{user:04d}-{rng.randint(0, 20)}",
                    "property.plan": "premium" if user % 5 == 0 else "free",
                    "property.feature": rng.choice(["chat", "search", "summarise"]),
                }
            )
        )
    return req.SerializeToString()


def build_mixed(rng: random.Random, now_ns: int, llm_every: int = 10) -> bytes:
    """512 spans: every ``llm_every``-th an LLM span exactly as ``build_request`` makes them (none
    for 0), the others HTTP server and DB client spans with no user or session (as an
    instrumented web app exports)."""
    llm = ExportTraceServiceRequest.FromString(build_request(rng, now_ns))
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.CopyFrom(llm.resource_spans[0].resource)
    llm_scope = rs.scope_spans.add()
    llm_scope.scope.CopyFrom(llm.resource_spans[0].scope_spans[0].scope)
    http_scope, db_scope = rs.scope_spans.add(), rs.scope_spans.add()
    http_scope.scope.name, http_scope.scope.version = "opentelemetry.instrumentation.fastapi", "0.50b0"
    db_scope.scope.name, db_scope.scope.version = "opentelemetry.instrumentation.psycopg", "0.50b0"
    llm_spans = iter(llm.resource_spans[0].scope_spans[0].spans)
    for i in range(SPANS_PER_REQUEST):
        if llm_every and i % llm_every == 0:
            llm_scope.spans.add().CopyFrom(next(llm_spans))
            continue
        start = now_ns - rng.randint(0, 60_000_000_000)
        if i % 2:
            span = http_scope.spans.add()
            span.kind, span.name = 2, "GET /api/items/{id}"  # SERVER
            attrs: dict[str, Any] = {
                "http.request.method": "GET",
                "http.route": "/api/items/{id}",
                "url.path": f"/api/items/{rng.randint(1, 99999)}",
                "url.scheme": "https",
                "http.response.status_code": 200,
                "server.address": "chat.example.com",
                "server.port": 443,
                "client.address": "10.0.0.7",
                "user_agent.original": "Mozilla/5.0 (X11; Linux x86_64)",
                "network.protocol.version": "1.1",
            }
        else:
            span = db_scope.spans.add()
            span.kind, span.name = 3, "SELECT items"  # CLIENT
            attrs = {
                "db.system.name": "postgresql",
                "db.namespace": "app",
                "db.operation.name": "SELECT",
                "db.collection.name": "items",
                "db.query.text": "SELECT id, name, price FROM items WHERE id = %s",
                "server.address": "db.internal",
                "server.port": 5432,
            }
        span.trace_id, span.span_id, span.parent_span_id = os.urandom(16), os.urandom(8), os.urandom(8)
        span.start_time_unix_nano = start
        span.end_time_unix_nano = start + rng.randint(1_000_000, 90_000_000)
        span.attributes.extend(attributes(attrs))
    return req.SerializeToString()


LLM_PER_MIXED_REQUEST = len(range(0, SPANS_PER_REQUEST, 10))


def http_sender(url: str) -> Callable[[bytes], ExportTraceServiceResponse]:
    """POST /v1/traces over one keep-alive connection per thread."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    local = threading.local()

    def export(body: bytes, timeout: float) -> ExportTraceServiceResponse:
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        local.conn.request(
            "POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf"}
        )
        response = local.conn.getresponse()
        data = response.read()
        assert response.status == 200, (response.status, data[:200])
        return ExportTraceServiceResponse.FromString(data)

    return export


def client_main(target: str, n: int, threads: int, seed: int, mixed: bool) -> None:
    """Build n requests, send them from `threads` threads, print JSON timings."""
    rng = random.Random(seed)
    now = time.time_ns()
    bodies = [(build_mixed if mixed else build_request)(rng, now) for _ in range(n)]
    if target.startswith("http://"):
        send_http = http_sender(target)
        send_timed(lambda body, timeout: send_http(body, timeout), bodies, n, threads)
        return
    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)])
    export = channel.unary_unary(
        EXPORT, request_serializer=None, response_deserializer=ExportTraceServiceResponse.FromString
    )
    grpc.channel_ready_future(channel).result(timeout=30)
    send_timed(lambda body, timeout: export(body, timeout=timeout), bodies, n, threads)


def send_timed(
    export: Callable[[bytes, float], ExportTraceServiceResponse], bodies: list[bytes], n: int, threads: int
) -> None:
    export(bodies[0], 60)  # warm-up: connection, first commit (counted below)
    rejected = 0
    lock = threading.Lock()

    def send(body: bytes) -> None:
        nonlocal rejected
        response = export(body, 120)
        with lock:
            rejected += response.partial_success.rejected_spans

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(send, bodies[1:]))
    elapsed = time.perf_counter() - started
    print(json.dumps({"spans": (n - 1) * SPANS_PER_REQUEST, "seconds": elapsed, "rejected": rejected}))


def run_client(target: str, n: int, threads: int, mixed: bool) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--client", target, "--requests", str(n), "--threads", str(threads)]
        + (["--mixed"] if mixed else []),
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def parse_only_server() -> tuple[grpc.Server, str]:
    def export(body: bytes, context: object) -> ExportTraceServiceResponse:
        ExportTraceServiceRequest.FromString(body)
        return ExportTraceServiceResponse()

    handler = grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.trace.v1.TraceService",
        {
            "Export": grpc.unary_unary_rpc_method_handler(
                export,
                request_deserializer=None,
                response_serializer=ExportTraceServiceResponse.SerializeToString,
            )
        },
    )
    server = grpc.server(
        ThreadPoolExecutor(16), handlers=[handler], options=[("grpc.max_receive_message_length", 64 << 20)]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=400, help="Export requests per run (512 spans each)")
    parser.add_argument("--threads", default="1,4", help="client sender threads; comma-separated runs")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--profile", help="write a pyinstrument HTML profile of the service run here")
    parser.add_argument("--http", action="store_true", help="also measure the OTLP/HTTP receiver")
    parser.add_argument("--mixed", action="store_true", help="1 LLM span in 10, the rest HTTP and DB spans")
    parser.add_argument("--paths", help="native,python: one run per ingest path, python forced by env")
    args = parser.parse_args()
    if args.client:
        client_main(args.client, args.requests, int(args.threads), seed=os.getpid(), mixed=args.mixed)
        return
    if args.paths:
        run_paths(args.paths.split(","))
        return

    traffic = "mixed (1 LLM span in 10)" if args.mixed else "LLM spans only"
    print(
        f"{args.requests} requests x {SPANS_PER_REQUEST} spans per run, {traffic}; {os.cpu_count()} cores; "
        f"load {os.getloadavg()[0]:.2f}"
    )
    for threads in [int(t) for t in args.threads.split(",")]:
        server, target = parse_only_server()
        ceiling = run_client(target, args.requests, threads, args.mixed)
        server.stop(0).wait()

        durable, stats, size, path = run_service(args, threads, "grpc")
        c_rate = ceiling["spans"] / ceiling["seconds"]
        d_rate = durable["spans"] / durable["seconds"]
        llm = (
            f" ({d_rate * LLM_PER_MIXED_REQUEST / SPANS_PER_REQUEST:,.0f} LLM spans/s durable)"
            if args.mixed
            else ""
        )
        print(
            f"threads={threads}: parse-only ceiling {c_rate:,.0f} spans/s | "
            f"{'accepted' if args.mixed else 'durable'} {d_rate:,.0f} spans/s{llm} "
            f"| ratio {d_rate / c_rate:.3f} | {stats.commits} commits for {stats.exports} exports "
            f"(avg {stats.spans_stored / max(stats.commits, 1):,.0f} LLM spans/commit, "
            f"{1000 * stats.commit_seconds / max(stats.commits, 1):.1f} ms/commit) | db {size / 1e6:.0f} MB "
            f"| ingest path: {path} | load {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        if args.http:
            over_http, _, _, _ = run_service(args, threads, "http")
            h_rate = over_http["spans"] / over_http["seconds"]
            print(
                f"threads={threads}: OTLP/HTTP {'accepted' if args.mixed else 'durable'} {h_rate:,.0f} spans/s "
                f"| ratio to gRPC {h_rate / d_rate:.2f}",
                flush=True,
            )


def run_paths(paths: list[str]) -> None:
    """This benchmark once per ingest path, each in a fresh process; python is forced by env."""
    argv, skip = [], False
    for arg in sys.argv[1:]:  # the same arguments but --paths
        if skip or arg.startswith("--paths="):
            skip = False
            continue
        skip = arg == "--paths"
        if not skip:
            argv.append(arg)
    for path in paths:
        env = {k: v for k, v in os.environ.items() if k != "USER_METRICS_INGEST_PATH"}
        if path == "python":
            env["USER_METRICS_INGEST_PATH"] = "python"
        elif path != "native":
            raise SystemExit(f"--paths: native or python, not {path!r}")
        print(f"--- ingest path asked for: {path}", flush=True)
        subprocess.run([sys.executable, __file__, *argv], env=env, check=True)


class LogLines(logging.Handler):
    """The service's log lines while it starts (one of them names its ingest path)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def service_settings(db: str) -> Any:
    """The service's settings on loopback ports; USER_METRICS_INGEST_PATH passed on where the
    settings have ``ingest_path`` (Settings built here do not read the environment)."""
    from user_metrics.settings import Settings

    path = os.environ.get("USER_METRICS_INGEST_PATH")
    forced = {"ingest_path": path} if path and "ingest_path" in Settings.__dataclass_fields__ else {}
    return Settings(
        db=db, grpc_listen="127.0.0.1:0", api_listen="127.0.0.1:0", http_listen="127.0.0.1:0", **forced
    )


def start_logged(app: Any) -> list[str]:
    """Start the service; the log lines it wrote meanwhile."""
    logs, logger = LogLines(), logging.getLogger("user_metrics")
    level = logger.level
    logger.addHandler(logs)
    logger.setLevel(logging.INFO)
    try:
        app.start()
    finally:
        logger.removeHandler(logs)
        logger.setLevel(level)
    return logs.lines


def ingest_path(lines: list[str]) -> str:
    """native or python, in the service's own words (its "ingest path: ..." log line)."""
    said = [line for line in lines if "ingest path" in line.lower()]
    forced = (
        " (USER_METRICS_INGEST_PATH=python)" if os.environ.get("USER_METRICS_INGEST_PATH") == "python" else ""
    )
    if said:
        verdict = "python" if "python" in said[0].lower().partition("ingest path")[2][:12] else "native"
        return f"{verdict}{forced}, the service said: {said[0]!r}"
    return f"python{forced} (the service logged no ingest path: the code before the native path)"


def run_service(
    args: argparse.Namespace, threads: int, protocol: str
) -> tuple[dict[str, float], Any, int, str]:
    """One client run against the real service on a fresh file: (timings, stats, file bytes, path)."""
    from user_metrics.app import App

    with tempfile.TemporaryDirectory() as tmp:
        app = App(service_settings(f"{tmp}/bench.duckdb"))
        said = start_logged(app)
        profiler = None
        if args.profile and protocol == "grpc":
            from pyinstrument import Profiler

            profiler = Profiler(async_mode="disabled")
            profiler.start()
        target = app.grpc_address if protocol == "grpc" else app.otlp_http_url
        durable = run_client(target, args.requests, threads, args.mixed)
        if profiler is not None:
            profiler.stop()
            Path(args.profile).write_text(profiler.output_html())
        stats = app.stats
        app.stop()
        size = sum(p.stat().st_size for p in Path(tmp).iterdir())
    assert durable["rejected"] == 0
    return durable, stats, size, ingest_path(said)


if __name__ == "__main__":
    main()
