"""What every query function shares: its arguments parsed once, the user it names, its rows as dicts.

``statement`` turns the window and filters a query function takes into the ``CellSql`` its
statements are built with (``cells.py``), on the clock ``now`` unless the caller passes its own;
``user_key`` finds the user a function names; ``fetch_dicts`` and ``ints_of`` read result rows.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import duckdb

from user_metrics.errors import InvalidInput, NotFound
from user_metrics.query.cells import CellSql
from user_metrics.query.folding import served_by_rollups
from user_metrics.query.window import Filters, Instant, Window

MAX_PAGE = 10_000


def fetch_dicts(
    con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The result of one statement as dicts keyed by column name."""
    cur = con.execute(sql, params or {})
    names = [d[0] for d in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def now() -> datetime:
    """The current instant in UTC: the clock of every query function unless its caller passes one."""
    return datetime.now(UTC)


def statement(
    con: duckdb.DuckDBPyConnection,
    since: Instant,
    until: Instant,
    now: Callable[[], datetime],
    properties: Any,
    model: str | None,
    service: str | None,
    environment: str | None,
    tz: str | None = None,
    whole_days: bool = False,
) -> CellSql:
    """The window (in the zone ``tz``, None: UTC) and filters every query function takes, parsed
    and checked once; request rows for the whole window when a filter names a value whose
    requests rollups may have folded. ``whole_days``: the statements may read the window's whole
    UTC days from the database's cache of them (``CellSql.use_whole_days``)."""
    window = Window.parse(since, until, now(), tz)
    filters = Filters.of(properties, model, service, environment)
    q = CellSql(window, filters, rows_only=not served_by_rollups(con, filters))
    if whole_days:
        q.use_whole_days(con)
    return q


def user_key(con: duckdb.DuckDBPyConnection, user_id: str | None) -> int:
    """The key of ``user_id`` (0: the requests without a user id); NotFound if it was never stored."""
    if user_id is None:
        return 0
    if user_id == "":  # never stored: an empty id counts as none (see conventions)
        raise InvalidInput("user_id: empty; name a user, or None for the requests that named no user")
    row = con.execute("SELECT user_key FROM users WHERE user_id = $id", {"id": user_id}).fetchone()
    if row is None:
        raise NotFound(f"no requests were ever recorded for user {user_id!r}")
    return int(row[0])


def ints_of(row: dict[str, Any]) -> dict[str, Any]:
    """DuckDB sums are HUGEINT (Python int) or DECIMAL; keep ints as ints."""
    return {k: (int(v) if isinstance(v, int) and not isinstance(v, bool) else v) for k, v in row.items()}
