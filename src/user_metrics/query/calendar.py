"""Calendar periods in the operator's time zone, exactly: named windows, ISO months, local buckets.

Rollups count UTC days and hours, and a local day need not be made of them: in Asia/Kolkata it
starts at 18:30 UTC, in Asia/Kathmandu at 18:15, and in America/New_York it lasts 23 or 25 hours
on the days daylight saving starts and ends. So the query layer never asks DuckDB for time-zone
arithmetic. This module computes with Python's ``zoneinfo`` where each local period starts as a
UTC instant (epoch microseconds), and ``Offsets`` hands SQL a zone's UTC offset as a CASE over
the few transitions inside a window, so that a local day is integer arithmetic on a column.

Local time here is "epoch microseconds as the wall clock reads them": ``utc_us + offset``. A
local day number ``local_us // US_PER_DAY`` counts days from 1970-01-01 on the local calendar.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from user_metrics.errors import InvalidInput

US_PER_SECOND = 1_000_000
US_PER_HOUR = 3_600 * US_PER_SECOND
US_PER_DAY = 24 * US_PER_HOUR
EPOCH = date(1970, 1, 1)

# The named periods a window may be given as; ISO months (``2026-11``) too.
PERIODS = ("today", "yesterday", "this_week", "last_week", "this_month", "last_month")
BUCKETS = ("hour", "day", "week", "month")
_MONTH = re.compile(r"^\s*(\d{4})-(\d{2})\s*$")
# Offsets are looked up between these instants; outside them the zone's offset at the bound holds.
_FIRST_US = int(datetime(1900, 1, 1, tzinfo=UTC).timestamp()) * US_PER_SECOND
_LAST_US = int(datetime(2200, 1, 1, tzinfo=UTC).timestamp()) * US_PER_SECOND
_MAX_TZ_NAME = 64


@lru_cache(maxsize=512)
def zone(name: str | None) -> ZoneInfo:
    """The IANA zone ``name`` names (None or empty: UTC); InvalidInput for anything else."""
    text = (name or "").strip()
    if not text:
        return ZoneInfo("UTC")
    if len(text) > _MAX_TZ_NAME:
        raise InvalidInput(f"tz: {text[:_MAX_TZ_NAME]!r}... is longer than {_MAX_TZ_NAME} characters")
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidInput(
            f"tz: {text!r} is not an IANA time zone name, e.g. UTC, Europe/Paris or Asia/Kolkata"
        ) from None


def zone_name(name: str | None) -> str:
    """The canonical spelling of a zone name (checked): ``zone(name).key``."""
    return zone(name).key


def request_zone(asked: str | None, default: str) -> str:
    """The zone a request names (checked), else the server's ``timezone`` setting: what the HTTP
    and gRPC servers pass as ``tz``. An empty name counts as none."""
    return zone_name(asked if asked and asked.strip() else default)


def _offset_us(tz: ZoneInfo, us: int) -> int:
    """The zone's UTC offset at the instant ``us``, in microseconds."""
    seconds = min(max(us, _FIRST_US), _LAST_US) // US_PER_SECOND
    offset = datetime.fromtimestamp(seconds, tz).utcoffset()
    assert offset is not None
    return (offset.days * 86_400 + offset.seconds) * US_PER_SECOND + offset.microseconds


@dataclass(frozen=True)
class Offsets:
    """A zone's UTC offset over a range of instants: ``offsets[i]`` holds from ``starts[i]`` on.

    ``starts[0]`` is the start of the range looked at; before it ``offsets[0]`` is assumed.
    """

    starts: tuple[int, ...]
    offsets: tuple[int, ...]

    def at(self, us: int) -> int:
        """The offset at the instant ``us`` (microseconds)."""
        return self.offsets[max(bisect_right(self.starts, us) - 1, 0)]

    def local(self, us: int) -> int:
        """The instant ``us`` on the local wall clock (epoch microseconds)."""
        return us + self.at(us)

    def local_sql(self, expr: str) -> str:
        """SQL turning the epoch microseconds ``expr`` into local ones (valid inside the range)."""
        if len(self.offsets) == 1:
            return f"(({expr}) + {self.offsets[0]})"
        cases = " ".join(
            f"WHEN ({expr}) < {start} THEN {offset}"
            for start, offset in zip(self.starts[1:], self.offsets[:-1], strict=True)
        )
        return f"(({expr}) + CASE {cases} ELSE {self.offsets[-1]} END)"

    def local_day_sql(self, expr: str) -> str:
        """SQL for the local day number (days since 1970-01-01 on the local calendar) of ``expr``."""
        return f"({self.local_sql(expr)} // {US_PER_DAY})"

    def first_reaching(self, local_us: int) -> int:
        """The first instant at which the local clock reads ``local_us`` or later.

        Exact across transitions: a local midnight that daylight saving skips starts its day at
        the transition, and one that happens twice starts it at the first.
        """
        i = max(bisect_right(self.starts, local_us - max(self.offsets) - US_PER_DAY) - 1, 0)
        for j in range(i, len(self.starts)):
            candidate = max(self.starts[j], local_us - self.offsets[j])
            if j + 1 == len(self.starts) or candidate < self.starts[j + 1]:
                return candidate
        raise AssertionError("unreachable: the last segment is unbounded")


@lru_cache(maxsize=256)
def _offsets(key: str, first_day: int, last_day: int) -> Offsets:
    start, end = first_day * US_PER_DAY, last_day * US_PER_DAY
    starts, offsets = [start], [_offset_us(zone(key), start)]
    for year in range(day_of(first_day).year, day_of(last_day).year + 1):
        for at, offset in _transitions(key, year):
            if start < at <= end:
                starts.append(at)
                offsets.append(offset)
    return Offsets(tuple(starts), tuple(offsets))


@lru_cache(maxsize=4096)
def _transitions(key: str, year: int) -> tuple[tuple[int, int], ...]:
    """The zone's offset changes in the UTC year (after its first instant, up to the next year's
    first one): (instant, new offset). Each year is probed once per process."""
    tz = zone(key)
    probe = day_number(date(year, 1, 1)) * US_PER_DAY
    end = day_number(date(year + 1, 1, 1)) * US_PER_DAY
    before = _offset_us(tz, probe)
    out = []
    # Transitions are whole seconds, and never two within a day: probe each day, then bisect.
    while probe < end:
        step = min(probe + US_PER_DAY, end)
        after = _offset_us(tz, step)
        if after != before:
            lo, hi = probe // US_PER_SECOND, step // US_PER_SECOND  # offset(lo) old, offset(hi) new
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if _offset_us(tz, mid * US_PER_SECOND) == before:
                    lo = mid
                else:
                    hi = mid
            out.append((hi * US_PER_SECOND, after))
            before = after
        probe = step
    return tuple(out)


def offsets(tz: ZoneInfo | str | None, since_us: int, until_us: int) -> Offsets:
    """The offsets of ``tz`` over [since_us, until_us), with two days to spare on each side."""
    key = tz.key if isinstance(tz, ZoneInfo) else zone(tz).key
    first = max(since_us, _FIRST_US) // US_PER_DAY - 2
    last = -(-min(until_us, _LAST_US) // US_PER_DAY) + 2
    if key == "UTC":
        return Offsets((first * US_PER_DAY,), (0,))
    return _offsets(key, first, max(last, first + 1))


def day_number(d: date) -> int:
    """Days from 1970-01-01 to ``d``."""
    return (d - EPOCH).days


def day_of(number: int) -> date:
    return EPOCH + timedelta(days=number)


def day_start_us(d: date, tz: ZoneInfo | str | None) -> int:
    """The first instant (UTC epoch microseconds) of the local date ``d`` in ``tz``."""
    midnight = day_number(d) * US_PER_DAY
    return offsets(tz, midnight - 2 * US_PER_DAY, midnight + 2 * US_PER_DAY).first_reaching(midnight)


def local_date(us: int, tz: ZoneInfo | str | None) -> date:
    """The local date of the instant ``us`` in ``tz``."""
    return day_of(offsets(tz, us, us + 1).local(us) // US_PER_DAY)


def _from_us(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def _us(value: datetime) -> int:
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * US_PER_SECOND + delta.microseconds


def _month_start(year: int, month: int) -> date:
    return date(year + (month - 1) // 12, (month - 1) % 12 + 1, 1)


def is_period(text: object) -> bool:
    """Whether ``text`` names a calendar period (``this_month``, ``2026-11``, ...)."""
    return isinstance(text, str) and (text.strip() in PERIODS or bool(_MONTH.match(text)))


def period(name: str, now: datetime, tz: ZoneInfo | str | None) -> tuple[datetime, datetime] | None:
    """The UTC [since, until) of a named period in ``tz``; None when ``name`` names no period.

    ``today``, ``this_week`` and ``this_month`` end at ``now`` (to date); ``yesterday``,
    ``last_week``, ``last_month`` and ISO months (``2026-11``) are whole. Weeks start on Monday.
    """
    text = name.strip() if isinstance(name, str) else ""
    if match := _MONTH.match(text):
        year, month = int(match.group(1)), int(match.group(2))
        if not 1 <= month <= 12 or not 1 <= year <= 9998:
            raise InvalidInput(f"since: {text!r} is no month; months are written YYYY-MM, e.g. 2026-11")
        first = _month_start(year, month)
        return _span(first, _month_start(year, month + 1), tz)
    if text not in PERIODS:
        return None
    today = local_date(_us(now), tz)
    monday = today - timedelta(days=today.weekday())
    first = today.replace(day=1)
    if text == "today":
        return _from_us(day_start_us(today, tz)), now
    if text == "yesterday":
        return _span(today - timedelta(days=1), today, tz)
    if text == "this_week":
        return _from_us(day_start_us(monday, tz)), now
    if text == "last_week":
        return _span(monday - timedelta(days=7), monday, tz)
    if text == "this_month":
        return _from_us(day_start_us(first, tz)), now
    return _span(_month_start(first.year, first.month - 1), first, tz)  # last_month


def _span(first: date, end: date, tz: ZoneInfo | str | None) -> tuple[datetime, datetime]:
    return _from_us(day_start_us(first, tz)), _from_us(day_start_us(end, tz))


def _next(d: date, unit: str) -> date:
    if unit == "day":
        return d + timedelta(days=1)
    if unit == "week":
        return d + timedelta(days=7)
    return _month_start(d.year, d.month + 1)


def _floor(d: date, unit: str) -> date:
    if unit == "week":
        return d - timedelta(days=d.weekday())
    if unit == "month":
        return d.replace(day=1)
    return d


def bucket_starts(
    since_us: int, until_us: int, tz: ZoneInfo | str | None, unit: str, limit: int
) -> list[int]:
    """Where the local ``unit`` buckets overlapping [since_us, until_us) start, plus where the last
    one ends: ``len - 1`` buckets. The first starts at or before ``since_us``.

    Local hours follow the wall clock (a 45-minute offset gives hours at :15 UTC); the hour that
    daylight saving repeats is two buckets, the one it skips none. InvalidInput past ``limit``.
    """
    if unit not in BUCKETS:
        raise InvalidInput(f"bucket: must be one of {', '.join(BUCKETS)}, got {unit!r}")
    widest = {
        "hour": US_PER_HOUR,
        "day": 23 * US_PER_HOUR,
        "week": 167 * US_PER_HOUR,
        "month": 27 * US_PER_DAY,
    }
    if (until_us - since_us) // widest[unit] > limit:
        raise InvalidInput(
            f"the window holds more than {limit} {unit}s; use a shorter window or a longer bucket"
        )
    table = offsets(tz, since_us - 40 * US_PER_DAY, until_us + 40 * US_PER_DAY)
    if unit == "hour":
        return _hour_starts(since_us, until_us, table)
    out: list[int] = []
    d = _floor(day_of(table.local(since_us) // US_PER_DAY), unit)
    while True:
        start = table.first_reaching(day_number(d) * US_PER_DAY)
        if out and start <= out[-1]:  # a skipped local day (e.g. Samoa, 2011-12-30): no bucket
            d = _next(d, unit)
            continue
        out.append(start)
        if start >= until_us:
            return out
        d = _next(d, unit)


def _hour_starts(since_us: int, until_us: int, table: Offsets) -> list[int]:
    """Local hour boundaries: where the local clock reads a whole hour, and transitions that change
    the hour it reads."""
    out: list[int] = []
    first = since_us - 2 * US_PER_HOUR
    for i, (seg_start, offset) in enumerate(zip(table.starts, table.offsets, strict=True)):
        seg_end = table.starts[i + 1] if i + 1 < len(table.starts) else until_us + 2 * US_PER_HOUR
        lo, hi = max(seg_start, first), min(seg_end, until_us + 2 * US_PER_HOUR)
        if lo >= hi:
            continue
        if (
            i > 0
            and seg_start == lo
            and table.local(seg_start - 1) // US_PER_HOUR != (seg_start + offset) // US_PER_HOUR
        ):
            out.append(seg_start)
        b = -(-(lo + offset) // US_PER_HOUR) * US_PER_HOUR - offset
        while b < hi:
            out.append(b)
            b += US_PER_HOUR
    out = sorted(set(out))
    k = max(bisect_right(out, since_us) - 1, 0)
    end = next(i for i, b in enumerate(out) if b >= until_us)
    return out[k : end + 1]


def crowded_utc_days(since_us: int, until_us: int, tz: ZoneInfo | str | None) -> list[int]:
    """The UTC days (day numbers) in the range that touch three local days: a local day shorter
    than 24 hours lies strictly inside them. The first and last request of a day rollup cell tell
    which local days it touched only where a UTC day touches at most two.

    A local day is shorter than 24 hours only when the offset changes in it, so only the days
    around the zone's transitions in the range are looked at.
    """
    crowded = set()
    for change in offsets(tz, since_us, until_us).starts[1:]:
        lo, hi = max(since_us, change - 3 * US_PER_DAY), min(until_us, change + 3 * US_PER_DAY)
        if lo >= hi:
            continue
        starts = bucket_starts(lo, hi, tz, "day", limit=100)
        for a, b in zip(starts, starts[1:], strict=False):
            if a // US_PER_DAY == b // US_PER_DAY and a % US_PER_DAY and b % US_PER_DAY:
                crowded.add(a // US_PER_DAY)
    return sorted(crowded)
