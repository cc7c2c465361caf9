"""Scrape benchmark: /metrics time and body size with 100k users in the store.

    python tests/benchmarks/scrape.py [--users 100000] [--scrapes 20] [--db /tmp/bench/scrape.duckdb]

Builds a store with USERS users (3 requests each, over 30 days, 3 models, a plan property)
through ``Store.write``. Then, for metrics_max_users = 1,000 and 10,000, it starts the real
service on loopback and times SCRAPES scrapes of ``/metrics`` over HTTP, with the default
background rendering (metrics_refresh_seconds 5) and with rendering on every scrape (0). Each is
timed first on an idle service, then while a client thread exports 512-span requests as fast as
the service takes them. It prints the median and worst scrape time and the body size. Target: <= 50 ms per
scrape at 10,000 exposed users while ingest runs. Bounded: a fixed number of scrapes; the ingest
thread stops with them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from otlp import chat, request, span  # noqa: E402

from user_metrics.app import App  # noqa: E402
from user_metrics.settings import Settings  # noqa: E402
from user_metrics.stats import Stats  # noqa: E402
from user_metrics.store.batches import REQUESTS_ARROW_SCHEMA, nanos_to_decimal_array  # noqa: E402
from user_metrics.store.writer import Store  # noqa: E402

MODELS = [("openai", "gpt-4o-mini"), ("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4-5")]


def build(path: str, users: int) -> None:
    """users x 3 requests, written through the real store (rollups and totals included)."""
    rng = np.random.default_rng(1)
    n = users * 3
    now_us = time.time_ns() // 1000
    start = np.sort(rng.integers(now_us - 30 * 86_400_000_000, now_us - 60_000_000, n))
    user = rng.permutation(np.repeat(np.arange(users), 3))
    model = rng.integers(0, 3, n)
    ids = np.arange(n)
    plan = np.array(["free", "pro", "enterprise"])[user % 3]
    columns = {
        "trace_id": pa.array(np.char.mod("%032x", ids + 0xBEEF00000000)),
        "span_id": pa.array(np.char.mod("%016x", ids)),
        "parent_span_id": pa.nulls(n, pa.string()),
        "start_time": pa.array(start, pa.timestamp("us", tz="UTC")),
        "duration_ms": rng.lognormal(6.5, 0.7, n),
        "user_id": pa.array(np.char.add("user-", user.astype(str))),
        "session_id": pa.nulls(n, pa.string()),
        "service_name": pa.array(np.full(n, "chat-api")),
        "environment": pa.array(np.full(n, "prod")),
        "operation": pa.array(np.full(n, "chat")),
        "provider": pa.array([MODELS[m][0] for m in model]),
        "request_model": pa.array([MODELS[m][1] for m in model]),
        "response_model": pa.array([MODELS[m][1] for m in model]),
        "input_tokens": rng.integers(10, 4000, n),
        "output_tokens": rng.integers(10, 800, n),
        "cache_read_tokens": pa.nulls(n, pa.int64()),
        "cache_write_tokens": pa.nulls(n, pa.int64()),
        "reasoning_tokens": pa.nulls(n, pa.int64()),
        "cost_usd": nanos_to_decimal_array(rng.integers(1_000, 10_000_000, n).tolist()),
        "cost_source": pa.array(np.full(n, "reported")),
        "status": pa.array(np.where(rng.random(n) < 0.02, "error", "ok")),
        "error_type": pa.nulls(n, pa.string()),
        "streaming": pa.array(rng.random(n) < 0.3),
        "properties": pa.MapArray.from_arrays(
            np.arange(0, n + 1, dtype=np.int32), pa.array(np.full(n, "plan")), pa.array(plan)
        ),
        "cache_added_to_input": pa.array(np.zeros(n, dtype=bool)),
        "price_provider": pa.nulls(n, pa.string()),  # the costs are reported
    }
    table = pa.Table.from_arrays(
        [columns.get(f.name, pa.nulls(n, f.type)) for f in REQUESTS_ARROW_SCHEMA],
        schema=REQUESTS_ARROW_SCHEMA,
    )
    store = Store(path, Stats())
    try:
        for offset in range(0, n, 100_000):
            store.write(table.slice(offset, 100_000)).result()
    finally:
        store.close()


def scrape_times(url: str, scrapes: int) -> tuple[list[float], int]:
    times, size = [], 0
    for _ in range(scrapes):
        started = time.perf_counter()
        with urllib.request.urlopen(url + "/metrics", timeout=60) as response:
            size = len(response.read())
        times.append((time.perf_counter() - started) * 1000)
    return times, size


def feed(app: App, stop: threading.Event) -> None:
    """Export 512-span requests for new users until told to stop."""
    k = 0
    while not stop.is_set():
        app.ingestor.export(request([span(chat(f"live-{k % 5000}-{i}")) for i in range(512)]))
        k += 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument("--db", default="/tmp/bench/scrape.duckdb")
    args = parser.parse_args()
    Path(args.db).parent.mkdir(parents=True, exist_ok=True)
    if not Path(args.db).exists():
        started = time.perf_counter()
        build(args.db, args.users)
        print(f"built {args.users:,} users x 3 requests in {time.perf_counter() - started:.1f} s")
    print(f"{os.cpu_count()} cores; load {os.getloadavg()}")
    print(
        f"{'max_users':>10} {'refresh s':>9} {'ingest':>7} {'median ms':>10} {'worst ms':>9} {'body KiB':>9}"
        "  spans stored meanwhile"
    )
    base = Settings(
        db=args.db,
        grpc_listen="127.0.0.1:0",
        api_listen="127.0.0.1:0",
        http_listen="127.0.0.1:0",
        metrics_properties=("plan",),
    )
    for max_users in (1_000, 10_000):
        for refresh in (5.0, 0.0):
            app = App(replace(base, metrics_max_users=max_users, metrics_refresh_seconds=refresh))
            app.start()
            try:
                scrape_times(app.api_url, 2)  # warm up; the first scrape renders
                for ingest in (False, True):
                    stop = threading.Event()
                    stored_before = app.stats.spans_stored
                    feeder = threading.Thread(target=feed, args=(app, stop), daemon=True)
                    if ingest:
                        feeder.start()
                        time.sleep(1)
                    times, size = scrape_times(app.api_url, args.scrapes)
                    stop.set()
                    if ingest:
                        feeder.join(timeout=60)
                    print(
                        f"{max_users:>10,} {refresh:>9g} {'yes' if ingest else 'no':>7} "
                        f"{statistics.median(times):>10.1f} {max(times):>9.1f} {size / 1024:>9.0f}"
                        f"  {app.stats.spans_stored - stored_before:,}"
                    )
            finally:
                app.stop()


if __name__ == "__main__":
    main()
