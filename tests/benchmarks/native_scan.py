"""Micro-benchmark of the native split (issue 17): ns per span of ``_otlp_scan.split`` against
``ExportTraceServiceRequest.FromString`` on the same bytes, one thread, no I/O.

    .venv/bin/python tests/benchmarks/native_scan.py [--requests 20] [--rounds 7]

Three request shapes of 512 spans: (a) LLM spans exactly as ``ingest.py``'s ``build_request`` makes
them (19 attributes each; every span is a candidate, copied verbatim); (b) mixed traffic, 1 LLM span
in 10 and the rest HTTP server spans (10 attributes) and DB client spans (7), with no user or
session; (c) only such HTTP and DB spans (plain, unless the table holds ``server.address``: see ``--exclude-key``). Each round times
split and FromString over all requests, interleaved, in CPU time of the thread; the median and the
best round are printed, with the load average.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ingest as bench  # noqa: E402
from otlp import attributes  # noqa: E402

from user_metrics.ingest import _otlp_scan  # noqa: E402
from user_metrics.ingest import conventions as c  # noqa: E402
from user_metrics.ingest.attributes import compile_conventions  # noqa: E402

HTTP = {
    "http.request.method": "GET",
    "http.route": "/api/items/{id}",
    "url.scheme": "https",
    "http.response.status_code": 200,
    "server.address": "chat.example.com",
    "server.port": 443,
    "client.address": "10.0.0.7",
    "user_agent.original": "Mozilla/5.0 (X11; Linux x86_64)",
    "network.protocol.version": "1.1",
}
DB = {
    "db.system.name": "postgresql",
    "db.namespace": "app",
    "db.operation.name": "SELECT",
    "db.collection.name": "items",
    "db.query.text": "SELECT id, name, price FROM items WHERE id = %s",
    "server.address": "db.internal",
    "server.port": 5432,
}


def build_mixed(rng: random.Random, now_ns: int, llm_every: int = 10) -> bytes:
    """512 spans: every ``llm_every``-th an LLM span as build_request makes it (none for 0), the rest
    HTTP and DB spans."""
    llm = ExportTraceServiceRequest.FromString(bench.build_request(rng, now_ns))
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.CopyFrom(llm.resource_spans[0].resource)
    llm_ss = rs.scope_spans.add()
    llm_ss.scope.CopyFrom(llm.resource_spans[0].scope_spans[0].scope)
    http_ss = rs.scope_spans.add()
    http_ss.scope.name, http_ss.scope.version = "opentelemetry.instrumentation.fastapi", "0.50b0"
    db_ss = rs.scope_spans.add()
    db_ss.scope.name, db_ss.scope.version = "opentelemetry.instrumentation.psycopg", "0.50b0"
    source = iter(llm.resource_spans[0].scope_spans[0].spans)
    for i in range(bench.SPANS_PER_REQUEST):
        if llm_every and i % llm_every == 0:
            llm_ss.spans.add().CopyFrom(next(source))
            continue
        if i % 2:
            span = http_ss.spans.add(kind=2, name="GET /api/items/{id}")
            attrs = {**HTTP, "url.path": f"/api/items/{rng.randint(1, 99999)}"}
        else:
            span = db_ss.spans.add(kind=3, name="SELECT items")
            attrs = DB
        start = now_ns - rng.randint(0, 60_000_000_000)
        span.trace_id, span.span_id, span.parent_span_id = os.urandom(16), os.urandom(8), os.urandom(8)
        span.start_time_unix_nano = start
        span.end_time_unix_nano = start + rng.randint(1_000_000, 90_000_000)
        span.attributes.extend(attributes(attrs))
    return req.SerializeToString()


def timed(fn: Callable[[bytes], object], bodies: list[bytes]) -> float:
    """CPU time of this thread (the split runs in it, GIL released): steadier than wall time on a
    shared machine, where a descheduled thread's wall time says nothing about the code."""
    start = time.thread_time_ns()
    for body in bodies:
        fn(body)
    return time.thread_time_ns() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--exclude-key",
        action="append",
        default=[],
        help="leave this exact key out of the table (e.g. server.address, which every HTTP/DB span has)",
    )
    args = parser.parse_args()
    conv = compile_conventions()
    keys = sorted({*conv.by_key, *conv.bare_property_keys, *conv.property_json_keys} - set(args.exclude_key))
    table = _otlp_scan.Table(
        keys, list(conv.property_prefixes), list(c.LLM_LIKE_PREFIXES), list(c.LLM_LIKE_WORDS)
    )
    rng, now = random.Random(7), time.time_ns()
    print(
        f"load (1-minute) at the start: {os.getloadavg()[0]:.2f}; keys left out: {args.exclude_key or 'none'}"
    )
    shapes = (
        ("LLM (build_request)", bench.build_request),
        ("mixed (1 LLM in 10)", build_mixed),
        ("HTTP/DB only", lambda rng, now: build_mixed(rng, now, llm_every=0)),
    )
    for shape, build in shapes:
        bodies = [build(rng, now) for _ in range(args.requests)]
        spans = sum(_otlp_scan.split(b, table, 1024)[2] for b in bodies)
        plain = sum(len(_otlp_scan.split(b, table, 1024)[1]) // 40 for b in bodies)
        split_ns, parse_ns = [], []
        for _ in range(args.rounds):
            split_ns.append(timed(lambda b: _otlp_scan.split(b, table, 1024), bodies) / spans)
            parse_ns.append(timed(ExportTraceServiceRequest.FromString, bodies) / spans)
        s, p = statistics.median(split_ns), statistics.median(parse_ns)
        mean_bytes = sum(map(len, bodies)) / spans
        print(
            f"{shape}: {spans} spans ({plain} plain), {mean_bytes:.0f} bytes/span; "
            f"split {s:.0f} ns/span (min {min(split_ns):.0f}), FromString {p:.0f} ns/span "
            f"(min {min(parse_ns):.0f}); split/FromString {s / p:.2f}"
        )
    print(f"load (1-minute) at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
