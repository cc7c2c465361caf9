"""Read-only SQL for operators: one SELECT over this database, bounded in text, shape, time and size.

The guards, each enough for a different attack:
- DuckDB's own parser classifies the text (``extract_statements``): exactly one statement, of
  type SELECT (``WITH ...``, ``FROM t``, ``DESCRIBE`` and ``SUMMARIZE`` parse as SELECT too).
  ``COPY``, ``ATTACH``, ``INSTALL``/``LOAD``, ``SET``, ``PRAGMA`` with side effects, DDL, DML and
  stacked statements are refused before anything runs.
- Its parse tree is checked (``sql_bounds``): no file reached (the database's own included), no
  shape that DuckDB would plan for minutes, no function asked to build a huge value.
- It runs in a ``READ ONLY`` transaction, so even a function with a side effect
  (``nextval``) cannot write.
- The database itself has external access disabled and its configuration locked (the store and
  the read-only client set that at open), so ``read_csv('/etc/passwd')`` or ``glob`` fail.
- It runs under a deadline on a thread of its own (``deadline.QueryRunner``), which also caps how
  many run at once. Rows are fetched a few at a time, each turned into its JSON form, until
  ``limit`` rows or ``max_bytes`` of JSON: then ``truncated`` says more rows exist.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import duckdb

from user_metrics.errors import InvalidInput, Overloaded, TooLarge
from user_metrics.query import sql_bounds
from user_metrics.query.deadline import QueryRunner
from user_metrics.query.results import SqlResult, to_json
from user_metrics.query.sql_bounds import QueryRefused

__all__ = ["QueryRefused", "QueryTimeout", "run_sql"]

MAX_ROWS = 100_000
DEFAULT_ROWS = 1_000
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_BYTES = 16 * 1024 * 1024  # JSON of the rows of one answer (setting sql_max_result_mib)
MAX_TEXT_BYTES = 64 * 1024  # the SQL text, UTF-8
MAX_BATCH = 1024  # rows fetched from DuckDB at once


class QueryTimeout(InvalidInput):
    """The SQL ran longer than its time limit and was stopped."""

    limit = "sql_timeout_seconds"


class SqlTooLong(TooLarge):
    """The SQL text is longer than ``MAX_TEXT_BYTES``."""

    limit = "sql_text_bytes"


class ResultTooLarge(TooLarge):
    """Even the first row of the result is more JSON than one answer may hold."""

    limit = "sql_max_result_mib"


class SqlBusy(Overloaded):
    """As many SQL queries as allowed are running already."""

    limit = "sql_max_concurrent"


def run_sql(
    runner: QueryRunner,
    sql: str,
    *,
    limit: int = DEFAULT_ROWS,
    timeout: float = DEFAULT_TIMEOUT_S,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> SqlResult:
    """Run one read-only SELECT on a cursor of ``runner``; values come back in their JSON form."""
    if not isinstance(sql, str) or not sql.strip():
        raise InvalidInput("sql: give one SELECT statement")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_ROWS:
        raise InvalidInput(f"limit: must be a whole number from 1 to {MAX_ROWS}, got {limit!r}")
    size = len(sql.encode("utf-8", "surrogatepass"))
    if size > MAX_TEXT_BYTES:
        raise SqlTooLong(f"sql: {size} bytes long, at most {MAX_TEXT_BYTES} bytes are taken")
    return runner.run(
        lambda con: _run(con, sql, limit, max_bytes),
        timeout,
        timed_out=lambda: QueryTimeout(f"sql: stopped at the time limit of {timeout:g} s"),
        busy=lambda: SqlBusy(
            f"sql: {runner.max_running} queries are running already, the most at once; retry later"
        ),
    )


def _run(con: duckdb.DuckDBPyConnection, sql: str, limit: int, max_bytes: int) -> SqlResult:
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise InvalidInput(f"sql: {_first_line(exc)}") from exc
    if len(statements) != 1:
        raise QueryRefused(f"sql: exactly one statement is allowed, got {len(statements)}")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise QueryRefused(f"sql: only read-only SELECT queries are allowed, not {kind.name}")
    sql_bounds.check(con, sql)
    con.execute("BEGIN TRANSACTION READ ONLY")
    try:
        cursor = con.execute(sql)
        columns = tuple(d[0] for d in cursor.description or ())
        rows, truncated = _fetch(cursor, limit, max_bytes)
    except duckdb.InterruptException:
        raise  # the runner says why: the deadline, or the server stopping
    except duckdb.Error as exc:
        raise InvalidInput(f"sql: {_first_line(exc)}") from exc
    finally:
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")
    return SqlResult(columns, tuple(rows), truncated)


def _fetch(
    cursor: duckdb.DuckDBPyConnection, limit: int, max_bytes: int
) -> tuple[list[tuple[Any, ...]], bool]:
    """Up to ``limit`` rows in JSON form, at most ``max_bytes`` of it; and whether more rows exist.

    DuckDB streams the result: only the rows asked for are turned into Python objects, a few at
    first, then as many as the bytes left would hold at the average row size so far.
    """
    rows: list[tuple[Any, ...]] = []
    size = 0
    batch = 1
    while True:
        fetched = cursor.fetchmany(min(batch, limit + 1 - len(rows)))
        if not fetched:
            return rows, False
        for row in fetched:
            if len(rows) == limit:
                return rows, True
            values = tuple(to_json(v) for v in row)
            size += len(json.dumps(values, ensure_ascii=False).encode("utf-8", "surrogatepass")) + 2
            if size > max_bytes:
                if not rows:
                    raise ResultTooLarge(
                        f"sql: the first row alone is over the {max_bytes / 1048576:g} MiB result bound "
                        "(sql_max_result_mib); select fewer or shorter columns"
                    )
                return rows, True
            rows.append(values)
        batch = max(1, min(MAX_BATCH, (max_bytes - size) * len(rows) // size))


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
