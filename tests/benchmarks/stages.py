"""Stage table of the ingest path: microseconds per span of each stage, in one thread, on the
ingest benchmark's own requests (LLM-only and mixed), printed as a Markdown table.

    python tests/benchmarks/stages.py [--requests 40] [--traffic llm,mixed] [--no-end-to-end]

The requests are ``ingest.py``'s: ``build_request`` (512 LLM spans, 1,000 users) and
``build_mixed`` (1 LLM span in 10, the rest HTTP and DB spans with no user). The same requests
go through each stage in turn, one commit per request, on a fresh DuckDB file, one thread:

- decode: ``ExportTraceServiceRequest.FromString``; map: ``map_request``; price: ``Pricer.price``;
  Arrow: ``to_arrow``, and ``facts_table`` for the span facts;
- the store, on a ``WriterConnection``, with the tables registered as the writer does:
  ``inserts.insert_all`` runs with a connection that times each of its statements by the table
  it names — dedupe (span_keys), insert (requests), span_facts and span_links — and
  ``rollups.apply`` as a whole, then the commit; failing that ``Store.write(...).result()``, as
  one stage. The table says which.

A first request warms up and is not counted. The end-to-end rows (unless --no-end-to-end) time
the real service in-process, one sender thread, each export answered once committed: ``export``
of the decoded request (the Python path), and ``export_body`` of the bytes where the ingestor
has it (the native path, unless USER_METRICS_INGEST_PATH=python), with the path the service
says it runs. Bounded: N requests per traffic, no network.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ingest as bench  # noqa: E402

from user_metrics.ingest.attributes import compile_conventions  # noqa: E402
from user_metrics.ingest.mapping import map_request  # noqa: E402
from user_metrics.ingest.pricing import Pricer  # noqa: E402
from user_metrics.stats import Stats  # noqa: E402
from user_metrics.store import inserts, rollups  # noqa: E402
from user_metrics.store.batches import facts_table, to_arrow  # noqa: E402
from user_metrics.store.writer_connection import WriterConnection, registered  # noqa: E402

MAX_DIMENSION_VALUES = 1000
STAGES = {
    "decode": "decode (protobuf parse)",
    "map": "map (`map_request`)",
    "price": "price (`Pricer.price`)",
    "arrow": "Arrow (`to_arrow`)",
    "facts_arrow": "Arrow of span facts (`facts_table`)",
    "register": "register the tables",
    "dedupe": "dedupe (INSERT span_keys)",
    "insert": "insert (INSERT requests)",
    "rollups": "rollups (`rollups.apply`)",
    "facts_insert": "insert span_facts and span_links",
    "store": "store, the rest of `inserts.insert_all`",
    "store_write": "store, whole (`Store.write`, its thread)",
    "commit": "commit",
}
Timer = Callable[[], float]
P: Timer = time.perf_counter


@contextlib.contextmanager
def transaction(con: Any, tables: dict[str, Any], c: dict[str, float]) -> Iterator[None]:
    """The tables registered (timed as "register"), a transaction, its COMMIT timed as "commit"."""
    s = P()
    with registered(con, tables):
        c["register"] = P() - s
        con.execute("BEGIN")
        try:
            yield
        except BaseException:
            con.execute("ROLLBACK")
            raise
        s = P()
        con.execute("COMMIT")
        c["commit"] = P() - s


class TimedCon:
    """The connection insert_all is given: each statement's time goes to the stage its SQL names
    (span_keys: dedupe, requests: insert, span_facts), the rest to "store"; ``rollups.apply`` is
    timed as a whole, as "rollups", whatever statements it runs."""

    STAGES = (
        ("span_keys", "dedupe"),
        ("into requests", "insert"),
        ("span_facts", "facts_insert"),
        ("span_links", "facts_insert"),
    )

    def __init__(self, con: Any, c: dict[str, float]) -> None:
        self._con, self._c, self.in_rollups = con, c, False

    def execute(self, sql: str, *args: Any) -> Any:
        s = P()
        try:
            return self._con.execute(sql, *args)
        finally:
            if not self.in_rollups:
                text = " ".join(sql.lower().split())
                stage = next((name for key, name in self.STAGES if key in text), "store")
                self._c[stage] = self._c.get(stage, 0.0) + P() - s

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def insert_all(con: Any, tables: dict[str, Any], rows: int, c: dict[str, float]) -> None:
    """inserts.insert_all, its arguments matched by name, its statements timed by TimedCon."""
    timed = TimedCon(con, c)
    side = {"waiting": None, "facts": tables.get("facts"), "finalised": None}
    known = {"con": timed, "rows": rows, "side": side, "max_dimension_values": MAX_DIMENSION_VALUES}
    params = inspect.signature(inserts.insert_all).parameters
    kwargs = {name: known[name] for name in params if name in known}
    apply = rollups.apply

    def timed_apply(*args: Any, **kw: Any) -> Any:
        s, timed.in_rollups = P(), True
        try:
            return apply(*args, **kw)
        finally:
            timed.in_rollups = False
            c["rollups"] = c.get("rollups", 0.0) + P() - s

    rollups.apply = timed_apply  # type: ignore[assignment]
    try:
        with transaction(con, tables, c):
            inserts.insert_all(**kwargs)
    finally:
        rollups.apply = apply


class StoreWrite:
    """Store.write(...).result() as one stage: the public way in, on a file of its own."""

    def __init__(self, db: str) -> None:
        self._db = db
        self._store: Any = None

    def __call__(self, con: Any, tables: dict[str, Any], rows: int, c: dict[str, float]) -> None:
        from user_metrics.store.writer import Store

        if self._store is None:
            self._store = Store(self._db, Stats())
        s = P()
        self._store.write(tables["batch"], facts=tables.get("facts")).result()
        c["store_write"] = P() - s

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def run_stages(bodies: list[bytes], db: str, first: str) -> tuple[dict[str, float], int, int, str]:
    """Seconds per stage over every request but the first, spans, LLM records, store shape."""
    conventions, pricer = compile_conventions(), Pricer([])
    writer = WriterConnection(db, Stats(), memory_limit_mib=0, max_dimension_values=MAX_DIMENSION_VALUES)
    store_write = StoreWrite(f"{db}.store")
    store_ways: list[tuple[str, Callable[..., None]]] = [
        ("insert_all", insert_all),
        ("Store.write", store_write),
    ]
    while store_ways[0][0] != first:
        store_ways.pop(0)
    totals: dict[str, float] = {}
    spans = records = 0
    try:
        for i, body in enumerate(bodies):
            c: dict[str, float] = {}
            s = P()
            req = ExportTraceServiceRequest.FromString(body)
            c["decode"] = P() - s
            s = P()
            mapped = map_request(req, conventions, now_unix_nano=time.time_ns())
            c["map"] = P() - s
            s = P()
            prices = pricer.price(mapped.records)
            c["price"] = P() - s
            s = P()
            table = to_arrow(mapped.records, *prices)
            c["arrow"] = P() - s
            s = P()
            facts = facts_table(mapped.facts, time.time_ns() // 1000) if mapped.facts else None
            c["facts_arrow"] = P() - s
            tables = {"batch": table, "facts": facts}
            while True:  # the first store shape that works on the warm-up request is kept
                try:
                    store_ways[0][1](writer.con, tables, table.num_rows, c)
                    break
                except Exception as exc:  # noqa: BLE001 - the store's code changed shape
                    if i or len(store_ways) == 1:
                        raise
                    print(f"(store: {store_ways[0][0]} failed: {str(exc).splitlines()[0][:120]})")
                    store_ways.pop(0)
            if i == 0:
                continue
            for k, v in c.items():
                totals[k] = totals.get(k, 0.0) + v
            spans += sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
            records += len(mapped.records)
    finally:
        writer.close()
        store_write.close()
    return totals, spans, records, store_ways[0][0]


def end_to_end(bodies: list[bytes], tmp: str, name: str) -> dict[str, tuple[float, str]]:
    """µs per span through the real service in-process, one sender: export and export_body."""
    from user_metrics.app import App

    out = {}
    for way in ("export", "export_body"):
        app = App(bench.service_settings(f"{tmp}/{name}-{way}.duckdb"))
        if way == "export_body" and not hasattr(app.ingestor, way):
            continue
        said = bench.start_logged(app)
        try:
            send = getattr(app.ingestor, way)
            path = "python" if way == "export" else bench.ingest_path(said)
            decode = ExportTraceServiceRequest.FromString if way == "export" else bytes
            send(decode(bodies[0]))
            started = P()
            for body in bodies[1:]:
                send(decode(body))
            elapsed = P() - started
        finally:
            app.stop()
        out[way] = (1e6 * elapsed / ((len(bodies) - 1) * bench.SPANS_PER_REQUEST), path)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=40, help="requests of 512 spans per traffic")
    parser.add_argument("--traffic", default="llm,mixed", help="llm, mixed or both")
    parser.add_argument("--no-end-to-end", dest="end_to_end", action="store_false")
    parser.add_argument(
        "--store",
        choices=("insert_all", "Store.write"),
        default="insert_all",
        help="the finest store split to try first (the next is tried when it fails)",
    )
    args = parser.parse_args()
    columns: list[tuple[str, dict[str, float], int, int, str, dict[str, tuple[float, str]], float]] = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/tmp")) as tmp:
        for traffic in args.traffic.split(","):
            build = bench.build_mixed if traffic == "mixed" else bench.build_request
            rng, now = random.Random(7), time.time_ns()
            bodies = [build(rng, now) for _ in range(args.requests + 1)]
            load = os.getloadavg()[0]
            totals, spans, records, way = run_stages(bodies, f"{tmp}/{traffic}.duckdb", args.store)
            e2e = end_to_end(bodies, tmp, traffic) if args.end_to_end else {}
            columns.append((traffic, totals, spans, records, way, e2e, load))
    print(
        f"{args.requests} requests x {bench.SPANS_PER_REQUEST} spans per traffic, one thread, one commit each"
    )
    header = "| stage |"
    rule = "|---|"
    for traffic, _, _, _, _, _, load in columns:
        if traffic == "mixed":
            header += f" mixed: µs/span of all spans (load {load:.2f}) | mixed: µs/LLM record |"
            rule += "---:|---:|"
        else:
            header += f" LLM-only: µs/span (load {load:.2f}) |"
            rule += "---:|"
    print(header)
    print(rule)
    present = [k for k in STAGES if any(k in col[1] for col in columns)]
    for key in [*present, "total"]:
        row = f"| {'**total**' if key == 'total' else STAGES[key]} |"
        for traffic, totals, spans, records, _, _, _ in columns:
            seconds = sum(totals.values()) if key == "total" else totals.get(key, 0.0)
            cell = f"{1e6 * seconds / spans:.1f}"
            if key == "total":
                cell = f"**{cell}** ({spans / seconds:,.0f} spans/s)"
            row += f" {cell} |"
            if traffic == "mixed":
                row += f" {1e6 * seconds / max(records, 1):.1f} |"
        print(row)
    for way in ("export", "export_body"):
        if not any(way in col[5] for col in columns):
            continue
        row = f"| end to end: `Ingestor.{way}`, one sender |"
        for traffic, _, spans, records, _, e2e, _ in columns:
            us, path = e2e.get(way, (float("nan"), ""))
            row += f" {us:.1f} ({path}) |"
            if traffic == "mixed":
                row += f" {us * spans / max(records, 1):.1f} |"
        print(row)
    for traffic, _, spans, records, way, _, _ in columns:
        print(f"{traffic}: {spans:,} spans, {records:,} LLM records; store timed as: {way}")


if __name__ == "__main__":
    main()
