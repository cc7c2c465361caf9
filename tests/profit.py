"""Revenue in a test database, and the check that skips the tests waiting for the margins part.

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
import pytest

from user_metrics.query.revenue import revenue_by_user
from user_metrics.query.window import Window

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


def skip_while_revenue_is_a_stub(con: duckdb.DuckDBPyConnection) -> None:
    """Skip the test while query/revenue.py is the interface stub: it answers None for a database
    whose ``revenue`` table has records (the margins part of issue 16 implements it)."""
    (count,) = con.execute("SELECT count(*) FROM revenue").fetchall()[0]
    assert count, "the database has no revenue record: this check needs one"
    window = Window(datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
    if revenue_by_user(con, window) is None:
        pytest.skip("query/revenue.py revenue_by_user is still the stub (answers None with revenue stored)")


def ratio(margin: Decimal, revenue: Decimal) -> float | None:
    """margin / revenue as the readers answer it; None at zero revenue."""
    return None if revenue == 0 else float(margin / revenue)
