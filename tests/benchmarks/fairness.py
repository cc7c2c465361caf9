"""How long a one-span Export waits behind big ones (issue 13: eight 7 MB requests held one for 23 s).

Starts the service on a temporary database and free loopback ports. Each round sends ``--big``
Export requests of about 7 MB at once over gRPC, from threads of this process, and 0.2 s later a
one-span Export, and prints how long that one took, with the big ones' times. Two shapes of big
request: ``attributes`` (one LLM span with ~100,000 attributes) and ``spans`` (~25,000 LLM spans).

    .venv/bin/python tests/benchmarks/fairness.py --rounds 3
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import duckdb
import grpc

sys.path.insert(0, str(Path(__file__).parent.parent))
from otlp import chat, request, span  # noqa: E402

from user_metrics.app import App  # noqa: E402
from user_metrics.settings import Settings  # noqa: E402

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def big_body(shape: str) -> bytes:
    """About 7 MB of one Export request."""
    now = time.time_ns()
    if shape == "attributes":
        attrs = chat(user="big") | {f"junk.attribute.{i}": "x" * 40 for i in range(100_000)}
        return request([span(attrs, start=now)]).SerializeToString()
    spans = [span(chat(user=f"big-{i % 500}", **{"property.plan": "pro"}), start=now) for i in range(25_000)]
    return request(spans).SerializeToString()


def timed(call: grpc.UnaryUnaryMultiCallable, body: bytes, out: list[float]) -> None:
    started = time.perf_counter()
    call(body, timeout=600)
    out.append(time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--big", type=int, default=8, help="big requests at once (default 8)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shape", choices=("attributes", "spans", "both"), default="both")
    args = parser.parse_args()
    print(
        f"# fairness: {args.big} big exports of ~7 MB, then a 1-span export; {args.rounds} rounds; "
        f"{platform.python_version()}, DuckDB {duckdb.__version__}, {os.cpu_count()} cores"
    )
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            db=str(Path(tmp) / "bench.duckdb"),
            grpc_listen="127.0.0.1:0",
            http_listen="127.0.0.1:0",
            api_listen="127.0.0.1:0",
            max_message_mib=64,
            write_queue_rows=1_000_000,
        )
        app = App(settings)
        app.start()
        try:
            channel = grpc.insecure_channel(
                app.grpc_address, options=[("grpc.max_send_message_length", 100 * 1024 * 1024)]
            )
            call = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
            for shape in ("attributes", "spans") if args.shape == "both" else (args.shape,):
                body = big_body(shape)
                small = request([span(chat(user="small"), start=time.time_ns())]).SerializeToString()
                print(f"\nshape {shape}: big request {len(body) / 1e6:.1f} MB")
                waits = []
                for round_ in range(args.rounds):
                    before = (
                        app.stats.commits,
                        app.stats.commit_seconds,
                        app.stats.compactions,
                        app.stats.compaction_seconds,
                    )
                    big_times: list[float] = []
                    small_time: list[float] = []
                    threads = [
                        threading.Thread(target=timed, args=(call, body, big_times)) for _ in range(args.big)
                    ]
                    for thread in threads:
                        thread.start()
                    time.sleep(0.2)
                    timed(call, small, small_time)
                    for thread in threads:
                        thread.join()
                    waits.append(small_time[0])
                    commits = app.stats.commits - before[0]
                    print(
                        f"  writer: {commits} commits, {(app.stats.commit_seconds - before[1]) / max(commits, 1):.3f} s "
                        f"each; {app.stats.compactions - before[2]} compactions, "
                        f"{app.stats.compaction_seconds - before[3]:.2f} s in all"
                    )
                    print(
                        f"  round {round_ + 1}: 1-span export {small_time[0]:.2f} s; "
                        f"big ones {min(big_times):.2f}-{max(big_times):.2f} s"
                    )
                print(f"  median 1-span export: {statistics.median(waits):.2f} s")
            channel.close()
        finally:
            app.stop()


if __name__ == "__main__":
    main()
