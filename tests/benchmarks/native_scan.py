"""Micro-benchmark of the native split (issue 17): ns per span of ``_otlp_scan.split`` against
``ExportTraceServiceRequest.FromString`` on the same bytes, one thread, no I/O.

    .venv/bin/python tests/benchmarks/native_scan.py [--requests 20] [--rounds 7]

Three request shapes of 512 spans: (a) LLM spans exactly as ``ingest.py``'s ``build_request`` makes
them (19 attributes each; every span is a candidate, copied verbatim); (b) mixed traffic, 1 LLM span
in 10 and the rest HTTP server spans (10 attributes) and DB client spans (7), with no user or
session; (c) only such HTTP and DB spans. The table is the service's (``span_split.scan_table``:
the keys of the fields the mapper reads on every span); ``--all-keys`` uses every key the
conventions know instead (then ``server.address`` makes every HTTP/DB span a candidate). Each round times
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

from user_metrics.ingest import (
    _otlp_scan,  # noqa: E402
    span_split,  # noqa: E402
)
from user_metrics.ingest import conventions as c  # noqa: E402
from user_metrics.ingest.attributes import compile_conventions  # noqa: E402


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
        "--all-keys", action="store_true", help="every key of the conventions in the table, not the service's"
    )
    args = parser.parse_args()
    conv = compile_conventions()
    if args.all_keys:
        keys = sorted({*conv.by_key, *conv.bare_property_keys, *conv.property_json_keys})
        table = _otlp_scan.Table(
            keys, list(conv.property_prefixes), list(c.LLM_LIKE_PREFIXES), list(c.LLM_LIKE_WORDS)
        )
    else:
        table = span_split.scan_table(conv, _otlp_scan)
    rng, now = random.Random(7), time.time_ns()
    which = "every key" if args.all_keys else "the service's"
    print(f"load (1-minute) at the start: {os.getloadavg()[0]:.2f}; table: {which}")
    shapes = (
        ("LLM (build_request)", bench.build_request),
        ("mixed (1 LLM in 10)", bench.build_mixed),
        ("HTTP/DB only", lambda rng, now: bench.build_mixed(rng, now, llm_every=0)),
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
