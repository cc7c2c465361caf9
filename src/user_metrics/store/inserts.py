"""What one commit writes: each span once, its rollups, and the attribution tables beside it.

The writer (``writer.py``) runs one of these in a transaction with the Arrow tables registered
under fixed names: ``batch`` (the request rows), and when present ``waiting`` (rows for
``pending``), ``facts`` (rows for ``span_facts``) and ``finalised`` ((trace_id, span_id) of rows
leaving ``pending``). The fast path, ``insert_all``, inserts every key and row; a key stored
before makes it fail on ``span_keys``' primary key, and the writer rolls back and runs
``insert_new_only``, which stores only the rows whose keys were new (each once, even when the
batch repeats a span). Both add what they stored to the rollups in the same transaction.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from user_metrics.store import rollups
from user_metrics.store.schema import SPAN_KEY_SQL
from user_metrics.store.writer_connection import registered

Side = dict[str, pa.Table | None]  # "waiting", "facts", "finalised": the tables beside the batch


def insert_all(
    con: duckdb.DuckDBPyConnection, rows: int, side: Side, max_dimension_values: int
) -> tuple[int, rollups.Touched]:
    con.execute(f"INSERT INTO span_keys SELECT {SPAN_KEY_SQL} FROM batch")
    con.execute("INSERT INTO requests SELECT * FROM batch")
    touched = rollups.apply(con, "batch", max_dimension_values)
    insert_side(con, side)
    return rows, touched


def insert_side(con: duckdb.DuckDBPyConnection, side: Side) -> None:
    if side["waiting"] is not None:
        con.execute("INSERT INTO pending BY NAME SELECT * FROM waiting")
    if side["facts"] is not None:
        con.execute("INSERT INTO span_facts BY NAME SELECT * FROM facts")
    if side["finalised"] is not None:
        con.execute(
            "DELETE FROM pending WHERE (trace_id, span_id) IN (SELECT (trace_id, span_id) FROM finalised)"
        )


def insert_new_only(
    con: duckdb.DuckDBPyConnection, side: Side, max_dimension_values: int
) -> tuple[int, rollups.Touched]:
    fresh = con.execute(
        f"INSERT INTO span_keys SELECT DISTINCT {SPAN_KEY_SQL} FROM batch ON CONFLICT DO NOTHING RETURNING k"
    ).to_arrow_table()
    with registered(con, {"fresh_keys": fresh}):
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE fresh_rows AS
            SELECT * EXCLUDE (_k, _n) FROM (
                SELECT *, {SPAN_KEY_SQL} AS _k,
                       row_number() OVER (PARTITION BY {SPAN_KEY_SQL}) AS _n
                FROM batch)
            WHERE _n = 1 AND _k IN (SELECT k::HUGEINT FROM fresh_keys)"""
        )
        con.execute("INSERT INTO requests SELECT * FROM fresh_rows")
        touched = rollups.apply(con, "fresh_rows", max_dimension_values)
        con.execute("DROP TABLE fresh_rows")
        insert_side(con, side)
    return fresh.num_rows, touched
