"""Read-only SQL for operators: one SELECT, a row limit, a time limit, no way out of the database.

Three guards, each enough for a different attack:
- DuckDB's own parser classifies the text (``extract_statements``): exactly one statement, of
  type SELECT (``WITH ...``, ``FROM t``, ``DESCRIBE`` and ``SUMMARIZE`` parse as SELECT too).
  ``COPY``, ``ATTACH``, ``INSTALL``/``LOAD``, ``SET``, ``PRAGMA`` with side effects, DDL, DML and
  stacked statements are refused before anything runs.
- It runs in a ``READ ONLY`` transaction, so even a function with a side effect
  (``nextval``) cannot write.
- The database itself has external access disabled and its configuration locked (the store and
  the read-only client set that at open), so ``read_csv('/etc/passwd')`` or ``glob`` fail.

A timer calls ``interrupt()`` when the time limit passes; at most ``limit`` rows are fetched
(one more is asked for, to say whether the result was truncated).
"""

from __future__ import annotations

import contextlib
import threading

import duckdb

from user_metrics.errors import InvalidInput
from user_metrics.results import SqlResult, to_json

MAX_ROWS = 100_000
DEFAULT_ROWS = 1_000
DEFAULT_TIMEOUT_S = 10.0


class QueryRefused(InvalidInput):
    """The SQL is not one read-only SELECT."""


class QueryTimeout(InvalidInput):
    """The SQL ran longer than its time limit and was stopped."""


def run_sql(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    *,
    limit: int = DEFAULT_ROWS,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> SqlResult:
    """Run one read-only SELECT; values come back in their JSON form (decimals as strings)."""
    if not isinstance(sql, str) or not sql.strip():
        raise InvalidInput("sql: give one SELECT statement")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_ROWS:
        raise InvalidInput(f"limit: must be a whole number from 1 to {MAX_ROWS}, got {limit!r}")
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise InvalidInput(f"sql: {_first_line(exc)}") from exc
    if len(statements) != 1:
        raise QueryRefused(f"sql: exactly one statement is allowed, got {len(statements)}")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise QueryRefused(f"sql: only read-only SELECT queries are allowed, not {kind.name}")
    timer = threading.Timer(timeout, con.interrupt)
    con.execute("BEGIN TRANSACTION READ ONLY")
    try:
        timer.start()
        cursor = con.execute(sql)
        rows = cursor.fetchmany(limit + 1)
        columns = tuple(d[0] for d in cursor.description or ())
    except duckdb.InterruptException as exc:
        raise QueryTimeout(f"sql: stopped after the time limit of {timeout:g} s") from exc
    except duckdb.Error as exc:
        raise InvalidInput(f"sql: {_first_line(exc)}") from exc
    finally:
        timer.cancel()
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")
    truncated = len(rows) > limit
    body = tuple(tuple(to_json(v) for v in row) for row in rows[:limit])
    return SqlResult(columns, body, truncated)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
