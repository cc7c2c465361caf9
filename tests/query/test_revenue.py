"""query/revenue.py: revenue per user in a window, exactly, against a brute-force oracle.

The oracle (``revenue_data.expected_revenue``) reads the request rows in Python with Fractions
and zoneinfo; the service reads rollup cells in SQL with integers.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from revenue_data import Price, Record, Req, at, expected_revenue, set_revenue, write_requests

from user_metrics.query.revenue import revenue_by_user, revenue_by_user_id
from user_metrics.query.window import Window

PRO = Price("pro", Decimal(20))
FREE = Price("free", Decimal(0))
TEAM_YEAR = Price("team", Decimal(200), "year")


def daily(user: str, plan: str, first: str, days: int, hour: int = 12) -> list[Req]:
    """One request a day at ``hour`` UTC from the date ``first``."""
    start = at(first) + timedelta(hours=hour)
    return [Req(user, start + timedelta(days=i), plan) for i in range(days)]


def revenue(
    con: duckdb.DuckDBPyConnection, since: str | datetime, until: str | datetime, tz: str = "UTC"
) -> dict[str, Decimal] | None:
    window = Window(
        at(since) if isinstance(since, str) else since, at(until) if isinstance(until, str) else until
    )
    return revenue_by_user_id(con, window, tz=tz)


# Fixed plan requests; prices and records are set per test (tests/lake runs these tests on a lake).
REVENUE_REQUESTS = [
    *daily("feb", "pro", "2026-02-01", 28),
    *daily("nov", "pro", "2026-11-01", 30),
    *daily("dec", "pro", "2026-12-01", 31),
    *daily("year", "team", "2026-01-01", 365),
    *daily("both", "pro", "2026-11-01", 30, hour=1),
    *daily("both", "free", "2026-11-01", 30, hour=2),
    *daily("both", "team", "2026-11-01", 30, hour=3),
    Req(None, at("2026-11-05T10:00"), "pro"),  # no user: no revenue
    Req("kolkata", at("2026-11-03T19:00"), "pro"),  # local (India) 2026-11-04 00:30
    Req("other", at("2026-11-03T10:00"), None),
]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A store holding REVENUE_REQUESTS; prices and records are set per test."""
    write_requests(tmp_path / "um.duckdb", REVENUE_REQUESTS)
    con = duckdb.connect(str(tmp_path / "um.duckdb"))
    yield con
    con.close()


class TestPlanPrices:
    def test_no_source_is_none_and_a_source_without_terms_is_empty(
        self, db: duckdb.DuckDBPyConnection
    ) -> None:
        """Without plan prices or records revenue is unknown (None), not zero."""
        assert revenue(db, "2026-11-01", "2026-12-01") is None
        assert revenue_by_user(db, Window(at("2026-11-01"), at("2026-12-01"))) is None
        set_revenue(db, [Price("gold", Decimal(5))], [])
        assert revenue(db, "2026-11-01", "2026-12-01") == {}

    @pytest.mark.parametrize(
        ("user", "month", "after"),
        [("feb", "2026-02", "2026-03"), ("nov", "2026-11", "2026-12"), ("dec", "2026-12", "2027-01")],
    )
    def test_a_full_local_month_on_a_plan_is_exactly_the_price(
        self, db: duckdb.DuckDBPyConnection, user: str, month: str, after: str
    ) -> None:
        """28, 30 and 31-day months alike: every day on the plan is the monthly price, no rounding."""
        set_revenue(db, [PRO], [])
        assert revenue(db, f"{month}-01", f"{after}-01")[user] == Decimal("20.000000000")

    def test_window_edges_prorate_by_the_microsecond(self, db: duckdb.DuckDBPyConnection) -> None:
        """A window starting mid-day and ending mid-month counts the plan days' overlap only."""
        set_revenue(db, [PRO], [])
        got = revenue(db, "2026-11-03T06:00", "2026-11-17T18:00")
        # 14 days and 12 hours of November's 30 days, rounded half to even once
        assert got is not None and got["nov"] == Decimal("9.666666667")
        # a request outside the window on the window's first local day still makes it a plan day
        got = revenue(db, "2026-11-03T13:00", "2026-11-03T14:00")
        assert got is not None and got["nov"] == (Decimal(20) / 30 / 24).quantize(Decimal("1E-9"))

    def test_a_yearly_plan_is_the_price_over_the_year(self, db: duckdb.DuckDBPyConnection) -> None:
        """A whole year on a yearly plan is its price; a month of it is the month's share of the year."""
        set_revenue(db, [TEAM_YEAR], [])
        assert revenue(db, "2026-01-01", "2027-01-01")["year"] == Decimal("200.000000000")
        assert revenue(db, "2026-02-01", "2026-03-01")["year"] == (Decimal(200) * 28 / 365).quantize(
            Decimal("1E-9")
        )

    def test_the_dearest_plan_of_a_day_counts(self, db: duckdb.DuckDBPyConnection) -> None:
        """pro (20/month) beats free and team (200/year, ~0.55/day < 20/30): a month on pro is 20."""
        set_revenue(db, [PRO, FREE, TEAM_YEAR], [])
        assert revenue(db, "2026-11-01", "2026-12-01")["both"] == Decimal("20.000000000")
        dear_team = Price("team", Decimal(1000), "year")  # 1000/365 a day beats 20/30
        set_revenue(db, [PRO, FREE, dear_team], [])
        assert revenue(db, "2026-11-01", "2026-12-01")["both"] == (Decimal(1000) * 30 / 365).quantize(
            Decimal("1E-9")
        )

    def test_requests_without_a_user_earn_nothing(self, db: duckdb.DuckDBPyConnection) -> None:
        set_revenue(db, [PRO], [])
        got = revenue(db, "2026-11-05", "2026-11-06")
        assert got is not None and None not in got and "None" not in got

    def test_plan_days_are_local_days_of_the_zone(self, db: duckdb.DuckDBPyConnection) -> None:
        """In Asia/Kolkata a request at 19:00 UTC is the next local day, which starts at 18:30 UTC."""
        set_revenue(db, [PRO], [])
        utc = revenue(db, "2026-11-03T18:30", "2026-11-04T18:30")
        india = revenue(db, "2026-11-03T18:30", "2026-11-04T18:30", "Asia/Kolkata")
        assert utc is not None and india is not None
        day = (Decimal(20) / 30).quantize(Decimal("1E-9"))
        # UTC: the plan day is Nov 3 (UTC), of which 5.5 hours lie in the window
        assert utc["kolkata"] == (Decimal(20) * Decimal("5.5") / (30 * 24)).quantize(Decimal("1E-9"))
        assert india["kolkata"] == day  # the whole local day Nov 4
        assert revenue(db, "2026-11-03T00:00", "2026-11-03T18:30", "Asia/Kolkata").get("kolkata") is None


class TestImportedRecords:
    def test_a_period_counts_in_proportion_and_an_instant_whole_inside(
        self, db: duckdb.DuckDBPyConnection
    ) -> None:
        records = [
            Record("p", "carol", Decimal("9.99"), at("2026-11-01"), at("2026-12-01")),
            Record("i", "carol", Decimal("5"), at("2026-11-20T08:00")),
            Record("before", "carol", Decimal("11"), at("2026-11-10T08:00")),
            Record("out", "carol", Decimal("7"), at("2026-12-01")),  # an instant at the window's end
            Record("refund", "carol", Decimal("-1.25"), at("2026-11-30T23:59:59.999999")),
        ]
        set_revenue(db, [], records)
        got = revenue(db, "2026-11-16", "2026-12-01")
        assert got == {"carol": (Decimal("9.99") / 2).quantize(Decimal("1E-9")) + 5 - Decimal("1.25")}
        assert revenue(db, "2026-11-16", "2026-11-17") == {"carol": Decimal("0.333000000")}
        assert revenue(db, "2026-12-01", "2026-12-02") == {"carol": Decimal("7.000000000")}

    def test_an_imported_period_suppresses_plan_revenue_on_the_days_it_overlaps(
        self, db: duckdb.DuckDBPyConnection
    ) -> None:
        """Imported records win: nov pays 15 for Nov 11-20 (ending mid-day), so no plan revenue
        for the local days Nov 11 to Nov 20; the other 20 days are 20 x 20/30."""
        set_revenue(db, [PRO], [Record("r", "nov", Decimal(15), at("2026-11-11"), at("2026-11-20T12:00"))])
        got = revenue(db, "2026-11-01", "2026-12-01")
        assert got is not None
        assert got["nov"] == Decimal(15) + (Decimal(20) * 20 / 30).quantize(Decimal("1E-9"))

    def test_an_instant_does_not_suppress_plan_days(self, db: duckdb.DuckDBPyConnection) -> None:
        set_revenue(db, [PRO], [Record("r", "nov", Decimal("-3"), at("2026-11-11T10:00"))])
        assert revenue(db, "2026-11-01", "2026-12-01")["nov"] == Decimal("17.000000000")


# ---- random data against the oracle -------------------------------------------------------------

BASE = at("2026-10-20")
SPAN_DAYS = 50
PLANS = ("free", "pro", "team", "max")


def _random_requests(seed: int, n: int = 600) -> list[Req]:
    rng = random.Random(seed)
    users = [f"u{i}" for i in range(12)]
    out = []
    for _ in range(n):
        start = BASE + timedelta(microseconds=rng.randrange(SPAN_DAYS * 86_400_000_000))
        if rng.random() < 0.05:  # exactly on a UTC or an Indian midnight
            start = BASE + timedelta(days=rng.randrange(SPAN_DAYS), hours=rng.choice([0, 18.5]))
        out.append(Req(rng.choice([*users, None]), start, rng.choice([*PLANS, None])))
    return out


REQS = _random_requests(1)


@pytest.fixture(scope="module")
def random_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[duckdb.DuckDBPyConnection]:
    path = tmp_path_factory.mktemp("revenue") / "um.duckdb"
    write_requests(path, REQS)
    con = duckdb.connect(str(path))
    yield con
    con.close()


@pytest.fixture(scope="module")
def folded_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[duckdb.DuckDBPyConnection]:
    """The same requests, with room for two values per dimension: the other plans are folded."""
    path = tmp_path_factory.mktemp("folded") / "um.duckdb"
    write_requests(path, REQS, max_dimension_values=2)
    con = duckdb.connect(str(path))
    assert con.execute(
        "SELECT count(*) FROM dim_values WHERE dim = 'property:plan' AND value IS NULL"
    ).fetchone() == (1,)
    yield con
    con.close()


instants = st.integers(0, SPAN_DAYS * 86_400_000_000).map(lambda u: BASE + timedelta(microseconds=u))
amounts = st.decimals(min_value=Decimal("-500"), max_value=Decimal("5000"), places=9, allow_nan=False)
prices = st.lists(
    st.builds(
        Price,
        st.sampled_from(PLANS),
        st.decimals(min_value=0, max_value=10_000, places=9),
        st.sampled_from(["month", "year"]),
    ),
    max_size=4,
    unique_by=lambda p: p.value,
)
records = st.lists(
    st.builds(
        lambda i, user, amount, start, length: Record(
            f"r{i}", user, amount, start, None if length is None else start + timedelta(microseconds=length)
        ),
        st.integers(0, 10**9),
        st.sampled_from(["u1", "u2", "u3", "ghost"]),
        amounts,
        instants,
        st.one_of(st.none(), st.integers(1, 40 * 86_400_000_000)),
    ),
    max_size=5,
    unique_by=lambda r: r.id,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prices=prices,
    records=records,
    a=instants,
    b=instants,
    tz=st.sampled_from(["UTC", "Asia/Kolkata", "America/New_York"]),
)
def test_random_windows_match_the_brute_force_oracle(
    random_db: duckdb.DuckDBPyConnection,
    prices: list[Price],
    records: list[Record],
    a: datetime,
    b: datetime,
    tz: str,
) -> None:
    """Any prices, records, window and zone (New York's DST ends inside the data): the service's
    revenue equals the rules applied to the request rows in exact fractions."""
    if a == b:
        return
    since, until = min(a, b), max(a, b)
    set_revenue(random_db, prices, records)
    got = revenue(random_db, since, until, tz)
    if not prices and not records:
        assert got is None
        return
    want = expected_revenue(REQS, prices, records, since, until, tz)
    assert got == want


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prices=prices, a=instants, b=instants, tz=st.sampled_from(["UTC", "Asia/Kolkata"]))
def test_folded_plan_values_are_read_from_request_rows(
    folded_db: duckdb.DuckDBPyConnection, prices: list[Price], a: datetime, b: datetime, tz: str
) -> None:
    """A plan folded into (other) cannot be priced from cells: the request rows are read instead."""
    if a == b or not prices:
        return
    since, until = min(a, b), max(a, b)
    set_revenue(folded_db, prices, [])
    assert revenue(folded_db, since, until, tz) == expected_revenue(REQS, prices, [], since, until, tz)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prices=prices,
    records=records,
    a=instants,
    b=instants,
    sort=st.sampled_from(["-cost_usd", "requests", "user_id"]),
)
def test_users_lists_the_same_users_whatever_the_sort(
    random_db: duckdb.DuckDBPyConnection,
    prices: list[Price],
    records: list[Record],
    a: datetime,
    b: datetime,
    sort: str,
) -> None:
    """Sorted by margin, users() reads every user's revenue; sorted by anything else, only the page's
    and a cheap list of who has revenue. Both list the users with a request in the window and those
    with a revenue term in it (a record counting there, a priced plan on a day the window touches),
    with the same revenue each."""
    if a == b:
        return
    from user_metrics.query.users import users

    since, until = min(a, b), max(a, b)
    set_revenue(random_db, prices, records)
    by_margin = users(random_db, since, until, sort="margin_usd", limit=10_000)
    other = users(random_db, since, until, sort=sort, limit=10_000)
    assert by_margin.total == other.total == len(by_margin.users)
    assert {(u.user_id, u.revenue_usd) for u in by_margin.users} == {
        (u.user_id, u.revenue_usd) for u in other.users
    }
    priced = {p.value for p in prices}
    want = {r.user for r in REQS if since <= r.start < until}
    want |= {
        r.user
        for r in REQS
        if r.user
        and r.plan in priced
        and (since.date() <= r.start.date() <= (until - timedelta(microseconds=1)).date())
    }
    want |= {
        r.user
        for r in records
        if (r.end is None and since <= r.start < until)
        or (r.end is not None and r.start < until and r.end > since)
    }
    assert {u.user_id for u in by_margin.users} == want
    if prices or records:
        expected = expected_revenue(REQS, prices, records, since, until)
        assert {u.user_id: u.revenue_usd for u in by_margin.users} == {
            u: expected.get(u or "", Decimal(0)) if u is not None else Decimal(0) for u in want
        }


@pytest.mark.parametrize("tz", ["UTC", "Asia/Kolkata", "America/New_York"])
def test_statements_carry_the_revenue_users_shows_in_the_months_zone(
    db: duckdb.DuckDBPyConnection, tz: str
) -> None:
    """A statement's revenue per user is users()' for the same month in the same zone (plan days
    counted in that zone), a user known only from an imported record included, and its total
    revenue is totals()'; one user's statement says the same as the page."""
    from user_metrics.query.statements import statement
    from user_metrics.query.totals import totals
    from user_metrics.query.users import users

    set_revenue(
        db,
        [PRO, FREE, TEAM_YEAR],
        [
            Record("r1", "ghost", Decimal("12.5"), at("2026-11-10"), at("2026-12-10")),
            Record("r2", "nov", Decimal(3), at("2026-11-20")),
        ],
    )
    now = lambda: at("2026-12-15")  # noqa: E731
    page = users(db, "2026-11", tz=tz, limit=1000, now=now)
    by_user = {u.user_id: u.revenue_usd for u in page.users}
    stmt = statement(db, "2026-11", tz=tz, now=now)
    assert {u.user_id: u.revenue_usd for u in stmt.users} == by_user
    assert by_user["ghost"] > 0
    if tz == "UTC":  # 21 of the record's 30 days
        assert by_user["ghost"] == Decimal("8.75")
    assert stmt.totals.revenue_usd == totals(db, "2026-11", tz=tz, now=now).revenue_usd
    for uid in ("ghost", "nov", "kolkata"):
        (one,) = statement(db, "2026-11", uid, tz=tz, now=now).users
        assert one.revenue_usd == by_user[uid]


def test_a_window_from_year_1_to_9999_is_answered(db: duckdb.DuckDBPyConnection) -> None:
    """Plan days are looked for only where requests are stored: the widest window there is gives
    the same revenue as the years that hold the data, and no calendar of millions of days."""
    set_revenue(db, [PRO, FREE, TEAM_YEAR], [Record("r1", "nov", Decimal(3), at("2026-11-20"))])
    widest = revenue(db, "0001-01-01", "9999-12-31")
    assert widest == revenue(db, "2025-01-01", "2028-01-01")
    assert widest is not None and widest["nov"] == Decimal(23)
