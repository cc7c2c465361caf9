"""Request rows, plan prices and revenue records for the revenue and margin tests, written through
the real store (so rollups exist), and the truth about them: revenue by brute force in Python
Fractions over the request rows, never by the service's SQL."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa

from user_metrics.stats import Stats
from user_metrics.store.batches import REQUESTS_ARROW_SCHEMA, nanos_to_decimal_array
from user_metrics.store.writer import Store

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def us(value: datetime) -> int:
    return (value - EPOCH) // timedelta(microseconds=1)


def at(text: str) -> datetime:
    """An ISO instant, UTC unless it says otherwise."""
    parsed = datetime.fromisoformat(text)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@dataclass(frozen=True)
class Req:
    user: str | None
    start: datetime
    plan: str | None = None
    cost_nanos: int | None = 1_000


@dataclass(frozen=True)
class Price:
    value: str
    amount: Decimal
    per: str = "month"
    key: str = "Plan"  # the settings may spell the property in any case


@dataclass(frozen=True)
class Record:
    id: str
    user: str
    amount: Decimal
    start: datetime
    end: datetime | None = None  # None: an instant


def write_requests(db: Path, reqs: Sequence[Req], max_dimension_values: int = 1000) -> None:
    """Store the requests through the real write path (rollups and dims included), then close."""
    store = Store(db, Stats(), max_dimension_values=max_dimension_values)
    try:
        if reqs:
            store.write(_table(reqs)).result()
    finally:
        store.close()


def _table(reqs: Sequence[Req]) -> pa.Table:
    n = len(reqs)
    columns: dict[str, pa.Array] = {}
    for field in REQUESTS_ARROW_SCHEMA:
        columns[field.name] = pa.nulls(n, field.type)
    columns["trace_id"] = pa.array([f"{i:032x}" for i in range(n)], pa.string())
    columns["span_id"] = pa.array([f"{i:016x}" for i in range(n)], pa.string())
    columns["start_time"] = pa.array([us(r.start) for r in reqs], pa.timestamp("us", tz="UTC"))
    columns["user_id"] = pa.array([r.user for r in reqs], pa.string())
    columns["provider"] = pa.array(["openai"] * n, pa.string())
    columns["request_model"] = pa.array(["gpt-4o"] * n, pa.string())
    columns["input_tokens"] = pa.array([10] * n, pa.int64())
    columns["output_tokens"] = pa.array([5] * n, pa.int64())
    columns["cost_usd"] = nanos_to_decimal_array([r.cost_nanos for r in reqs])
    columns["cost_source"] = pa.array(["reported" if r.cost_nanos is not None else "unpriced" for r in reqs])
    columns["status"] = pa.array(["ok"] * n, pa.string())
    columns["properties"] = pa.array(
        [[("plan", r.plan)] if r.plan is not None else [] for r in reqs],
        REQUESTS_ARROW_SCHEMA.field("properties").type,
    )
    return pa.Table.from_pydict(
        {k: columns[k] for k in REQUESTS_ARROW_SCHEMA.names}, schema=REQUESTS_ARROW_SCHEMA
    )


def set_revenue(con: duckdb.DuckDBPyConnection, prices: Iterable[Price], records: Iterable[Record]) -> None:
    """Replace the plan prices and revenue records (what the store and the import would write)."""
    con.execute("DELETE FROM plan_prices")
    con.execute("DELETE FROM revenue")
    for p in prices:
        con.execute("INSERT INTO plan_prices VALUES (?, ?, ?, ?)", [p.key, p.value, p.amount, p.per])
    for r in records:
        end = r.end if r.end is not None else r.start
        con.execute(
            "INSERT INTO revenue VALUES (?, ?, ?, ?, ?, 0, 'test')",
            [r.id, r.user, r.amount, us(r.start), us(end)],
        )


# ---- the oracle ----------------------------------------------------------------------------------


def _local_date(t: datetime, tz: ZoneInfo) -> date:
    return t.astimezone(tz).date()


def _start(d: date, tz: ZoneInfo) -> datetime:
    """The first instant of local date d (zones whose midnights exist: UTC, Kolkata, New York)."""
    return datetime(d.year, d.month, d.day, tzinfo=tz).astimezone(UTC)


def _month_len(d: date, tz: ZoneInfo) -> int:
    first = date(d.year, d.month, 1)
    after = date(d.year + d.month // 12, d.month % 12 + 1, 1)
    return us(_start(after, tz)) - us(_start(first, tz))


def _year_len(d: date, tz: ZoneInfo) -> int:
    return us(_start(date(d.year + 1, 1, 1), tz)) - us(_start(date(d.year, 1, 1), tz))


def nanos(amount: Decimal) -> int:
    return int(amount * 10**9)


def expected_revenue(
    reqs: Sequence[Req],
    prices: Sequence[Price],
    records: Sequence[Record],
    since: datetime,
    until: datetime,
    tz: str = "UTC",
) -> dict[str, Decimal]:
    """Revenue per user id in [since, until), by the README's rules, in exact fractions: every user
    with a revenue term (a plan day touching the window, a record counting in it), 0 included."""
    zone = ZoneInfo(tz)
    price_of = {p.value: p for p in prices}
    seen: dict[tuple[str, date], set[str]] = defaultdict(set)
    for r in reqs:
        if r.user is not None and r.plan in price_of:
            seen[(r.user, _local_date(r.start, zone))].add(r.plan)
    periods = [(r.user, us(r.start), us(r.end)) for r in records if r.end is not None and r.end > r.start]
    plan_us: dict[tuple[str, str, tuple[int, int], int], int] = defaultdict(int)
    present: set[str] = set()
    lo, hi = us(since), us(until)
    for (user, d), values in seen.items():
        ds, de = us(_start(d, zone)), us(_start(d + timedelta(days=1), zone))

        def rate(v: str, d: date = d) -> Fraction:
            p = price_of[v]
            return Fraction(nanos(p.amount), _month_len(d, zone) if p.per == "month" else _year_len(d, zone))

        best = min(values, key=lambda v: (-rate(v), v))
        overlap = max(0, min(de, hi) - max(ds, lo))
        if overlap:
            present.add(user)  # a plan day in the window: listed, even if a record wins the day
        if any(u == user and s < de and e > ds for u, s, e in periods):
            continue
        if overlap:
            p = price_of[best]
            period = (d.year, d.month if p.per == "month" else 0)
            length = _month_len(d, zone) if p.per == "month" else _year_len(d, zone)
            plan_us[(user, best, period, length)] += overlap
    out: dict[str, int] = dict.fromkeys(present, 0)
    out = defaultdict(int, out)
    for (user, value, _, length), total in plan_us.items():
        out[user] += round(Fraction(nanos(price_of[value].amount) * total, length))
    for r in records:
        s = us(r.start)
        if r.end is None or r.end == r.start:
            if lo <= s < hi:
                out[r.user] += nanos(r.amount)
            continue
        e = us(r.end)
        overlap = min(e, hi) - max(s, lo)
        if overlap > 0:
            out[r.user] += round(Fraction(nanos(r.amount) * overlap, e - s))
    return {u: Decimal(n).scaleb(-9) for u, n in out.items()}


def has_terms(reqs: Sequence[Req], records: Sequence[Record], since: datetime, until: datetime) -> set[str]:
    """Users with a revenue record counting in the window (plan users have requests anyway)."""
    lo, hi = us(since), us(until)
    out = set()
    for r in records:
        s, e = us(r.start), us(r.end or r.start)
        if (e == s and lo <= s < hi) or (e > s and s < hi and e > lo):
            out.add(r.user)
    return out
