"""Dimensions: what rollup cells are keyed by besides time and user, and the bound on their values.

``dims`` holds one row per distinct (service, environment, provider, request model, response
model, properties) combination; rollup cells carry its ``dims_id``, so a filter on any of those
becomes ``dims_id IN (...)`` over a small table.

Each dimension (the five columns, and each property key) gives at most ``max_dimension_values``
distinct values cells of their own. Values are admitted first come, first served, and stay
admitted for good, so an admitted value's cells hold every request that carries it. A value that
comes after the dimension is full is folded: the ``dims`` row of its requests says ``(other)``
instead (``requests`` keeps the real value). Once a dimension has folded a value it admits no
more, even if the limit is raised: a value admitted later would lack its earlier requests.

``dim_values`` records the admitted values, and one row with a NULL value for each dimension
that has folded some. Model names count case-insensitively (a model filter ignores case), so
for the two model dimensions it holds lower-cased names. The query layer asks ``served_by_rollups``
and ``folded`` (``query/cells.py``) whether rollup cells answer a question exactly, and reads
``requests`` when not.
"""

from __future__ import annotations

import duckdb

OTHER = "(other)"
# The model a request is counted under in breakdowns: what was asked for, else what answered,
# so an alias and the dated snapshot that answered it stay one model.
MODEL_SQL = "coalesce(request_model, response_model)"
# The dimensions besides the properties (each property key is the dimension 'property:<key>').
COLUMNS = ("service_name", "environment", "provider", "request_model", "response_model")
CASELESS = ("request_model", "response_model")
# What a model breakdown groups by: folded values in any of these need the request rows.
MODEL_DIMENSIONS = ("provider", "request_model", "response_model")

# A canonical, unambiguous identity for a dims combination (property order does not matter).
DIMS_HASH_SQL = (
    "md5_number(to_json({s: service_name, e: environment, p: provider, q: request_model, "
    "r: response_model, props: map_from_entries(list_sort(map_entries(properties)))}))"
)


def hash_sql(lake: bool = False) -> str:
    """``DIMS_HASH_SQL``; on a DuckLake connection (``lake``) the same 128 bits as hexadecimal text
    (``md5``), because DuckDB writes a (U)HUGEINT column into Parquet as a DOUBLE, losing bits:
    the lake's ``dims.dims_hash`` is VARCHAR (``lake_schema.py``)."""
    return DIMS_HASH_SQL.replace("md5_number(", "md5(", 1) if lake else DIMS_HASH_SQL


DDL: tuple[str, ...] = (
    "CREATE SEQUENCE IF NOT EXISTS dims_id_seq START 1",
    """CREATE TABLE IF NOT EXISTS dims (
    dims_id        INTEGER NOT NULL DEFAULT nextval('dims_id_seq'),
    dims_hash      UHUGEINT UNIQUE NOT NULL,
    service_name   VARCHAR,
    environment    VARCHAR,
    provider       VARCHAR,
    request_model  VARCHAR,
    response_model VARCHAR,
    properties     MAP(VARCHAR, VARCHAR)
)""",
    # dim: a column of COLUMNS or 'property:<key>'; value NULL: that dimension has folded values.
    "CREATE TABLE IF NOT EXISTS dim_values (dim VARCHAR NOT NULL, value VARCHAR)",
)
TABLES = ("dims", "dim_values")
SEQUENCES = ("dims_id_seq",)


def insert_new(table: str, key: str, natural: str, columns: str, select: str, lake: bool) -> str:
    """SQL: add to ``table`` the rows of ``select`` (its ``columns``, one row per ``natural``)
    whose ``natural`` it lacks, each with a new ``key``. Locally the key column's sequence numbers
    them and the UNIQUE constraint finds the known ones; a DuckLake table (``lake``) has neither:
    the keys are max(key) + row_number(), which is safe because every lake write holds the turn
    (``lake.py``), and an anti-join skips the known ones."""
    if not lake:
        return f"INSERT INTO {table} ({columns}) {select} ON CONFLICT ({natural}) DO NOTHING"
    return f"""INSERT INTO {table} ({key}, {columns})
        SELECT (SELECT coalesce(max({key}), 0) FROM {table}) + row_number() OVER (ORDER BY s.{natural}), s.*
        FROM ({select}) AS s({columns})
        WHERE NOT EXISTS (SELECT 1 FROM {table} AS t WHERE t.{natural} = s.{natural})"""


def property_dimension(key: str) -> str:
    """The dimension of a property key."""
    return f"property:{key}"


def assign(con: duckdb.DuckDBPyConnection, rows: str, cells: str, limit: int, lake: bool = False) -> int:
    """Give the rows of ``cells`` whose dims_id is NULL one (inside the caller's transaction).

    ``cells`` has a column ``h``, the ``DIMS_HASH_SQL`` of the request row of relation ``rows``
    it came from, and ``dims_id`` from ``dims`` where that hash is already there. Only new
    combinations get here: their values are admitted while there is room, the rest folded, and
    the (folded) combinations added to ``dims`` (``lake``: ``insert_new``, ``hash_sql``). Returns
    how many rows had a value folded.
    """
    (missing,) = con.execute(f"SELECT count(*) FROM {cells} WHERE dims_id IS NULL").fetchone() or (0,)
    if not missing:
        return 0  # the usual commit: every combination is known, so every value is admitted
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE dims_new AS
        SELECT h, {", ".join(f"any_value({c}) AS {c}" for c in COLUMNS)},
               any_value(properties) AS properties, min(epoch_us(start_time)) AS first_us
        FROM (SELECT *, {hash_sql(lake)} AS h FROM {rows})
        WHERE h IN (SELECT h FROM {cells} WHERE dims_id IS NULL) GROUP BY h"""
    )
    # One row per (combination, dimension, value); a literal (other) is neither admitted nor folded.
    pairs = [
        f"SELECT h, first_us, '{c}' AS dim, {f'lower({c})' if c in CASELESS else c} AS value FROM dims_new"
        for c in COLUMNS
    ]
    pairs.append(
        "SELECT h, first_us, 'property:' || e.key, e.value "
        "FROM (SELECT h, first_us, unnest(map_entries(properties)) AS e FROM dims_new)"
    )
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE dims_pairs AS
        SELECT * FROM ({" UNION ALL ".join(pairs)}) WHERE value IS NOT NULL AND value <> '{OTHER}'"""
    )
    # First come, first served: earliest request first, then by value, while there is room;
    # a dimension that has folded a value admits no more.
    con.execute(
        """INSERT INTO dim_values
        SELECT dim, value FROM (
            SELECT c.dim, c.value, row_number() OVER (PARTITION BY c.dim ORDER BY c.first_us, c.value) AS k
            FROM (SELECT dim, value, min(first_us) AS first_us FROM dims_pairs GROUP BY ALL) AS c
            WHERE NOT EXISTS (SELECT 1 FROM dim_values AS a
                              WHERE a.dim = c.dim AND (a.value = c.value OR a.value IS NULL))) AS c
        WHERE k <= $limit - (SELECT count(*) FROM dim_values AS a WHERE a.dim = c.dim)""",
        {"limit": limit},
    )
    con.execute(
        """CREATE OR REPLACE TEMP TABLE dims_folds AS
        SELECT h, list(DISTINCT dim) AS dims FROM dims_pairs AS p
        WHERE NOT EXISTS (SELECT 1 FROM dim_values AS a WHERE a.dim = p.dim AND a.value = p.value)
        GROUP BY h"""
    )
    con.execute(
        """INSERT INTO dim_values
        SELECT DISTINCT dim, NULL FROM (SELECT unnest(dims) AS dim FROM dims_folds)
        WHERE dim NOT IN (SELECT dim FROM dim_values WHERE value IS NULL)"""
    )
    folded_columns = ", ".join(
        f"CASE WHEN list_contains(f.dims, '{c}') THEN '{OTHER}' ELSE n.{c} END AS {c}" for c in COLUMNS
    )
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE dims_folded AS
        SELECT *, {hash_sql(lake)} AS folded_h FROM (
            SELECT n.h, {folded_columns},
                   CASE WHEN f.dims IS NULL THEN n.properties ELSE map_from_entries(list_transform(
                       map_entries(n.properties), e -> {{key: e.key, value: CASE
                           WHEN list_contains(f.dims, 'property:' || e.key) THEN '{OTHER}'
                           ELSE e.value END}}))
                   END AS properties
            FROM dims_new AS n LEFT JOIN dims_folds AS f USING (h))"""
    )
    names = ", ".join((*COLUMNS, "properties"))
    combinations = f"SELECT DISTINCT ON (folded_h) folded_h, {names} FROM dims_folded ORDER BY folded_h"
    con.execute(insert_new("dims", "dims_id", "dims_hash", f"dims_hash, {names}", combinations, lake))
    con.execute(
        f"""UPDATE {cells} SET dims_id = d.dims_id
        FROM dims_folded AS f JOIN dims AS d ON d.dims_hash = f.folded_h
        WHERE {cells}.h = f.h AND {cells}.dims_id IS NULL"""
    )
    (folded,) = con.execute(
        f"SELECT count(*) FROM {cells} WHERE h IN (SELECT h FROM dims_folds)"
    ).fetchone() or (0,)
    for table in ("dims_new", "dims_pairs", "dims_folds", "dims_folded"):
        con.execute(f"DROP TABLE {table}")
    return int(folded)


def property_keys(con: duckdb.DuckDBPyConnection) -> tuple[str, ...]:
    """Every custom property key recorded so far (any time), sorted."""
    rows = con.execute("SELECT DISTINCT unnest(map_keys(properties)) AS k FROM dims ORDER BY k").fetchall()
    return tuple(k for (k,) in rows)
