"""The local days of a window for plan revenue (``revenue.py``): each day's UTC start and end,
its overlap with the window, and the length of its local month and year, as a table SQL reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import duckdb

from user_metrics.query import calendar
from user_metrics.query.calendar import US_PER_DAY, US_PER_HOUR
from user_metrics.query.window import Window, from_micros


@dataclass(frozen=True)
class DayTable:
    """The local days covering a window, each with its UTC start and end and the length of its
    local month and year (microseconds), as parallel lists for SQL parameters."""

    days: list[int]
    starts: list[int]
    ends: list[int]
    months: list[int]  # year * 12 + month - 1
    month_lengths: list[int]
    years: list[int]
    year_lengths: list[int]
    bits: list[int]  # day of the month - 1
    overlaps: list[int]  # of the day with the window

    def month_index(self, i: int) -> int:
        return self.months[i] - self.months[0]


def day_table(window: Window, tz: str | None) -> DayTable:
    table = calendar.offsets(tz, window.since_us, window.until_us)
    first = table.local(window.since_us) // US_PER_DAY
    last = table.local(window.until_us - 1) // US_PER_DAY
    d0, d1 = calendar.day_of(first), calendar.day_of(last)
    year_start, year_end = date(d0.year, 1, 1), date(d1.year + 1, 1, 1)
    wide = calendar.offsets(
        tz,
        calendar.day_number(year_start) * US_PER_DAY - 2 * US_PER_DAY,
        calendar.day_number(year_end) * US_PER_DAY + 2 * US_PER_DAY,
    )

    def start(d: date) -> int:
        return wide.first_reaching(calendar.day_number(d) * US_PER_DAY)

    out = DayTable([], [], [], [], [], [], [], [], [])
    lengths: dict[tuple[int, int], int] = {}
    next_start = start(d0)
    for number in range(first, last + 1):
        d = calendar.day_of(number)
        begin, next_start = next_start, start(calendar.day_of(number + 1))
        month = (d.year, d.month)
        if month not in lengths:
            after = date(d.year + d.month // 12, d.month % 12 + 1, 1)
            lengths[month] = start(after) - start(date(d.year, d.month, 1))
        if (d.year, 0) not in lengths:
            lengths[(d.year, 0)] = start(date(d.year + 1, 1, 1)) - start(date(d.year, 1, 1))
        out.days.append(number)
        out.starts.append(begin)
        out.ends.append(next_start)
        out.months.append(d.year * 12 + d.month - 1)
        out.month_lengths.append(lengths[month])
        out.years.append(d.year)
        out.year_lengths.append(lengths[(d.year, 0)])
        out.bits.append(d.day - 1)
        out.overlaps.append(max(0, min(next_start, window.until_us) - max(begin, window.since_us)))
    return out


def stored_part(con: duckdb.DuckDBPyConnection, window: Window) -> Window | None:
    """The part of the window where requests are stored, two days to spare on each side (whole
    local days lie inside it, so their overlaps with it are their overlaps with the window); None
    when the window holds none. Plan days are only ever looked for there: a window from year 1
    to 9999 must not make a calendar of millions of days."""
    row = con.execute("SELECT min(hour), max(hour) FROM rollup_hour").fetchone()
    if row is None or row[0] is None:
        return None
    first = max(window.since_us, int(row[0]) * US_PER_HOUR - 2 * US_PER_DAY)
    last = min(window.until_us, (int(row[1]) + 1) * US_PER_HOUR + 2 * US_PER_DAY)
    return Window(from_micros(first), from_micros(last), window.tz) if first < last else None


def full_days(cal: DayTable) -> dict[int, int]:
    """Per month index, the bit mask of its days that lie whole in the window and last 24 hours."""
    full: dict[int, int] = {}
    for i, ov in enumerate(cal.overlaps):
        mi = cal.month_index(i)
        full[mi] = full.get(mi, 0) | ((1 << cal.bits[i]) if ov == US_PER_DAY else 0)
    return full


def overlap_sql(cal: DayTable, mask: str, month: str, full: str) -> str:
    """SQL for the overlap with the window of the days of month index ``month`` whose bits are
    set in ``mask``: the whole 24-hour days (bit mask ``full``) counted by bit_count, the others
    (the window's ends, daylight-saving days) one by one."""
    special: dict[int, list[str]] = {}
    for i, ov in enumerate(cal.overlaps):
        if 0 < ov != US_PER_DAY:
            term = f"CASE WHEN ({mask} >> {cal.bits[i]}) & 1 = 1 THEN {ov} ELSE 0 END"
            special.setdefault(cal.month_index(i), []).append(term)
    cases = " ".join(f"WHEN {mi} THEN {' + '.join(terms)}" for mi, terms in sorted(special.items()))
    extra = f" + (CASE {month} {cases} ELSE 0 END)" if cases else ""
    return f"(bit_count({mask} & {full})::BIGINT * {US_PER_DAY}{extra})"
