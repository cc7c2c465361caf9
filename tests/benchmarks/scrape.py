"""Scrape benchmark: /metrics time and body size with 100k users in the store, and what a
rendering costs ingest.

    python tests/benchmarks/scrape.py [--users 100000] [--scrapes 20] [--db /tmp/bench/scrape.duckdb]
    python tests/benchmarks/scrape.py --compare [--max-users 10000,100000] [--renderers before,after]
        [--rounds 3] [--scrapes 2] [--seconds 5] [--no-gil]

Builds a store with USERS users (3 requests each, over 30 days, 3 models, a plan property)
through ``Store.write``. Then, for metrics_max_users = 1,000 and 10,000, it starts the real
service on loopback and times SCRAPES scrapes of ``/metrics`` over HTTP, with the default
background rendering (metrics_refresh_seconds 5) and with rendering on every scrape (0). Each is
timed first on an idle service, then while a thread in the service's process exports 512-span
requests (for the stored users) as fast as the service takes them. It prints the median and
worst scrape time and the body size. Target: <= 50 ms per scrape at 10,000 exposed users while
ingest runs.

``--compare`` measures the per-user families rendered "before" (prometheus_client builds and
formats every sample in Python: ``tests/metrics_reference.py``) against "after" (DuckDB writes
the lines: ``serve/user_samples.py``), in one run, with metrics_refresh_seconds 0 so that each
scrape is one rendering. Per max_users and renderer: the median scrape on an idle service, the
body size, the median scrape while the feeding thread runs, the GIL-held seconds per rendering
(py-spy --gil --nonblocking on this process, 100 Hz: samples inside ``UsageCollector.gather``
or ``Gathered.encode``), and the spans stored per second by the feeding thread in ROUNDS pairs
of windows, interleaved: SECONDS without scrapes, then SCRAPES scrapes back to back; their
ratio, and "lost s": the feeding thread's seconds of ingest lost per rendering, (1 - ratio) x
the scraping time / (ROUNDS x SCRAPES). The store's compaction (seconds, every 100,000 rows) is off in these runs: it would drown the figures.

Bounded: a fixed number of scrapes; the ingest thread stops with them.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from metrics_reference import ReferenceCollector  # noqa: E402
from otlp import chat, request, span  # noqa: E402

from user_metrics.app import App  # noqa: E402
from user_metrics.settings import Settings  # noqa: E402
from user_metrics.stats import Stats  # noqa: E402
from user_metrics.store.batches import REQUESTS_ARROW_SCHEMA, nanos_to_decimal_array  # noqa: E402
from user_metrics.store.writer import Store  # noqa: E402

PY_SPY = Path(sys.executable).parent / "py-spy"
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
        with urllib.request.urlopen(url + "/metrics", timeout=600) as response:
            size = len(response.read())
        times.append((time.perf_counter() - started) * 1000)
    return times, size


def feed(app: App, stop: threading.Event, users: int) -> None:
    """Export 512-span requests for the stored users, round robin, until told to stop (the number
    of users stays the same, so every run renders the same store)."""
    k = 0
    while not stop.is_set():
        app.ingestor.export(request([span(chat(f"user-{(k * 512 + i) % users}")) for i in range(512)]))
        k += 1


class GilProfile:
    """py-spy --gil on this process: seconds the GIL was held inside a /metrics rendering."""

    RATE = 100

    def __init__(self, enabled: bool) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._out = Path(tempfile.mkstemp(suffix=".txt")[1])
        if enabled and PY_SPY.exists():
            self._proc = subprocess.Popen(
                [str(PY_SPY), "record", "--gil", "--nonblocking", "-r", str(self.RATE), "-f", "raw"]
                + ["-o", str(self._out), "--pid", str(os.getpid())],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1)  # attached

    def stop(self) -> float | None:
        """GIL-held seconds in Gathered.encode or UsageCollector.gather (None without py-spy)."""
        if self._proc is None:
            return None
        self._proc.send_signal(signal.SIGINT)
        self._proc.wait(timeout=60)
        held = 0
        for line in self._out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if re.search(r"\b(gather|encode) \([^)]*serve/metrics\.py", stack):
                held += int(count)
        self._out.unlink()
        return held / self.RATE


@dataclass
class Rates:
    alone: float  # spans stored per second in the windows without scrapes
    during: float  # ... and in the windows with scrapes
    scraping_s: float  # how long the windows with scrapes took
    times: list[float]  # each scrape's milliseconds
    held: float | None  # GIL-held seconds inside renderings (py-spy), None without it


def ingest_rates(app: App, users: int, rounds: int, scrapes: int, seconds: float, gil: bool) -> Rates:
    """Spans stored per second while a thread feeds the service, in ROUNDS pairs of windows:
    ``seconds`` without scrapes, then ``scrapes`` scrapes back to back (interleaved, so that the
    load of the machine drifts the same for both)."""
    stop = threading.Event()
    feeder = threading.Thread(target=feed, args=(app, stop, users), daemon=True)
    feeder.start()
    time.sleep(1)  # under way
    profile = GilProfile(gil)
    spans, took = [0, 0], [0.0, 0.0]  # [quiet, scraping]
    times: list[float] = []
    for _ in range(rounds):
        for window in (0, 1):
            stored, started = app.stats.spans_stored, time.perf_counter()
            if window:
                times += scrape_times(app.api_url, scrapes)[0]
            else:
                time.sleep(seconds)
            spans[window] += app.stats.spans_stored - stored
            took[window] += time.perf_counter() - started
    held = profile.stop()
    stop.set()
    feeder.join(timeout=120)
    return Rates(spans[0] / took[0], spans[1] / took[1], took[1], times, held)


def use_reference(app: App, max_users: int, property_keys: tuple[str, ...]) -> None:
    """The service renders the per-user families with prometheus_client, as before user_samples.py."""
    app.metrics._collector = ReferenceCollector(  # noqa: SLF001 - the benchmark's swap
        app.store.reader,
        app.stats,
        lambda: app.store.queue,
        max_users=max_users,
        property_keys=property_keys,
        coverage=app.coverage,
    )


def compare(args: argparse.Namespace, base: Settings) -> None:
    """Before (prometheus_client builds the per-user samples) against after (DuckDB writes them)."""
    print(
        f"\n{'max_users':>10} {'renderer':>9} {'idle ms':>9} {'body MiB':>9} {'ingest ms':>10} "
        f"{'GIL s/scrape':>12} {'spans/s alone':>13} {'with scrapes':>12} {'ratio':>6} {'lost s':>7}  load"
    )
    for max_users in args.max_users:
        for renderer in args.renderers:
            app = App(replace(base, metrics_max_users=max_users, metrics_refresh_seconds=0))
            if hasattr(app.store, "_compact_after_rows"):  # a compaction of seconds would drown the figures
                app.store._compact_after_rows = 10**12  # noqa: SLF001
            app.start()
            try:
                if renderer == "before":
                    use_reference(app, max_users, base.metrics_properties)
                scrape_times(app.api_url, 1)  # warm up
                idle, size = scrape_times(app.api_url, args.scrapes)
                r = ingest_rates(app, args.users, args.rounds, args.scrapes, args.seconds, args.gil)
                renderings = args.rounds * args.scrapes
                gil = "n/a" if r.held is None else f"{r.held / renderings:.3f}"
                lost = (
                    (1 - r.during / r.alone) * r.scraping_s / renderings
                )  # ingest seconds lost per rendering
                print(
                    f"{max_users:>10,} {renderer:>9} {statistics.median(idle):>9.0f} {size / 2**20:>9.1f} "
                    f"{statistics.median(r.times):>10.0f} {gil:>12} {r.alone:>13,.0f} {r.during:>12,.0f} "
                    f"{r.during / r.alone:>6.2f} {lost:>7.2f}  {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
            finally:
                app.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument("--db", default="/tmp/bench/scrape.duckdb")
    parser.add_argument(
        "--compare", action="store_true", help="before/after renderers, ingest during scrapes"
    )
    parser.add_argument(
        "--max-users", type=lambda v: [int(x) for x in v.split(",")], default=[10_000, 100_000]
    )
    parser.add_argument("--renderers", type=lambda v: v.split(","), default=["before", "after"])
    parser.add_argument("--seconds", type=float, default=5.0, help="--compare: each window without scrapes")
    parser.add_argument("--rounds", type=int, default=3, help="--compare: pairs of windows, without and with")
    parser.add_argument("--no-gil", dest="gil", action="store_false", help="--compare: without py-spy --gil")
    args = parser.parse_args()
    Path(args.db).parent.mkdir(parents=True, exist_ok=True)
    if not Path(args.db).exists():
        started = time.perf_counter()
        build(args.db, args.users)
        print(f"built {args.users:,} users x 3 requests in {time.perf_counter() - started:.1f} s")
    print(f"{os.cpu_count()} cores; load {os.getloadavg()}")
    base = Settings(
        db=args.db,
        grpc_listen="127.0.0.1:0",
        api_listen="127.0.0.1:0",
        http_listen="127.0.0.1:0",
        metrics_properties=("plan",),
    )
    if args.compare:
        compare(args, base)
        return
    print(
        f"{'max_users':>10} {'refresh s':>9} {'ingest':>7} {'median ms':>10} {'worst ms':>9} {'body KiB':>9}"
        "  spans stored meanwhile"
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
                    feeder = threading.Thread(target=feed, args=(app, stop, args.users), daemon=True)
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
