"""An import of revenue records: parsed (``revenue_rows``), then stored in one transaction of the
store's writer (``store/revenue.py``), all or nothing, so that reads never stop it and it is
durable once answered.

Idempotent by id: a record stored before with the same content is counted as unchanged; one
stored before with other content is a bad row, and then nothing of the import is stored.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from user_metrics.errors import BadRows
from user_metrics.ingest.revenue_rows import MAX_ERRORS, RevenueRecord, parse_revenue
from user_metrics.store.revenue import Row, store_records

if TYPE_CHECKING:
    from user_metrics.store.writer import Store

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def import_revenue(
    store: Store,
    data: bytes | str | list[Any] | dict[str, Any],
    fmt: str | None = None,
    mapping: Mapping[str, str] | None = None,
    tz: str | None = None,
    source: str | None = None,
) -> tuple[int, int]:
    """Parse and store ``data``: (records new, records there already). ``source`` is kept with
    each new record (a file name, ``http``)."""
    records = parse_revenue(data, fmt, mapping, tz)
    if not records:
        return 0, 0
    rows = [(r.id, r.user_id, r.amount, r.start_us, r.end_us) for r in records]
    imported_us = time.time_ns() // 1000
    stored = store.run(lambda con: store_records(con, rows, imported_us, source, MAX_ERRORS)).result()
    if stored.conflicts:
        by_id = {r.id: r for r in records}
        problems = [_conflict(by_id[row[0]], row) for row in stored.conflicts]
        raise BadRows(problems, stored.conflicting)
    return stored.new, stored.unchanged


def _conflict(record: RevenueRecord, stored: Row) -> str:
    _, user_id, amount, start_us, end_us = stored
    return (
        f"row {record.row}: record {record.id!r} was imported before with user {user_id!r}, amount "
        f"{amount} USD, {_span(start_us, end_us)}; this row has user {record.user_id!r}, amount "
        f"{record.amount} USD, {_span(record.start_us, record.end_us)}. A stored record does not change: "
        "give a correction an id of its own (a negative amount refunds)"
    )


def _span(start_us: int, end_us: int) -> str:
    def text(us: int) -> str:
        return (_EPOCH + timedelta(microseconds=us)).isoformat().replace("+00:00", "Z")

    return f"at {text(start_us)}" if start_us == end_us else f"period {text(start_us)} .. {text(end_us)}"
