"""Calendar periods in a time zone, checked against DuckDB's own time-zone functions.

A data set spread over 2026 (requests around every test zone's local midnights, on both New York
daylight-saving changes and at month ends, and scattered ones) is written through the store, so
that whole days are read from day cells and the window edges from hour cells and request rows.
Every figure of users(), user(), totals(), by_property() and timeseries() for every calendar
window is compared with a direct GROUP BY over ``requests`` that uses ``timezone(zone,
start_time)`` and ``date_trunc`` in the zone: an oracle that shares no code with the query layer.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa
import pytest

from user_metrics.errors import InvalidInput
from user_metrics.query import calendar
from user_metrics.query.cells import PER_USER, CellSql, decompose
from user_metrics.query.properties import by_property
from user_metrics.query.timeseries import timeseries
from user_metrics.query.totals import totals
from user_metrics.query.users import user, users
from user_metrics.query.window import Filters, Window
from user_metrics.stats import Stats
from user_metrics.store.batches import REQUESTS_ARROW_SCHEMA, nanos_to_decimal_array
from user_metrics.store.writer import Store

ZONES = ("UTC", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu")
PERIODS = ("today", "yesterday", "this_week", "last_week", "this_month", "last_month")
MONTHS = ("2026-03", "2026-11")
# Near both New York DST changes (Mar 8 07:00 UTC, Nov 1 06:00 UTC) and near a month end (just
# past local midnight of Nov 1 in Kolkata and Kathmandu, still Oct 31 in New York and UTC).
NOWS = (
    datetime(2026, 3, 8, 12, 0, tzinfo=UTC),
    datetime(2026, 11, 1, 12, 0, tzinfo=UTC),
    datetime(2026, 10, 31, 18, 45, tzinfo=UTC),
)
NAMES = ["ann", "bo", "cy", "di", "ed"]
PLANS = ["free", "pro"]


def _special_days() -> list[datetime]:
    days = [datetime(2026, 3, d, tzinfo=UTC) for d in range(1, 11)]
    days += [datetime(2026, 10, 25, tzinfo=UTC) + timedelta(days=i) for i in range(10)]
    days += [datetime(2026, m, 1, tzinfo=UTC) for m in range(2, 13)]
    days += [datetime(2026, m, 1, tzinfo=UTC) - timedelta(days=1) for m in range(3, 13)]
    return days


def _instants(rng: random.Random) -> list[datetime]:
    """Scattered requests from Feb to Dec 2026, and bursts around local midnights and DST changes."""
    start = datetime(2026, 2, 1, tzinfo=UTC)
    out = [start + timedelta(seconds=rng.randrange(320 * 86_400)) for _ in range(1500)]
    offsets = (-3601, -1800, -1, 0, 1, 900, 1800, 2700, 3599, 3600)
    for day in _special_days():
        for tz in ZONES:
            midnight = datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(tz)).astimezone(UTC)
            out += [midnight + timedelta(seconds=s + rng.random()) for s in offsets if rng.random() < 0.8]
    for change in (datetime(2026, 3, 8, 7, tzinfo=UTC), datetime(2026, 11, 1, 6, tzinfo=UTC)):
        out += [change + timedelta(minutes=m) for m in range(-90, 91, 7)]
    return sorted(out)


def _table(rng: random.Random, instants: list[datetime]) -> pa.Table:
    rows: list[dict[str, Any]] = []
    for i, t in enumerate(instants):
        who = rng.randrange(len(NAMES) + 1)
        name = NAMES[who] if who < len(NAMES) else None
        plan = PLANS[rng.randrange(2)] if name else None
        priced = rng.random() > 0.05
        rows.append(
            {
                "trace_id": f"{i:032x}",
                "span_id": f"{i:016x}",
                "start_time": t,
                "duration_ms": rng.uniform(10, 5000),
                "user_id": name,
                "service_name": "chat",
                "environment": "prod",
                "provider": "openai",
                "request_model": "gpt-4o",
                "input_tokens": rng.randrange(1, 1000),
                "output_tokens": rng.randrange(0, 500),
                "cost_source": "computed" if priced else "unpriced",
                "status": "error" if rng.random() < 0.1 else "ok",
                "properties": [("plan", plan)] if plan else [],
                "_nanos": rng.randrange(1, 10**7) if priced else None,
            }
        )
    nanos = [r.pop("_nanos") for r in rows]
    table = pa.Table.from_pylist(rows, schema=REQUESTS_ARROW_SCHEMA)
    index = REQUESTS_ARROW_SCHEMA.get_field_index("cost_usd")
    return table.set_column(index, "cost_usd", nanos_to_decimal_array(nanos))


@pytest.fixture(scope="module")
def con(tmp_path_factory: pytest.TempPathFactory) -> Iterator[duckdb.DuckDBPyConnection]:
    path: Path = tmp_path_factory.mktemp("zones") / "zones.duckdb"
    store = Store(path, Stats())
    rng = random.Random(16)
    store.write(_table(rng, _instants(rng))).result()
    reader = store.reader()
    yield reader
    reader.close()
    store.close()


def _windows() -> list[tuple[str, str, datetime]]:
    cases = [(tz, name, now) for tz in ZONES for name in PERIODS for now in NOWS]
    return cases + [(tz, month, NOWS[0]) for tz in ZONES for month in MONTHS]


def _oracle(con: duckdb.DuckDBPyConnection, sql: str, window: Window) -> list[dict[str, Any]]:
    cur = con.execute(
        f"""WITH r AS (SELECT *, timezone($tz, start_time) AS local FROM requests
                       WHERE start_time >= $since AND start_time < $until)
            {sql}""",
        {"tz": window.tz, "since": window.since, "until": window.until},
    )
    names = [d[0] for d in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _money(value: Any) -> Decimal:
    return Decimal(value or 0).quantize(Decimal("1E-9"))


@pytest.mark.parametrize(("tz", "name", "now"), _windows())
def test_every_calendar_window_matches_a_group_by_in_the_zone(
    con: duckdb.DuckDBPyConnection, tz: str, name: str, now: datetime
) -> None:
    """users(), user(), totals() and by_property() equal GROUP BYs over requests in the window
    DuckDB's timezone() gives; active_days is count(DISTINCT local date) per user."""
    at = lambda: now  # noqa: E731
    window = Window.parse(name, None, now, tz)
    page = users(con, name, tz=tz, now=at, limit=100)
    assert (page.since, page.until) == (window.since, window.until)
    want = {
        r["user_id"]: r
        for r in _oracle(
            con,
            """SELECT user_id, count(*) AS requests, sum(cost_usd) AS cost, count(cost_usd) AS priced,
                      count(*) FILTER (status = 'error') AS errors,
                      count(DISTINCT local::DATE) AS active_days,
                      min(start_time) AS first, max(start_time) AS last
               FROM r GROUP BY user_id""",
            window,
        )
    }
    got = {u.user_id: u for u in page.users}
    assert set(got) == set(want) and page.total == len(want)
    for uid, w in want.items():
        u = got[uid]
        assert (u.requests, u.errors, u.active_days) == (w["requests"], w["errors"], w["active_days"]), uid
        assert u.cost_usd == (_money(w["cost"]) if w["priced"] else None)
        assert (u.first_active, u.last_active) == (w["first"], w["last"])
        assert u.avg_requests_per_active_day == w["requests"] / w["active_days"]
    if "ann" in want:
        one = user(con, "ann", name, tz=tz, now=at)
        assert (one.requests, one.active_days) == (want["ann"]["requests"], want["ann"]["active_days"])
    total = totals(con, name, tz=tz, now=at)
    (t,) = _oracle(
        con,
        "SELECT count(*) AS requests, sum(cost_usd) AS cost, count(DISTINCT user_id) AS users FROM r",
        window,
    )
    assert (total.requests, total.cost_usd, total.users) == (t["requests"], _money(t["cost"]), t["users"])
    plans = {
        v.value: (v.users, v.requests, v.cost_usd)
        for v in by_property(con, "plan", name, tz=tz, now=at).values
    }
    oracle = _oracle(
        con,
        """SELECT properties['plan'] AS value, count(DISTINCT user_id) AS users, count(*) AS requests,
                  sum(cost_usd) AS cost FROM r GROUP BY 1""",
        window,
    )
    assert plans == {o["value"]: (o["users"], o["requests"], _money(o["cost"])) for o in oracle}


_TRUNC = {
    "hour": "date_trunc('hour', local), local - start_time::TIMESTAMP",  # DST's repeated hour: two
    "day": "local::DATE",
    "week": "date_trunc('week', local)::DATE",
    "month": "date_trunc('month', local)::DATE",
}


def _bucket_key(start: datetime, unit: str, tz: str) -> tuple[Any, ...]:
    local = start.astimezone(ZoneInfo(tz))
    if unit == "hour":
        return (local.replace(tzinfo=None), local.utcoffset())
    return (local.date(),)


@pytest.mark.parametrize("tz", ZONES)
@pytest.mark.parametrize("unit", ["hour", "day", "week", "month"])
@pytest.mark.parametrize(
    ("name", "now"), [("2026-03", NOWS[0]), ("2026-11", NOWS[0]), ("this_week", NOWS[1])]
)
@pytest.mark.parametrize("user_id", [None, "ann"])
def test_timeseries_buckets_match_date_trunc_in_the_zone(
    con: duckdb.DuckDBPyConnection, tz: str, unit: str, name: str, now: datetime, user_id: str | None
) -> None:
    """Every local bucket's requests, errors, tokens and cost equal a GROUP BY date_trunc(unit,
    timezone(zone, start_time)); points are consecutive local buckets covering the window."""
    series = timeseries(con, user_id, name, bucket=unit, tz=tz, now=lambda: now)
    assert series.tz == tz
    window = Window.parse(name, None, now, tz)
    who = "TRUE" if user_id is None else "user_id = 'ann'"
    oracle = _oracle(
        con,
        f"""SELECT {_TRUNC[unit]}, count(*) AS requests, count(*) FILTER (status = 'error') AS errors,
                   sum(input_tokens + output_tokens) AS tokens, sum(cost_usd) AS cost
            FROM r WHERE {who} GROUP BY ALL""",
        window,
    )
    want = {tuple(row.values())[: 2 if unit == "hour" else 1]: row for row in oracle}
    points = {_bucket_key(p.start, unit, tz): p for p in series.points}
    assert len(points) == len(series.points)  # no two points are one local bucket
    assert series.points[0].start <= window.since < series.points[1].start if len(points) > 1 else True
    for key, row in want.items():
        p = points[key]
        got = (p.requests, p.errors, p.total_tokens, p.cost_usd)
        assert got == (row["requests"], row["errors"], row["tokens"], _money(row["cost"])), key
    assert sum(p.requests for p in series.points) == sum(r["requests"] for r in oracle)


def test_hour_buckets_of_a_dst_day_in_new_york() -> None:
    """Nov 1: 25 local hours, 01:00 twice; Mar 8: 23, 02:00 never (bucket_starts, as queried)."""
    for day, hours in (("2026-11-01", 25), ("2026-03-08", 23)):
        w = Window.parse(f"{day}T00:00:00", f"{day}T23:59:59.999999", datetime.now(UTC), "America/New_York")
        starts = calendar.bucket_starts(w.since_us, w.until_us, w.tz, "hour", 100)
        assert len(starts) - 1 == hours


@pytest.mark.parametrize("tz", ["Asia/Kolkata", "Asia/Kathmandu"])
def test_a_local_month_reads_day_and_hour_cells_and_two_raw_pieces(tz: str) -> None:
    """A Kolkata or Kathmandu month starts and ends off the UTC hour: everything but two pieces
    shorter than an hour comes from rollup cells."""
    window = Window.parse("2026-11", None, datetime.now(UTC), tz)
    pieces = decompose(window.since_us, window.until_us, PER_USER)
    raw = [(a, b) for level, a, b in pieces if level is None]
    assert len(raw) == 2 and all(b - a < 3_600_000_000 for a, b in raw)
    assert [level.table for level, _, _ in pieces if level is not None].count("rollup_user_day") == 1


def test_daily_levels_leave_avoided_days_to_hour_cells() -> None:
    """decompose(avoid=...): a crowded UTC day (three local days in it) is read as 24 hour cells,
    so that a cell's first and last request name every local day it touched."""
    day = 20_000
    pieces = decompose(day * 86_400_000_000 - 1, (day + 3) * 86_400_000_000, PER_USER, avoid=[day + 1])
    shape = [(level.table if level else "raw", a, b) for level, a, b in pieces]
    assert shape == [
        ("raw", day * 86_400_000_000 - 1, day * 86_400_000_000),
        ("rollup_user_day", day, day + 1),
        ("rollup_user_hour", (day + 1) * 24, (day + 2) * 24),
        ("rollup_user_day", day + 2, day + 3),
    ]


def test_periods_and_naive_instants_are_read_in_the_zone() -> None:
    """since=this_month with until is refused; naive instants and bare dates are local; UTC and
    None read as before."""
    now = datetime(2026, 11, 15, 12, tzinfo=UTC)
    with pytest.raises(InvalidInput, match="until: leave it out"):
        Window.parse("this_month", "2026-11-20", now, "Asia/Kolkata")
    with pytest.raises(InvalidInput, match="until: 'last_month' names a calendar period"):
        Window.parse("2026-10-01", "last_month", now, None)
    w = Window.parse("2026-11-01", "2026-11-02T06:00", now, "Asia/Kolkata")
    assert (w.since.isoformat(), w.until.isoformat()) == (
        "2026-10-31T18:30:00+00:00",
        "2026-11-02T00:30:00+00:00",
    )
    assert w.tz == "Asia/Kolkata"
    u = Window.parse("2026-11-01", "2026-11-02T06:00", now, None)
    assert (u.since.isoformat(), u.until.isoformat(), u.tz) == (
        "2026-11-01T00:00:00+00:00",
        "2026-11-02T06:00:00+00:00",
        "UTC",
    )
    with pytest.raises(InvalidInput, match="tz: 'Mars/Olympus'"):
        Window.parse("this_month", None, now, "Mars/Olympus")


def test_active_days_sql_counts_local_days_of_first_and_last() -> None:
    """Outside UTC the active-day aggregate reads both ends of each cell in the zone."""
    q = CellSql(Window.parse("2026-11", None, datetime.now(UTC), "Asia/Kolkata"), Filters())
    assert "first_us" in q.active_days_sql() and "last_us" in q.active_days_sql()
    assert CellSql(Window.parse("2026-11", None, datetime.now(UTC)), Filters()).active_days_sql() == (
        "count(DISTINCT t)"
    )


def test_request_rows_of_a_crowded_day_are_grouped_by_the_hour(con: duckdb.DuckDBPyConnection) -> None:
    """Read from request rows throughout (rows_only), a crowded UTC day's rows are grouped per
    hour, so each group's first and last request still name every local day it touched."""
    window = Window.parse("2026-03-01", "2026-03-03", datetime.now(UTC), "UTC")
    q = CellSql(window, Filters(), rows_only=True)
    q.crowded = (calendar.day_number(datetime(2026, 3, 2).date()),)
    rows = con.execute(
        f"SELECT first_us, last_us, t FROM ({q.cells(PER_USER, 86_400_000_000)})", q.params
    ).fetchall()
    crowded = [(a, b) for a, b, t in rows if t == q.crowded[0]]
    assert crowded and all(a // 3_600_000_000 == b // 3_600_000_000 for a, b in crowded)
    plain = CellSql(window, Filters(), rows_only=True)  # no crowded day: a group is a user's day
    rows = con.execute(
        f"SELECT first_us, last_us FROM ({plain.cells(PER_USER, 86_400_000_000)})", plain.params
    )
    assert any(a // 3_600_000_000 != b // 3_600_000_000 for a, b in rows.fetchall())


@pytest.mark.parametrize("tz", ZONES)
@pytest.mark.parametrize(
    ("since", "until"), [("2026-02-15", "2026-04-18T12:00"), ("2026-02-01", "2026-12-31")]
)
def test_active_days_over_long_windows(
    con: duckdb.DuckDBPyConnection, tz: str, since: str, until: str
) -> None:
    """62 local days (one BIGINT of day bits) and ten months (a bitstring): count(DISTINCT local
    date) either way, sorted by it too."""
    window = Window.parse(since, until, datetime.now(UTC), tz)
    want = {
        r["user_id"]: r["days"]
        for r in _oracle(con, "SELECT user_id, count(DISTINCT local::DATE) AS days FROM r GROUP BY 1", window)
    }
    page = users(con, since, until, tz=tz, sort="-active_days")
    assert {u.user_id: u.active_days for u in page.users} == want
    assert [u.active_days for u in page.users] == sorted(want.values(), reverse=True)


def test_naive_wall_times_daylight_saving_repeats_or_skips() -> None:
    """New York: 01:30 on Nov 1 happens twice (the first, EDT, counts); 02:30 on Mar 8 never
    happens (read with the offset before the change, EST: 07:30 UTC, which is 03:30 EDT)."""
    now = datetime(2026, 12, 1, tzinfo=UTC)
    w = Window.parse("2026-11-01T01:30", "2026-11-01T03:00", now, "America/New_York")
    assert (w.since.isoformat(), w.until.isoformat()) == (
        "2026-11-01T05:30:00+00:00",
        "2026-11-01T08:00:00+00:00",
    )
    w = Window.parse("2026-03-08T02:30", "2026-03-08T04:00", now, "America/New_York")
    assert (w.since.isoformat(), w.until.isoformat()) == (
        "2026-03-08T07:30:00+00:00",
        "2026-03-08T08:00:00+00:00",
    )
