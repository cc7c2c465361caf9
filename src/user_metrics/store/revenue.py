"""Revenue in the database: the plan prices of the settings, and imported revenue records.

Both run as work of the writer thread (``Store.run``), each in one transaction: the plan prices
replace what the table held (``write_plan_prices``, at start), and an import stores all of its
records or none (``store_records``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import duckdb
import pyarrow as pa

from user_metrics.store.writer_connection import registered

# One record: id, user_id, amount (USD), start_us, end_us (epoch micros; end = start: an instant).
Row = tuple[str, str, Decimal, int, int]
_AMOUNT = pa.decimal128(18, 9)
_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("user_id", pa.string()),
        ("amount_usd", _AMOUNT),
        ("start_us", pa.int64()),
        ("end_us", pa.int64()),
    ]
)


@dataclass(frozen=True)
class Stored:
    """What an import did: ``new`` records stored, ``unchanged`` ones there already; or nothing,
    when ``conflicts`` lists records stored before with other content (as they are stored; the
    first of ``conflicting``)."""

    new: int
    unchanged: int
    conflicts: tuple[Row, ...] = ()
    conflicting: int = 0


def write_plan_prices(
    con: duckdb.DuckDBPyConnection, prop: str, prices: Sequence[tuple[str, Decimal, str]]
) -> None:
    """Replace the plan prices with ``prices`` (value, USD amount, 'month' or 'year') of ``prop``
    (none: the table is emptied). Run it inside a transaction."""
    con.execute("DELETE FROM plan_prices")
    if prices:
        con.executemany(
            "INSERT INTO plan_prices VALUES (?, ?, ?::DECIMAL(18, 9), ?)",
            [[prop, value, str(amount), per] for value, amount, per in prices],
        )


def store_records(
    con: duckdb.DuckDBPyConnection,
    rows: Sequence[Row],
    imported_us: int,
    source: str | None,
    max_conflicts: int,
) -> Stored:
    """Store the records whose id is new; those stored before with the same content are counted
    as unchanged. If any id was stored before with other content (user, amount, start or end),
    nothing is stored and the first ``max_conflicts`` of them are returned (by id). Run it inside
    a transaction: the import is then all or nothing."""
    table = pa.Table.from_pylist([dict(zip(_SCHEMA.names, row, strict=True)) for row in rows], schema=_SCHEMA)
    with registered(con, {"incoming": table}):
        ((known, conflicts),) = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE r.user_id <> i.user_id OR r.amount_usd <> i.amount_usd "
            "OR r.start_us <> i.start_us OR r.end_us <> i.end_us) FROM incoming i JOIN revenue r USING (id)"
        ).fetchall()
        if conflicts:
            found = con.execute(
                "SELECT r.id, r.user_id, r.amount_usd, r.start_us, r.end_us FROM incoming i "
                "JOIN revenue r USING (id) WHERE r.user_id <> i.user_id OR r.amount_usd <> i.amount_usd "
                "OR r.start_us <> i.start_us OR r.end_us <> i.end_us ORDER BY r.id LIMIT ?",
                [max_conflicts],
            ).fetchall()
            stored = tuple((str(a), str(b), Decimal(c), int(d), int(e)) for a, b, c, d, e in found)
            return Stored(0, 0, stored, int(conflicts))
        con.execute(
            "INSERT INTO revenue SELECT id, user_id, amount_usd, start_us, end_us, ?, ? FROM incoming "
            "WHERE id NOT IN (SELECT id FROM revenue)",
            [imported_us, source],
        )
    return Stored(len(rows) - int(known), int(known))
