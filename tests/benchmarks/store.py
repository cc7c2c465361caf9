"""Store benchmark: the write path's cost per row at several group-commit sizes, on fresh files.

    python tests/benchmarks/store.py [--sizes 512,4096,32768] [--commits 20] [--hog] [--no-facts]
                                     [--only AB] [--dir /tmp]

The rows are ``queries.make_chunk``'s (100,000 Zipf users, start times within one hour, a
``plan`` property), with a ``span_facts`` row for every request unless ``--no-facts``. For each
size, one warm-up commit and COMMITS measured commits, each on a fresh DuckDB file:

- A: ``Store.write(...).result()`` through the real writer thread, one write per commit:
  wall ms per write, µs/row and rows/s, with compactions and checkpoints included (and counted).
- B: ``inserts.insert_all`` in a ``WriterConnection.transaction`` with the tables registered as
  the writer registers them; each statement timed and put in a stage by what it writes:
  register, dedupe (span_keys), insert (requests), rollups (everything else), facts
  (span_facts), commit. Prints ms per commit and µs/row per stage, and the statement count.

Besides wall time, each figure has the process's CPU time per row (all threads: DuckDB's and,
with ``--hog``, the hog's too), which a shared, loaded machine distorts much less than wall time.
``--hog`` runs a pure-Python thread spinning beside the writer, as busy mapper threads do: every
statement then waits for the GIL when it returns. Bounded: a fixed number of commits per size.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parent))
import queries  # noqa: E402

from user_metrics.stats import Stats  # noqa: E402
from user_metrics.store import inserts  # noqa: E402
from user_metrics.store.batches import FACTS_SCHEMA  # noqa: E402
from user_metrics.store.writer import Store  # noqa: E402
from user_metrics.store.writer_connection import WriterConnection, registered  # noqa: E402

now = time.perf_counter
POPULATION = queries.Population()


def chunk(k: int, n: int, first: int) -> pa.Table:
    t1 = queries.END_US - 60_000_000
    return queries.make_chunk(
        POPULATION, np.random.default_rng([1, k]), first, n, t1 - 3_600_000_000, t1, 0x1234_0000_0000_0000
    )


def facts_of(table: pa.Table) -> pa.Table:
    """A ``span_facts`` row per request, as the mapper makes them (seen now)."""
    n = table.num_rows
    columns = {
        name: table[name] if name in table.column_names else pa.nulls(n, field.type)
        for name, field in zip(FACTS_SCHEMA.names, FACTS_SCHEMA, strict=True)
    }
    columns["seen_us"] = pa.array(np.full(n, time.time_ns() // 1000, dtype=np.int64))
    columns["llm"] = pa.array(np.full(n, "call"), pa.string())
    columns["model"] = pc.utf8_lower(table["request_model"])
    return pa.table(columns, schema=FACTS_SCHEMA)


class Timed:
    """The connection, timing each ``execute`` into a stage by what its SQL writes."""

    STAGES = (("span_keys", "dedupe"), ("INTO requests", "insert"), ("span_facts", "facts"))

    def __init__(self, con: Any, acc: collections.Counter[str], counts: collections.Counter[str]) -> None:
        self.con, self.acc, self.counts = con, acc, counts

    def execute(self, sql: str, *args: Any) -> Any:
        stage = next((s for key, s in self.STAGES if key in sql), "rollups")
        started, cpu = now(), time.process_time()
        result = self.con.execute(sql, *args)
        self.acc[stage] += now() - started
        self.acc[f"{stage} cpu"] += time.process_time() - cpu
        self.counts[stage] += 1
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.con, name)


def hog(stop: threading.Event) -> None:
    x = 0
    while not stop.is_set():
        for i in range(10_000):
            x += i


def run_a(tables: list[pa.Table], facts: list[pa.Table | None], directory: str) -> str:
    stats = Stats()
    store = Store(f"{directory}/a.duckdb", stats)
    try:
        store.write(tables[0], facts=facts[0]).result()  # warm-up
        commits, compactions, compaction_s = stats.commits, stats.compactions, stats.compaction_seconds
        started, cpu = now(), time.process_time()
        for table, fact in zip(tables[1:], facts[1:], strict=True):
            store.write(table, facts=fact).result()
        wall, cpu = now() - started, time.process_time() - cpu
        commits, compactions = stats.commits - commits, stats.compactions - compactions
        compaction_s = stats.compaction_seconds - compaction_s
    finally:
        store.close()
    rows = sum(t.num_rows for t in tables[1:])
    writes = len(tables) - 1
    return (
        f"A {1e3 * wall / writes:8.1f} ms/write {1e6 * wall / rows:6.1f} µs/row {rows / wall:9,.0f} rows/s,"
        f" CPU {1e6 * cpu / rows:6.1f} µs/row"
        f"  ({commits} commits, {compactions} compactions {compaction_s:.2f} s)"
    )


def _timed_insert(timed: Timed, rows: int, side: inserts.Side) -> Any:
    return lambda _: inserts.insert_all(timed, rows, side, 1000)  # type: ignore[arg-type]


def run_b(tables: list[pa.Table], facts: list[pa.Table | None], directory: str) -> list[str]:
    db = WriterConnection(f"{directory}/b.duckdb", Stats(), memory_limit_mib=0, max_dimension_values=1000)
    acc: collections.Counter[str] = collections.Counter()
    counts: collections.Counter[str] = collections.Counter()
    rows = 0
    try:
        for i, (table, fact) in enumerate(zip(tables, facts, strict=True)):
            sacc: collections.Counter[str] = collections.Counter()
            scounts: collections.Counter[str] = collections.Counter()
            side = {"waiting": None, "facts": fact, "finalised": None}
            started, cpu = now(), time.process_time()
            with registered(db.con, {"batch": table, **side}):
                sacc["register"] += now() - started
                sacc["register cpu"] += time.process_time() - cpu
                db.transaction(_timed_insert(Timed(db.con, sacc, scounts), table.num_rows, side))
            # COMMIT (and BEGIN, unregister): the rest
            sacc["commit"] = now() - started - sum(v for k, v in sacc.items() if not k.endswith("cpu"))
            sacc["commit cpu"] = (
                time.process_time() - cpu - sum(v for k, v in sacc.items() if k.endswith("cpu"))
            )
            if i:
                acc.update(sacc)
                counts.update(scounts)
                rows += table.num_rows
    finally:
        db.close()
    writes = len(tables) - 1
    total = sum(v for k, v in acc.items() if not k.endswith("cpu"))
    cpu = sum(v for k, v in acc.items() if k.endswith("cpu"))
    lines = [
        f"B {1e3 * total / writes:8.1f} ms/commit {1e6 * total / rows:6.1f} µs/row {rows / total:9,.0f} rows/s,"
        f" CPU {1e6 * cpu / rows:6.1f} µs/row  ({sum(counts.values()) / writes:.0f} statements/commit"
        " + BEGIN, COMMIT)"
    ]
    for stage in ("register", "dedupe", "insert", "rollups", "facts", "commit"):
        lines.append(
            f"    {stage:9s} {1e3 * acc[stage] / writes:8.2f} ms/commit {1e6 * acc[stage] / rows:6.2f} µs/row,"
            f" CPU {1e6 * acc[f'{stage} cpu'] / rows:6.2f} µs/row  ({counts[stage] / writes:.0f} statements)"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="512,4096,32768")
    parser.add_argument("--commits", type=int, default=20)
    parser.add_argument("--hog", action="store_true", help="a pure-Python thread spinning beside the writer")
    parser.add_argument("--no-facts", action="store_true", help="no span_facts rows")
    parser.add_argument("--only", default="AB", help="A (Store.write), B (statements), or AB")
    parser.add_argument("--dir", default=tempfile.gettempdir())
    args = parser.parse_args()
    stop = threading.Event()
    if args.hog:
        threading.Thread(target=hog, args=(stop,), daemon=True).start()
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            tables = [chunk(k, size, 10_000_000 + k * size) for k in range(args.commits + 1)]
            facts = [None if args.no_facts else facts_of(t) for t in tables]
            head = f"size {size:6d} x {args.commits} commits, hog={args.hog}, facts={not args.no_facts}"
            with tempfile.TemporaryDirectory(dir=args.dir) as directory:
                if "A" in args.only:
                    print(
                        f"{head}: {run_a(tables, facts, directory)}; load {os.getloadavg()[0]:.2f}",
                        flush=True,
                    )
                if "B" in args.only:
                    lines = run_b(tables, facts, directory)
                    print(
                        f"{head}: {lines[0]}; load {os.getloadavg()[0]:.2f}", *lines[1:], sep="\n", flush=True
                    )
    finally:
        stop.set()


if __name__ == "__main__":
    main()
