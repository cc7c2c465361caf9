"""query/calendar.py: local periods as exact UTC instants, checked against zoneinfo directly."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import duckdb
import pytest

from user_metrics.errors import InvalidInput
from user_metrics.query import calendar

ZONES = ("UTC", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu", "Australia/Lord_Howe", "Pacific/Apia")
US = 1_000_000


def _us(value: datetime) -> int:
    return int(value.timestamp()) * US


def _utc(us: int) -> datetime:
    return datetime.fromtimestamp(us / US, UTC)


def _local_date(us: int, tz: str) -> date:
    return datetime.fromtimestamp(us // US, ZoneInfo(tz)).date()


@pytest.mark.parametrize("tz", ZONES)
def test_a_local_day_starts_at_the_first_instant_whose_local_date_is_that_day(tz: str) -> None:
    """Every day of 2026 (and Apia's skipped 2011-12-30): its start reads that day (or later, when
    the day was skipped) and the microsecond before reads an earlier day."""
    days = [date(2026, 1, 1) + timedelta(days=i) for i in range(366)] + [date(2011, 12, 30)]
    for d in days:
        start = calendar.day_start_us(d, tz)
        assert _local_date(start, tz) >= d
        assert _local_date(start - 1, tz) < d, (tz, d)


@pytest.mark.parametrize("tz", ZONES)
def test_sql_local_day_numbers_match_zoneinfo_every_quarter_hour_of_a_year(tz: str) -> None:
    """offsets().local_day_sql gives DuckDB the zone's local day of every instant, DST days too."""
    since, until = _us(datetime(2026, 1, 1, tzinfo=UTC)), _us(datetime(2027, 1, 1, tzinfo=UTC))
    step = 15 * 60 * US
    sql = calendar.offsets(tz, since, until).local_day_sql("x")
    got = duckdb.sql(
        f"SELECT x, {sql} AS d FROM range({since - 1}, {until}, {step}) AS t(x) ORDER BY x"
    ).fetchall()
    for x, d in got:
        assert calendar.day_of(d) == datetime.fromtimestamp(x / US, ZoneInfo(tz)).date(), (tz, _utc(x))


NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)  # a Monday


@pytest.mark.parametrize(
    ("name", "tz", "since", "until"),
    [
        ("today", "UTC", "2026-11-30T00:00:00+00:00", "2026-11-30T12:00:00+00:00"),
        ("yesterday", "Asia/Kolkata", "2026-11-28T18:30:00+00:00", "2026-11-29T18:30:00+00:00"),
        ("this_week", "Asia/Kathmandu", "2026-11-29T18:15:00+00:00", "2026-11-30T12:00:00+00:00"),
        ("last_week", "America/New_York", "2026-11-23T05:00:00+00:00", "2026-11-30T05:00:00+00:00"),
        ("this_month", "America/New_York", "2026-11-01T04:00:00+00:00", "2026-11-30T12:00:00+00:00"),
        ("last_month", "America/New_York", "2026-10-01T04:00:00+00:00", "2026-11-01T04:00:00+00:00"),
        ("2026-03", "America/New_York", "2026-03-01T05:00:00+00:00", "2026-04-01T04:00:00+00:00"),
        ("2026-12", "Asia/Kolkata", "2026-11-30T18:30:00+00:00", "2026-12-31T18:30:00+00:00"),
    ],
)
def test_named_periods(name: str, tz: str, since: str, until: str) -> None:
    """Named periods and ISO months in the zone; this_* and today end now, the others are whole."""
    assert calendar.period(name, NOW, tz) == (datetime.fromisoformat(since), datetime.fromisoformat(until))


def test_a_week_starts_on_monday_in_the_zone_and_not_a_period_is_none() -> None:
    """At 23:00 UTC on Sunday it is Monday in Kolkata: this_week starts that Monday there."""
    sunday_night = datetime(2026, 11, 29, 23, 0, tzinfo=UTC)
    assert calendar.period("this_week", sunday_night, "Asia/Kolkata")[0] == datetime(
        2026, 11, 29, 18, 30, tzinfo=UTC
    )
    assert calendar.period("this_week", sunday_night, "UTC")[0] == datetime(2026, 11, 23, tzinfo=UTC)
    assert calendar.period("30d", NOW, "UTC") is None
    with pytest.raises(InvalidInput, match="YYYY-MM"):
        calendar.period("2026-13", NOW, "UTC")


def test_hour_buckets_follow_the_wall_clock() -> None:
    """New York's repeated hour is two buckets; Kathmandu's hours start at :15 UTC."""
    since, until = _us(datetime(2026, 11, 1, 4, tzinfo=UTC)), _us(datetime(2026, 11, 1, 8, tzinfo=UTC))
    starts = calendar.bucket_starts(since, until, "America/New_York", "hour", 100)
    assert [_utc(s).hour for s in starts] == [4, 5, 6, 7, 8]
    starts = calendar.bucket_starts(since, until, "Asia/Kathmandu", "hour", 100)
    assert [_utc(s).strftime("%H:%M") for s in starts] == [
        "03:15",
        "04:15",
        "05:15",
        "06:15",
        "07:15",
        "08:15",
    ]


def test_day_week_and_month_buckets_across_dst() -> None:
    """Days of 23 and 25 hours, weeks from Monday, months from the 1st, all in the zone."""
    tz = "America/New_York"
    since, until = _us(datetime(2026, 3, 8, 12, tzinfo=UTC)), _us(datetime(2026, 3, 10, tzinfo=UTC))
    days = calendar.bucket_starts(since, until, tz, "day", 100)
    assert [b - a for a, b in zip(days, days[1:], strict=False)] == [23 * 3600 * US, 24 * 3600 * US]
    weeks = calendar.bucket_starts(since, until, tz, "week", 100)
    assert [_utc(s).isoformat() for s in weeks] == [
        "2026-03-02T05:00:00+00:00",
        "2026-03-09T04:00:00+00:00",
        "2026-03-16T04:00:00+00:00",
    ]
    months = calendar.bucket_starts(since, until, tz, "month", 100)
    assert [_utc(s).date().isoformat() for s in months] == ["2026-03-01", "2026-04-01"]
    with pytest.raises(InvalidInput, match="more than 10 hours"):
        calendar.bucket_starts(since, until, tz, "hour", 10)


def test_bad_zone_names_are_refused_and_empty_is_utc() -> None:
    """A name zoneinfo does not know, or a path, is InvalidInput naming tz."""
    assert calendar.zone(None).key == calendar.zone("").key == "UTC"
    for bad in ("Mars/Base", "../../etc/passwd", "x" * 100):
        with pytest.raises(InvalidInput, match="tz"):
            calendar.zone(bad)
