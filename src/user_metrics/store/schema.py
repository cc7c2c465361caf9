"""The database's tables: what the store creates, and how an older file is brought up to date.

``requests`` is the public contract (README lists its columns). The rest is the store's own:
``span_keys`` (each stored span once, ``dedupe.py``), ``meta`` (the schema version), ``pending``,
``span_facts`` and ``span_links`` (attribution across requests), the rollups (``rollups.py``),
and ``lake_outbox`` (lake mode's rows on their way to the lake, ``shipper.py``).
"""

from __future__ import annotations

import logging

import duckdb

from user_metrics.errors import Unavailable
from user_metrics.store import dedupe, links, rollups

log = logging.getLogger(__name__)

# 2 rollups, 3 hourly per user, 4 append-only, 5 all-time totals, 6 pending,
# 7 requests.cache_added_to_input and requests.price_provider, 8 dims with request and response
# model and bounded values (dim_values), 9 requests.scope_name and requests.scope_version,
# 10 pending.counterpart and pending.conversation, span_facts.llm, .model and .absorbed_by,
# 11 revenue and plan_prices (billing), requests.<bucket>_cost_usd (the cost per bucket),
# 12 span_keys.start_us, keys kept for the dedupe horizon only (dedupe.py),
# 13 span_links, the facts of spans without identity as integers (links.py),
# 14 lake_outbox (lake mode: rows committed here, not yet shipped to the lake; shipper.py)
SCHEMA_VERSION = "14"

REQUESTS_DDL = """
CREATE TABLE IF NOT EXISTS requests (
    trace_id           VARCHAR NOT NULL,
    span_id            VARCHAR NOT NULL,
    parent_span_id     VARCHAR,
    start_time         TIMESTAMPTZ NOT NULL,
    duration_ms        DOUBLE,
    user_id            VARCHAR,
    session_id         VARCHAR,
    service_name       VARCHAR,
    environment        VARCHAR,
    operation          VARCHAR,
    provider           VARCHAR,
    request_model      VARCHAR,
    response_model     VARCHAR,
    input_tokens       BIGINT,
    output_tokens      BIGINT,
    cache_read_tokens  BIGINT,
    cache_write_tokens BIGINT,
    reasoning_tokens   BIGINT,
    cost_usd           DECIMAL(18, 9),
    cost_source        VARCHAR NOT NULL,
    status             VARCHAR NOT NULL,
    error_type         VARCHAR,
    streaming          BOOLEAN,
    properties         MAP(VARCHAR, VARCHAR),
    cache_added_to_input BOOLEAN,
    price_provider     VARCHAR,
    scope_name         VARCHAR,
    scope_version      VARCHAR,
    input_cost_usd       DECIMAL(18, 9),
    cache_read_cost_usd  DECIMAL(18, 9),
    cache_write_cost_usd DECIMAL(18, 9),
    output_cost_usd      DECIMAL(18, 9),
    reasoning_cost_usd   DECIMAL(18, 9),
    request_cost_usd     DECIMAL(18, 9)
)
"""
# A computed or custom cost per bucket (schema 11): uncached input, cache read, cache write,
# output without reasoning, reasoning, and the price's per-request fee; they sum to cost_usd
# exactly. NULL on reported and unpriced rows, and on rows stored before schema 11.
SPLIT_COLUMNS = (
    "input_cost_usd",
    "cache_read_cost_usd",
    "cache_write_cost_usd",
    "output_cost_usd",
    "reasoning_cost_usd",
    "request_cost_usd",
)
# Columns added to `requests` since schema 1 (an upgrade appends them, as the DDL has them).
ADDED_COLUMNS = (
    ("cache_added_to_input", "BOOLEAN"),
    ("price_provider", "VARCHAR"),
    ("scope_name", "VARCHAR"),
    ("scope_version", "VARCHAR"),
    *((name, "DECIMAL(18, 9)") for name in SPLIT_COLUMNS),
)
# `pending` holds rows of `requests` plus these, last: the first ancestor missing from the row's
# request (NULL: it waits for no ancestor), its deadline, whether it is a provider SDK's own span
# waiting for an instrumentation's span of the same call (a counterpart), and whether its
# session_id is a conversation id that an ancestor's session id beats.
PENDING_COLUMNS = {
    "waiting_for": "VARCHAR",
    "deadline_us": "BIGINT",
    "counterpart": "BOOLEAN",
    "conversation": "BOOLEAN",
}
# What `span_facts` gained in schema 10: on the facts of LLM spans, 'call' (an instrumentation's,
# counted) or 'sdk' (a provider SDK's own), the model (lower-case), and, on an SDK span that is
# not a call of its own, the span id of the call that records it.
FACT_COLUMNS_10 = (("llm", "VARCHAR"), ("model", "VARCHAR"), ("absorbed_by", "VARCHAR"))
OTHER_DDL = (
    dedupe.DDL,
    "CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)",
    # LLM spans without a user id whose ancestors may still arrive: the rows, what they wait for
    # (the first ancestor missing from their request) and until when.
    "CREATE TABLE IF NOT EXISTS pending AS SELECT *, "
    + ", ".join(f"NULL::{kind} AS {name}" for name, kind in PENDING_COLUMNS.items())
    + " FROM requests WHERE false",
    # Lake mode: every row stored in `requests`, stored here too in the same transaction, until
    # the shipper has committed it to the lake (shipper.py); empty in single-file mode.
    "CREATE TABLE IF NOT EXISTS lake_outbox AS SELECT * FROM requests WHERE false",
    # Every span's own identity and parent, for a while, so spans of later requests can inherit.
    """CREATE TABLE IF NOT EXISTS span_facts (
    trace_id VARCHAR NOT NULL, span_id VARCHAR NOT NULL, parent_span_id VARCHAR,
    user_id VARCHAR, session_id VARCHAR, properties MAP(VARCHAR, VARCHAR), seen_us BIGINT NOT NULL
)""",
    *(f"ALTER TABLE span_facts ADD COLUMN IF NOT EXISTS {name} {kind}" for name, kind in FACT_COLUMNS_10),
    # The facts of spans with nothing to inherit but their parent (links.py).
    links.DDL,
    # Imported revenue records (``revenue import``, ``POST /api/v1/revenue``): one row per record
    # id, so a re-import changes nothing. A service period is [start_us, end_us); an instant
    # (a one-off payment) has end_us = start_us. Epoch microseconds, UTC.
    """CREATE TABLE IF NOT EXISTS revenue (
    id VARCHAR PRIMARY KEY, user_id VARCHAR NOT NULL, amount_usd DECIMAL(18, 9) NOT NULL,
    start_us BIGINT NOT NULL, end_us BIGINT NOT NULL, imported_us BIGINT NOT NULL, source VARCHAR
)""",
    # The plan prices of the settings ([billing]), written by the store at start: a recurring
    # price per value of one property, per 'month' or per 'year'.
    """CREATE TABLE IF NOT EXISTS plan_prices (
    property VARCHAR NOT NULL, value VARCHAR NOT NULL, amount_usd DECIMAL(18, 9) NOT NULL,
    per VARCHAR NOT NULL
)""",
)


def create_or_upgrade(con: duckdb.DuckDBPyConnection, path: str, max_dimension_values: int) -> None:
    """Create the tables of a new database, or upgrade an older one in place (one transaction)."""
    con.execute("BEGIN")
    con.execute(REQUESTS_DDL)
    _add_request_columns(con)  # before `pending` is made from `requests`, if it is new
    for ddl in OTHER_DDL:
        con.execute(ddl)
    row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    version = row[0] if row else None
    if version not in (None, *map(str, range(1, int(SCHEMA_VERSION) + 1))):
        con.execute("ROLLBACK")
        raise Unavailable(f"{path} has schema version {version}, this build needs {SCHEMA_VERSION}")
    _match_pending_columns(con)
    if "start_us" not in dict(_columns(con, "span_keys")):
        log.info("upgrading %s to schema %s: span keys for the dedupe horizon only", path, SCHEMA_VERSION)
        dedupe.upgrade(con)
    if version in ("1", "2", "3", "4", "5", "6", "7"):
        log.info("upgrading %s to schema %s: building rollups from requests", path, SCHEMA_VERSION)
        rollups.rebuild(con, max_dimension_values)
    for ddl in rollups.DDL:
        con.execute(ddl)
    con.execute(
        "INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT DO UPDATE SET value = excluded.value",
        [SCHEMA_VERSION],
    )
    con.execute("COMMIT")


def lock_down(con: duckdb.DuckDBPyConnection) -> None:
    """From here on SQL can reach no file, network or extension, and nothing can undo that. And no
    checkpoint at shutdown: ``close`` checkpoints itself, and an instance left behind by
    ``WriterConnection.reopen`` (its memory maybe inconsistent) must write nothing."""
    con.execute("PRAGMA disable_checkpoint_on_shutdown")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    """(name, type) of each column of ``table``, in order."""
    rows = con.execute(
        "SELECT column_name, data_type FROM duckdb_columns() "
        "WHERE table_name = ? AND schema_name = 'main' ORDER BY column_index",
        [table],
    ).fetchall()
    return [(name, kind) for name, kind in rows]


def _add_request_columns(con: duckdb.DuckDBPyConnection) -> None:
    """Upgrade: append the columns `requests` lacks (its old rows get NULL there)."""
    present = {name for name, _ in _columns(con, "requests")}
    for name, kind in ADDED_COLUMNS:
        if name not in present:
            log.info("upgrading requests: adding column %s", name)
            con.execute(f"ALTER TABLE requests ADD COLUMN {name} {kind}")


def _match_pending_columns(con: duckdb.DuckDBPyConnection) -> None:
    """Upgrade: rebuild `pending` as the columns of `requests` followed by its own, keeping its rows.

    Rows move between the two tables with ``SELECT *``, so the column order must agree (an
    ALTER TABLE would append the new columns after waiting_for and deadline_us).
    """
    pending = dict(_columns(con, "pending"))
    wanted = [
        *_columns(con, "requests"),
        *((name, pending.get(name, kind)) for name, kind in PENDING_COLUMNS.items()),
    ]
    if list(pending) == [name for name, _ in wanted]:
        return
    log.info("upgrading pending to the columns of requests")
    select = ", ".join(name if name in pending else f"NULL::{kind} AS {name}" for name, kind in wanted)
    con.execute(f"CREATE TABLE pending_upgraded AS SELECT {select} FROM pending")
    con.execute("DROP TABLE pending")
    con.execute("ALTER TABLE pending_upgraded RENAME TO pending")
