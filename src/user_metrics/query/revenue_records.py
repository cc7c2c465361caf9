"""The imported revenue records as stored: what ``GET /api/v1/revenue`` and ``revenue list`` show.

Records are listed by user, then start, then id, a page at a time; ``since`` and ``until`` keep
those that touch [since, until): a period that overlaps it, an instant inside it. Also the
answer of an import (``RevenueImport``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from user_metrics.errors import InvalidInput
from user_metrics.query.window import Instant, from_micros, parse_instant

if TYPE_CHECKING:
    import duckdb

DEFAULT_RECORDS = 100
MAX_RECORDS = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


@dataclass(frozen=True)
class RevenueImport:
    """What an import did: ``imported`` records are new, ``unchanged`` ones were stored before."""

    imported: int
    unchanged: int


@dataclass(frozen=True)
class RevenueEntry:
    """One stored record; an instant has ``end`` equal to ``start``, a period ends before ``end``."""

    id: str
    user_id: str
    amount_usd: Decimal
    start: datetime
    end: datetime
    imported: datetime
    source: str | None


@dataclass(frozen=True)
class RevenueRecords:
    """A page of stored records (``total``: how many match), oldest start first per user."""

    records: tuple[RevenueEntry, ...]
    total: int
    limit: int
    offset: int


def revenue_records(
    con: duckdb.DuckDBPyConnection,
    user: str | None = None,
    since: Instant = None,
    until: Instant = None,
    limit: int = DEFAULT_RECORDS,
    offset: int = 0,
) -> RevenueRecords:
    """The stored records of ``user`` (None: everyone's) that touch [since, until) (None: open)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_RECORDS:
        raise InvalidInput(f"limit: must be a whole number from 1 to {MAX_RECORDS}, got {limit!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidInput(f"offset: must be a whole number, 0 or more, got {offset!r}")
    now = datetime.now(UTC)
    start, end = parse_instant(since, now, "since"), parse_instant(until, now, "until")
    if start is not None and end is not None and end <= start:
        raise InvalidInput("until: must be after since")
    where = ["true"]
    params: dict[str, Any] = {}
    if user is not None:
        where.append("user_id = $user")
        params["user"] = user
    if start is not None:  # a period ending at since does not touch it; an instant at since does
        where.append("(end_us > $since OR (end_us = start_us AND start_us >= $since))")
        params["since"] = (start - _EPOCH) // _ONE_US
    if end is not None:
        where.append("start_us < $until")
        params["until"] = (end - _EPOCH) // _ONE_US
    condition = " AND ".join(where)
    ((total,),) = con.execute(f"SELECT count(*) FROM revenue WHERE {condition}", params).fetchall()
    rows = con.execute(
        "SELECT id, user_id, amount_usd, start_us, end_us, imported_us, source FROM revenue "
        f"WHERE {condition} ORDER BY user_id, start_us, id LIMIT {limit} OFFSET {offset}",
        params,
    ).fetchall()
    records = tuple(
        RevenueEntry(i, u, Decimal(a), from_micros(s), from_micros(e), from_micros(m), src)
        for i, u, a, s, e, m, src in rows
    )
    return RevenueRecords(records, int(total), limit, offset)
