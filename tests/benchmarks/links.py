"""Span links benchmark: the cost of storing and purging the facts of spans without identity.

    python tests/benchmarks/links.py [--sizes 8192,32768] [--commits 10] [--dir /tmp]

The facts are those of plain spans (an HTTP or database span: no user, session or properties,
not an LLM span), as ``ingest`` makes them: random trace, span and parent ids in lower-case hex.
Two ways of storing them, interleaved commit by commit on two fresh DuckDB files of the store's
schema, each commit in a transaction of its own:

- facts: ``INSERT INTO span_facts`` of the facts table (how every fact was stored before schema 13);
- links: ``links.split`` (numpy over the ids) and ``INSERT INTO span_links`` (the store now).

Prints, per size, CPU µs per row (the process's, all threads: DuckDB's too) and wall ms per commit
for each, their ratio, and the cost of purging the first half of the commits (a DELETE by
``seen_us``, as ``attribution.purge_facts``) from each table. Bounded: COMMITS per size.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable

import duckdb
import numpy as np
import pyarrow as pa

from user_metrics.store import links, schema
from user_metrics.store.batches import FACTS_SCHEMA


def plain_facts(n: int, seen_us: int, rng: np.random.Generator) -> pa.Table:
    def hexes(width: int) -> pa.Array:
        raw = rng.integers(0, 256, size=(n, width // 2), dtype=np.uint8)
        return pa.array([bytes(r).hex() for r in raw], pa.string())

    columns = {
        name: pa.nulls(n, field.type) for name, field in zip(FACTS_SCHEMA.names, FACTS_SCHEMA, strict=True)
    }
    columns.update(trace_id=hexes(32), span_id=hexes(16), parent_span_id=hexes(16))
    columns["seen_us"] = pa.array(np.full(n, seen_us, dtype=np.int64))
    return pa.table(columns, schema=FACTS_SCHEMA)


def as_facts(con: duckdb.DuckDBPyConnection, facts: pa.Table) -> None:
    con.register("facts", facts)
    con.execute("INSERT INTO span_facts BY NAME SELECT * FROM facts")
    con.unregister("facts")


def as_links(con: duckdb.DuckDBPyConnection, facts: pa.Table) -> None:
    rest, plain = links.split(facts)
    assert rest is None and plain is not None
    con.register("links", plain)
    con.execute("INSERT INTO span_links SELECT * FROM links")
    con.unregister("links")


def timed(con: duckdb.DuckDBPyConnection, work: Callable[..., object], *args: object) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    con.execute("BEGIN")
    work(*args)
    con.execute("COMMIT")
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="8192,32768")
    parser.add_argument("--commits", type=int, default=10)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    args = parser.parse_args()
    print(f"load {os.getloadavg()[0]:.2f}")
    for n in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            cons = {name: duckdb.connect(os.path.join(tmp, f"{name}.duckdb")) for name in ("facts", "links")}
            ways = {"facts": as_facts, "links": as_links}
            cpu = dict.fromkeys(cons, 0.0)
            wall = dict.fromkeys(cons, 0.0)
            rng = np.random.default_rng(n)
            for con in cons.values():
                schema.create_or_upgrade(con, tmp, 100)
            for k in range(args.commits + 1):
                facts = plain_facts(n, k, rng)
                for name, con in cons.items():
                    c, w = timed(con, ways[name], con, facts)
                    if k:  # the first commit warms up
                        cpu[name] += c
                        wall[name] += w
            rows = n * args.commits
            line = [f"{n:>6} rows/commit:"]
            for name in cons:
                line.append(
                    f"{name} {cpu[name] / rows * 1e6:.2f} µs CPU/row, {wall[name] / args.commits * 1e3:.1f} ms/commit;"
                )
            line.append(f"links/facts CPU {cpu['links'] / cpu['facts']:.2f}")
            print(" ".join(line))
            cut = args.commits // 2 + 1
            for name, table in (("facts", "span_facts"), ("links", "span_links")):
                con = cons[name]
                c, w = timed(con, con.execute, f"DELETE FROM {table} WHERE seen_us < {cut}")
                print(
                    f"        purge {cut * n} of {(args.commits + 1) * n} rows from {table}: {c / (cut * n) * 1e6:.2f} µs CPU/row, {w * 1e3:.1f} ms"
                )
            for con in cons.values():
                con.close()
    print(f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
