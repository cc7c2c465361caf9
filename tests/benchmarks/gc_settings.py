"""What Python's cyclic GC costs the mapper, and what ``gc.freeze()`` and a higher gen-0 threshold save.

    python tests/benchmarks/gc_settings.py [--requests 20] [--rounds 5]

Builds the service's long-lived objects as a start does (conventions, the pricer and its price
tables), then maps the same 512-span LLM requests (``ingest.build_request``) and mixed requests
(``ingest.build_mixed``) with ``map_request`` under each GC setting in turn, round after round
(interleaved, so that the machine's load falls on all alike):

- ``default``: what CPython does (thresholds 700, 10, 10);
- ``freeze``: ``gc.freeze()`` after start-up: the start's objects are never traversed again;
- ``freeze+threshold``: that, and gen-0 collections every ``THRESHOLD`` allocations (app.py);
- ``off``: no cyclic GC at all (the floor).

Prints µs per span (median of the rounds), the ratio to ``default``, and the time spent in GC
collections (``gc.callbacks``; less disturbed by the machine's load than the wall time), per span.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import time
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import SPANS_PER_REQUEST, build_mixed, build_request  # noqa: E402

from user_metrics.app import GC_THRESHOLD  # noqa: E402
from user_metrics.ingest.attributes import compile_conventions  # noqa: E402
from user_metrics.ingest.mapping import map_request  # noqa: E402
from user_metrics.ingest.pricing import Pricer  # noqa: E402

DEFAULT = gc.get_threshold()
_in_gc = [0.0, 0.0]  # seconds in collections; when the current one started


def _timed(phase: str, _info: dict[str, int]) -> None:
    if phase == "start":
        _in_gc[1] = time.perf_counter()
    else:
        _in_gc[0] += time.perf_counter() - _in_gc[1]


def setting(name: str) -> None:
    gc.enable()
    gc.unfreeze()
    gc.set_threshold(*DEFAULT)
    gc.collect()
    if name in ("freeze", "freeze+threshold"):
        gc.freeze()
    if name == "freeze+threshold":
        gc.set_threshold(GC_THRESHOLD, DEFAULT[1], DEFAULT[2])
    if name == "off":
        gc.disable()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20, help="requests per shape (512 spans each)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    conv = compile_conventions()
    pricer = Pricer([])  # the price tables: most of a start's long-lived objects
    rng, now = random.Random(7), time.time_ns()
    print(
        f"{args.requests} requests x {SPANS_PER_REQUEST} spans; load {os.getloadavg()[0]:.2f}; "
        f"gc objects {len(gc.get_objects())}"
    )
    names = ("default", "freeze", "freeze+threshold", "off")
    for shape, build in (("llm-only", build_request), ("mixed", build_mixed)):
        requests = [ExportTraceServiceRequest.FromString(build(rng, now)) for _ in range(args.requests)]
        spent: dict[str, list[float]] = {name: [] for name in names}
        in_gc: dict[str, list[float]] = {name: [] for name in names}
        gc.callbacks.append(_timed)
        for _ in range(args.rounds):
            for name in names:
                setting(name)
                _in_gc[0] = 0.0
                started = time.perf_counter()
                for request in requests:
                    mapped = map_request(request, conv, now_unix_nano=now)
                    pricer.price(mapped.records)
                spent[name].append(time.perf_counter() - started)
                in_gc[name].append(_in_gc[0])
        gc.callbacks.remove(_timed)
        setting("default")
        spans = args.requests * SPANS_PER_REQUEST
        base = statistics.median(spent["default"])
        for name in names:
            median = statistics.median(spent[name])
            collecting = 1e6 * statistics.median(in_gc[name]) / spans
            print(
                f"{shape:9} {name:17}: {1e6 * median / spans:7.2f} µs/span (x{base / median:.2f} vs default), "
                f"of which GC {collecting:.2f} µs/span"
            )
    print(f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
