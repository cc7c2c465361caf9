"""The lake's tables: the local store's reader-facing tables, made from the same DDL, and the two
tables only the lake has.

A reader queries the lake with the very SQL it runs on a local file, so the lake has every table
the query layer reads with exactly the local columns: ``requests``, ``meta``, ``revenue``,
``plan_prices``, and the rollups with ``users``, ``dims`` and ``dim_values`` (``rollups.DDL``;
``dims.dims_hash``, which only the writer reads, is text: see ``_REPLACED``).
The local DDL is reused, not copied; ``lake_ddl`` drops what DuckLake lacks: sequences, PRIMARY
KEY and UNIQUE constraints, and the ``DEFAULT nextval(...)`` of the key columns. Keys are
allocated explicitly instead (``rollups.py``, ``dims.py``: max(key) + row_number(), safe because
every lake write holds the turn). What each node keeps for itself (``span_keys``, ``pending``,
``span_facts``, ``span_links``, ``lake_outbox``) stays local.

Lake-only: ``lake_turn(n)``, one row that every lake write transaction increments first (so all
of them, from every node, are serialized: two that both update it conflict at COMMIT), and
``lake_leases(name, holder, until_us)``, who holds a background duty (``compaction``) until when.
"""

from __future__ import annotations

import re

import duckdb

from user_metrics.errors import Unavailable
from user_metrics.store import rollups, schema

TURN_DDL = (
    "CREATE TABLE IF NOT EXISTS lake_turn (n BIGINT NOT NULL)",
    "INSERT INTO lake_turn SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM lake_turn)",
    """CREATE TABLE IF NOT EXISTS lake_leases (
    name VARCHAR NOT NULL, holder VARCHAR NOT NULL, until_us BIGINT NOT NULL
)""",
)
# The local tables that readers query, by the DDL that creates them locally.
_REVENUE_TABLES = ("revenue", "plan_prices")
READER_TABLES = ("requests", "meta", *_REVENUE_TABLES, *rollups.TABLES)

# What DuckLake lacks, and what it becomes (a primary key's column stays NOT NULL).
_REPLACED = (
    (re.compile(r"\s+DEFAULT nextval\('[a-z_]+'\)", re.IGNORECASE), ""),
    (re.compile(r"\s+PRIMARY KEY\b", re.IGNORECASE), " NOT NULL"),
    (re.compile(r"\s+UNIQUE\b", re.IGNORECASE), ""),
    # DuckDB writes a (U)HUGEINT into Parquet as a DOUBLE, losing bits: the lake's dims hash is
    # the same 128 bits as hexadecimal text (``dims.hash_sql``). The one column that differs from
    # the local one; only the writer reads it.
    (re.compile(r"dims_hash\s+UHUGEINT"), "dims_hash VARCHAR"),
)


def lake_ddl(ddl: str) -> str | None:
    """A local DDL statement as DuckLake takes it (None: a sequence, which the lake does without)."""
    if ddl.lstrip().upper().startswith("CREATE SEQUENCE"):
        return None
    for pattern, replacement in _REPLACED:
        ddl = pattern.sub(replacement, ddl)
    return ddl


def _local_ddl() -> list[str]:
    """The local statements that create the reader-facing tables, in order."""
    statements = [schema.REQUESTS_DDL]
    for ddl in schema.OTHER_DDL:
        table = re.search(r"CREATE TABLE IF NOT EXISTS (\w+)", ddl)
        if ddl.startswith("CREATE TABLE") and table and table.group(1) in ("meta", *_REVENUE_TABLES):
            statements.append(ddl)
    statements.extend(rollups.DDL)
    return statements


def current(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the lake (``USE``d by ``con``) already has this build's schema."""
    try:
        rows = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
    except duckdb.CatalogException:
        return False
    return bool(rows) and rows[0][0] == schema.SCHEMA_VERSION


def create(con: duckdb.DuckDBPyConnection) -> None:
    """Create the lake's tables (inside the caller's transaction); refuses a newer lake."""
    for ddl in TURN_DDL:
        con.execute(ddl)
    for local in _local_ddl():
        lake = lake_ddl(local)
        if lake is not None:
            con.execute(lake)
    rows = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
    if rows and rows[0][0] != schema.SCHEMA_VERSION:
        version = rows[0][0]
        if not version.isdigit() or int(version) > int(schema.SCHEMA_VERSION):
            raise Unavailable(
                f"the lake has schema version {version}, this build needs {schema.SCHEMA_VERSION}"
            )
    con.execute("DELETE FROM meta WHERE key = 'schema_version'")
    con.execute("INSERT INTO meta VALUES ('schema_version', ?)", [schema.SCHEMA_VERSION])
