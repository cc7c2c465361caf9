"""The ingest paths of binary bodies side by side: µs per span, the Python path against the split.

    python tests/benchmarks/split_path.py [--requests 40] [--store]

Builds 512-span requests of three shapes: LLM-only (``ingest.build_request``), mixed (every 10th
span an LLM span as ``build_request`` makes it, the rest HTTP server and DB client spans without
identity, as an application's Collector forwards them: ``build_mixed``), and "http/db", the mixed
requests without their LLM spans (460 spans: what a non-LLM span costs). Each request goes through
every path in turn (interleaved, one thread, so that the machine's load falls on all alike):

- ``python``: ``decode_protobuf`` + ``map_request`` of the whole request (the fallback);
- ``reference``: ``split_reference.split`` (the split in Python: a specification, slow) + decode of
  the candidates + ``map_request`` with the plain spans;
- ``native``: the same with ``_otlp_scan.split``, when it is built.

"map" is the mapping stage up to the Arrow rows of ``span_facts`` (what the split changes);
with ``--store``, "export" is ``Ingestor.export_body`` whole on a fresh DuckDB file per path
(each export waits for its commit). Prints µs per span of all spans, and how many were plain.
"""

from __future__ import annotations

import argparse
import importlib
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import SPANS_PER_REQUEST, build_mixed, build_request  # noqa: E402

from user_metrics.ingest import plain_spans, span_split, split_reference  # noqa: E402
from user_metrics.ingest.attributes import Conventions, compile_conventions  # noqa: E402
from user_metrics.ingest.mapping import map_request  # noqa: E402
from user_metrics.store.batches import facts_table, plain_facts_table  # noqa: E402


def build_plain(rng: random.Random, now_ns: int) -> bytes:
    """The mixed request without its LLM spans: 460 HTTP/DB spans (the non-LLM span's cost)."""
    request = ExportTraceServiceRequest.FromString(build_mixed(rng, now_ns))
    del request.resource_spans[0].scope_spans[0].spans[:]
    return request.SerializeToString()


def map_python(body: bytes, conv: Conventions, _module: Any) -> int:
    mapped = map_request(ExportTraceServiceRequest.FromString(body), conv, now_unix_nano=time.time_ns())
    facts_table(mapped.facts, 1)
    return 0


def map_split(body: bytes, conv: Conventions, module: Any) -> int:
    candidates, plain, _spans, dropped = module.split(body, TABLES[module], conv.max_span_attributes)
    request = ExportTraceServiceRequest.FromString(candidates)
    mapped = map_request(
        request, conv, now_unix_nano=time.time_ns(), plain=plain_spans.PlainSpans(plain, dropped)
    )
    tables = [facts_table(mapped.facts, 1)] if mapped.facts else []
    if plain:
        tables.append(plain_facts_table(plain, mapped.plain.llm if mapped.plain else {}, 1))
    if len(tables) > 1:
        pa.concat_tables(tables)
    return len(plain) // plain_spans.RECORD_SIZE


TABLES: dict[Any, Any] = {}


def _spans(body: bytes) -> int:
    request = ExportTraceServiceRequest.FromString(body)
    return sum(len(scope.spans) for r in request.resource_spans for scope in r.scope_spans)


def paths(conv: Conventions) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = [("python", None), ("reference", split_reference)]
    try:
        out.append(("native", importlib.import_module("user_metrics.ingest._otlp_scan")))
    except ImportError:
        print("native: not built (user_metrics.ingest._otlp_scan is not importable)")
    for _name, module in out:
        if module is not None:
            TABLES[module] = span_split.scan_table(conv, module)
    return out


def bench_map(shape: str, bodies: list[bytes], conv: Conventions) -> None:
    chosen = paths(conv)
    spent = {name: 0.0 for name, _ in chosen}
    plain = {name: 0 for name, _ in chosen}
    for i, body in enumerate(bodies):
        for name, module in chosen:
            run = map_python if module is None else map_split
            started = time.perf_counter()
            count = run(body, conv, module)
            if i:  # the first request warms up
                spent[name] += time.perf_counter() - started
                plain[name] += count
    spans = (len(bodies) - 1) * _spans(bodies[0])
    base = spent["python"]
    for name, _ in chosen:
        print(
            f"{shape:9} map  {name:9}: {1e6 * spent[name] / spans:7.2f} µs/span "
            f"(x{base / spent[name]:.2f} vs python) | "
            + (f"plain {plain[name] / spans:.0%} of spans" if name != "python" else "whole request mapped")
        )


def bench_store(shape: str, bodies: list[bytes], conv: Conventions) -> None:
    from user_metrics.ingest.ingestor import Ingestor
    from user_metrics.ingest.pricing import Pricer
    from user_metrics.stats import Stats
    from user_metrics.store.writer import Store

    chosen = paths(conv)
    with tempfile.TemporaryDirectory() as tmp:
        ingestors = {}
        for name, module in chosen:
            split = (
                span_split.load(conv, "python") if module is None else span_split.with_module(conv, module)
            )
            stats = Stats()
            store = Store(f"{tmp}/{name}.duckdb", stats, memory_limit_mib=0)
            ingestors[name] = (Ingestor(conv, Pricer([]), store, stats, split=split), store)
        spent = {name: 0.0 for name, _ in chosen}
        for i, body in enumerate(bodies):
            for name, _ in chosen:
                started = time.perf_counter()
                ingestors[name][0].export_body(body)
                if i:
                    spent[name] += time.perf_counter() - started
        for _ingestor, store in ingestors.values():
            store.close()
    spans = (len(bodies) - 1) * _spans(bodies[0])
    for name, _ in chosen:
        print(
            f"{shape:9} export {name:9}: {1e6 * spent[name] / spans:7.2f} µs/span "
            f"(x{spent['python'] / spent[name]:.2f} vs python)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=40, help="requests per shape (512 spans each)")
    parser.add_argument("--store", action="store_true", help="also time Ingestor.export_body with the store")
    args = parser.parse_args()
    conv = compile_conventions()
    rng, now = random.Random(7), time.time_ns()
    print(f"{args.requests} requests x {SPANS_PER_REQUEST} spans per shape; load {os.getloadavg()[0]:.2f}")
    for shape, build in (("mixed", build_mixed), ("llm-only", build_request), ("http/db", build_plain)):
        bodies = [build(rng, now) for _ in range(args.requests + 1)]
        bench_map(shape, bodies, conv)
        if args.store:
            bench_store(shape, bodies, conv)
    print(f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
