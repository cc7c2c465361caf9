"""What one commit writes: each span once, its rollups, and the attribution tables beside it.

The writer (``writer.py``) runs one of these in a transaction with the Arrow tables registered
under fixed names: ``batch`` (the request rows), and when present ``waiting`` (rows for
``pending``), ``facts`` (rows for ``span_facts``) and ``finalised`` ((trace_id, span_id) of rows
leaving ``pending``). The fast path, ``insert_all``, inserts every key and row; a key stored
before makes it fail on ``span_keys``' primary key, and the writer rolls back and runs
``insert_new_only``, which stores only the rows whose keys were new (each once, even when the
batch repeats a span). The writer runs ``insert_new_only`` at once when some rows started
before ``span_keys`` holds keys (``dedupe.py``): those are new unless ``requests`` has them.
Both add what they stored to the rollups in the same transaction.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import duckdb
import pyarrow as pa

from user_metrics.store import links, rollups
from user_metrics.store.dedupe import KEY_ROW_SQL, SPAN_KEY_SQL, keys_of
from user_metrics.store.writer_connection import registered

Side = dict[str, pa.Table | None]  # "waiting", "facts", "finalised": the tables beside the batch
Stored = tuple[int, rollups.Touched]  # rows stored, and the rollup cells they touched


def insert(
    transaction: Callable[[Callable[[duckdb.DuckDBPyConnection], Stored]], Stored],
    batch: pa.Table,
    side: Side,
    max_dimension_values: int,
    keys_from: int,
    past: int,
    outbox: bool = False,
) -> Stored:
    """Store ``batch`` (registered as ``batch``) in ``transaction`` (the writer's, which rolls
    back on failure): ``insert_all``, or ``insert_new_only`` when that fails on a key stored
    before or when some rows (``past``: ``dedupe.past``) started before ``keys_from``. In lake
    mode (``outbox``) the stored rows go into ``lake_outbox`` too. Returns (rows stored, touched)."""
    new_only = functools.partial(
        insert_new_only,
        side=side,
        max_dimension_values=max_dimension_values,
        keys_from=keys_from,
        outbox=outbox,
    )
    try:
        if past:
            return transaction(new_only)
        return transaction(lambda con: insert_all(con, batch.num_rows, side, max_dimension_values, outbox))
    except duckdb.ConstraintException:  # a span stored before: store only the new ones
        return transaction(new_only)


def insert_all(
    con: duckdb.DuckDBPyConnection, rows: int, side: Side, max_dimension_values: int, outbox: bool = False
) -> tuple[int, rollups.Touched]:
    con.execute(f"INSERT INTO span_keys SELECT {KEY_ROW_SQL} FROM batch")
    con.execute("INSERT INTO requests SELECT * FROM batch")
    if outbox:
        con.execute("INSERT INTO lake_outbox SELECT * FROM batch")
    touched = rollups.apply(con, "batch", max_dimension_values)
    insert_side(con, side)
    return rows, touched


def insert_side(con: duckdb.DuckDBPyConnection, side: Side) -> None:
    if side["waiting"] is not None:
        con.execute("INSERT INTO pending BY NAME SELECT * FROM waiting")
    if side["facts"] is not None:
        rest, plain = links.split(side["facts"])  # identity-less spans: parent links only
        if plain is None:
            con.execute("INSERT INTO span_facts BY NAME SELECT * FROM facts")
        else:
            with registered(con, {"rest_facts": rest, "links": plain}):
                if rest is not None:
                    con.execute("INSERT INTO span_facts BY NAME SELECT * FROM rest_facts")
                con.execute("INSERT INTO span_links SELECT * FROM links")
    if side["finalised"] is not None:
        con.execute(
            "DELETE FROM pending WHERE (trace_id, span_id) IN (SELECT (trace_id, span_id) FROM finalised)"
        )


def insert_new_only(
    con: duckdb.DuckDBPyConnection,
    side: Side,
    max_dimension_values: int,
    keys_from: int = 0,
    outbox: bool = False,
) -> tuple[int, rollups.Touched]:
    """Store the rows of ``batch`` not stored before, each once: those that started from
    ``keys_from`` on by their keys (new in ``span_keys``), those before it by ``requests``."""
    recent = f"epoch_us(start_time) >= {int(keys_from)}"
    fresh = con.execute(
        f"INSERT INTO span_keys {keys_of('batch', recent)} ON CONFLICT DO NOTHING RETURNING k"
    ).to_arrow_table()
    # The rows that started before keys_from: new unless requests has them. The literal bounds
    # keep the lookup to the row groups of their time (zone maps on start_time).
    ((lo, hi),) = con.execute(
        f"SELECT min(start_time), max(start_time) FROM batch WHERE NOT ({recent})"
    ).fetchall()
    old = "false"
    if lo is not None:
        old = f"""NOT ({recent}) AND NOT EXISTS (SELECT 1 FROM requests AS r
            WHERE r.start_time BETWEEN $lo AND $hi
            AND r.start_time = b.start_time AND r.trace_id = b.trace_id AND r.span_id = b.span_id)"""
    with registered(con, {"fresh_keys": fresh}):
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE fresh_rows AS
            SELECT * EXCLUDE (_k, _n) FROM (
                SELECT *, {SPAN_KEY_SQL} AS _k,
                       row_number() OVER (PARTITION BY {SPAN_KEY_SQL} ORDER BY start_time) AS _n
                FROM batch) AS b
            WHERE _n = 1 AND (_k IN (SELECT k::HUGEINT FROM fresh_keys) OR ({old}))""",
            {"lo": lo, "hi": hi} if lo is not None else {},
        )
        con.execute("INSERT INTO requests SELECT * FROM fresh_rows")
        if outbox:
            con.execute("INSERT INTO lake_outbox SELECT * FROM fresh_rows")
        (stored,) = con.execute("SELECT count(*) FROM fresh_rows").fetchone() or (0,)
        touched = rollups.apply(con, "fresh_rows", max_dimension_values)
        con.execute("DROP TABLE fresh_rows")
        insert_side(con, side)
    return int(stored), touched
