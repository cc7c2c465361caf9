"""Revenue in a test database, for the readers' tests.

The readers' tests (gRPC, dashboard) insert imported revenue records straight into the ``revenue``
table of a running service's database, as ``revenue import`` would store them, and assert what
every reader answers for them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import duckdb

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Record:
    """One imported revenue record: an instant (``end`` None) or a service period [start, end)."""

    id: str
    user_id: str
    amount_usd: str
    start: datetime
    end: datetime | None = None


def micros(at: datetime) -> int:
    delta = at - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def add_revenue(con: duckdb.DuckDBPyConnection, records: Iterable[Record]) -> None:
    """Store the records as the importer would (the amount an exact decimal)."""
    for r in records:
        con.execute(
            "INSERT INTO revenue (id, user_id, amount_usd, start_us, end_us, imported_us, source) "
            "VALUES (?, ?, ?::DECIMAL(18, 9), ?, ?, ?, 'test')",
            [
                r.id,
                r.user_id,
                r.amount_usd,
                micros(r.start),
                micros(r.end or r.start),
                micros(datetime.now(UTC)),
            ],
        )


def ratio(margin: Decimal, revenue: Decimal) -> float | None:
    """margin / revenue as the readers answer it; None at zero revenue."""
    return None if revenue == 0 else float(margin / revenue)
