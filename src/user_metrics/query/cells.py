"""How the query layer reads a window: rollup cells for the whole buckets, request rows for the rest.

A window [since, until) is cut into the whole UTC days inside it (daily rollup), the whole hours
in the partial days at its ends (hourly rollup), and the partial hours at its very ends (the
``requests`` rows, aggregated on the fly). Every piece yields the same columns, so a query sums
over their UNION ALL and the answer is exact for any instant.

A window asked in a time zone is still two UTC instants (``Window.tz`` names the zone), so the
same cut serves it. The zone matters in two places: ``active_days_sql`` reads each cell's first
and last request on the local calendar, and ``bucket_cells`` cuts each local bucket of a time
series on its own, so that no cell straddles two buckets.

Where rollup cells cannot answer exactly (a filter or a breakdown meets values folded into
``(other)``, see ``dims.py``), the whole window is read from ``requests`` rows instead:
``folding.py`` says when.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import duckdb

from user_metrics.query import calendar
from user_metrics.query import whole_days as cache
from user_metrics.query.window import Filters, Window, from_micros
from user_metrics.store.rollups import (
    LATENCY_BUCKET_SQL,
    METRIC_NAMES,
    METRICS,
    US_PER_DAY,
    US_PER_HOUR,
    aggregate,
)


@dataclass(frozen=True)
class Level:
    """A rollup table and the width of its time buckets."""

    table: str
    time_column: str
    unit_us: int
    per_user: bool


USER_DAY = Level("rollup_user_day", "day", US_PER_DAY, per_user=True)
USER_HOUR = Level("rollup_user_hour", "hour", US_PER_HOUR, per_user=True)
APP_HOUR = Level("rollup_hour", "hour", US_PER_HOUR, per_user=False)
LATENCY_DAY = Level("rollup_latency_day", "day", US_PER_DAY, per_user=True)
PER_USER = (USER_DAY, USER_HOUR)


def decompose(
    since: int, until: int, levels: Sequence[Level], avoid: Collection[int] = ()
) -> list[tuple[Level | None, int, int]]:
    """[since, until) in microseconds as (level, first, last) bucket ranges; level None: raw rows.

    ``avoid``: UTC days (day numbers) the daily levels leave to the finer ones (``crowded``).
    """
    if since >= until:
        return []
    if not levels:
        return [(None, since, until)]
    level, rest = levels[0], levels[1:]
    first, last = -(-since // level.unit_us), until // level.unit_us
    if first >= last:
        return decompose(since, until, rest, avoid)
    if level.unit_us == US_PER_DAY and (skip := [d for d in avoid if first <= d < last]):
        d = min(skip)
        return [
            *decompose(since, d * US_PER_DAY, levels, avoid),
            *decompose(d * US_PER_DAY, (d + 1) * US_PER_DAY, rest, avoid),
            *decompose((d + 1) * US_PER_DAY, until, levels, avoid),
        ]
    return [
        *decompose(since, first * level.unit_us, rest, avoid),
        (level, first, last),
        *decompose(last * level.unit_us, until, rest, avoid),
    ]


def _ints(values: Sequence[int]) -> str:
    return ", ".join(str(int(v)) for v in values) or "NULL"


class CellSql:
    """Builds the cell relations of one statement, collecting its named parameters.

    ``rows_only``: the filters need the request rows of the whole window (``served_by_rollups``).
    """

    def __init__(self, window: Window, filters: Filters, rows_only: bool = False) -> None:
        self.window = window
        self.filters = filters
        self.rows_only = rows_only
        self.params: dict[str, Any] = {}
        self.predicate = ""
        since, until = window.since_us, window.until_us
        self.offsets = calendar.offsets(window.tz, since, until)
        # UTC days holding a whole local day (and so touching three): served from hour cells.
        self.crowded = () if self.utc else tuple(calendar.crowded_utc_days(since, until, window.tz))
        self.whole: cache.Ref | None = None
        self.begin()

    def use_whole_days(self, con: duckdb.DuckDBPyConnection) -> None:
        """Let ``cells(whole_days=True)`` read the window's whole UTC days from the per-user sums
        cached for them (``whole_days.py``), when ``con`` carries a cache and the window qualifies."""
        found = cache.cache_of(con)
        if found is None or self.rows_only or not self.utc:
            return
        first, last = -(-self.window.since_us // US_PER_DAY), self.window.until_us // US_PER_DAY
        if cache.MIN_DAYS <= last - first <= cache.MAX_DAYS:
            self.whole = found.ref(con, first, last)

    @contextlib.contextmanager
    def narrowed(self, con: duckdb.DuckDBPyConnection, users: Sequence[int]) -> Iterator[None]:
        """Within the block, the cached whole days hold only these users (``Ref.narrow``)."""
        whole = self.whole
        if whole is not None:
            self.whole = whole.narrow(con, users)
        try:
            yield
        finally:
            self.whole = whole

    @property
    def utc(self) -> bool:
        """Whether local days are UTC days in this window (the zone's offset is 0 throughout)."""
        return self.offsets.offsets == (0,) * len(self.offsets.offsets)

    def active_days_sql(self) -> str:
        """An aggregate over cells: the distinct local days on which requests were made.

        A cell (a UTC day outside ``crowded``, an hour, or a group of request rows in either)
        crosses at most one local midnight, so its requests touched exactly the local days of
        its first and its last request.
        """
        if self.utc:  # cells of unit US_PER_DAY: t is the UTC (= local) day
            if self.whole is not None:  # cached whole days carry a mask of their days instead
                return "(count(DISTINCT t) + coalesce(bit_count(bit_or(mask)), 0))"
            return "count(DISTINCT t)"
        lo = self.offsets.local(self.window.since_us) // US_PER_DAY
        hi = self.offsets.local(self.window.until_us - 1) // US_PER_DAY
        first, last = self.offsets.local_day_sql("first_us"), self.offsets.local_day_sql("last_us")
        if hi - lo < 63:  # a bit per local day of the window in one BIGINT: cheaper than a bitstring
            return f"bit_count(bit_or((1::BIGINT << ({first} - {lo})) | (1::BIGINT << ({last} - {lo}))))"
        return f"bit_count(bitstring_agg({first}, {lo}, {hi}) | bitstring_agg({last}, {lo}, {hi}))"

    def begin(self, **params: Any) -> CellSql:
        """Start the next statement: DuckDB wants exactly the parameters a statement uses."""
        self.params = dict(params)
        self.predicate = self.filters.predicate(self.params)
        return self

    def _rollup(self, level: Level | None, first: int, last: int, users: Sequence[int] | None) -> str:
        """The WHERE clause of one rollup range (level None: cached whole days, any time)."""
        where = ["TRUE"]
        if level is not None:
            where = [f"c.{level.time_column} >= {first}", f"c.{level.time_column} < {last}"]
        if users is not None:
            one = len(users) == 1
            where.append(f"c.user_key = {int(users[0])}" if one else f"c.user_key IN ({_ints(users)})")
        return " AND ".join(where)

    def _raw(self, start_us: int, end_us: int, users: Sequence[int] | None) -> str:
        """The request rows of one range that pass the filters (and belong to the users)."""
        return self._raw_spans([(start_us, end_us)], users)

    def _raw_spans(
        self, spans: Sequence[tuple[int, int]], users: Sequence[int] | None, columns: str = "*"
    ) -> str:
        """The request rows of these ranges that pass the filters (and belong to the users);
        ``columns``: the ones each scan reads (DuckDB reads them all below a UNION ALL of ``*``)."""
        scans = []
        for start_us, end_us in spans:
            n = len(self.params)
            self.params[f"a{n}"] = from_micros(start_us)
            self.params[f"b{n}"] = from_micros(end_us)
            scans.append(f"SELECT {columns} FROM requests WHERE start_time >= $a{n} AND start_time < $b{n}")
        conditions = [self.predicate]
        if users is not None:
            named = [k for k in users if k != 0]
            either = ["user_id IS NULL"] if 0 in users else []
            if len(named) == 1:
                either.append(f"user_id = (SELECT user_id FROM users WHERE user_key = {int(named[0])})")
            elif named:
                either.append(f"user_id IN (SELECT user_id FROM users WHERE user_key IN ({_ints(named)}))")
            conditions.append("(" + " OR ".join(either) + ")")
        return f"({' UNION ALL '.join(scans)}) WHERE {' AND '.join(conditions)}"

    @staticmethod
    def _user_key(users: Sequence[int] | None, by_user: bool) -> tuple[str, str]:
        """How a raw piece gets its user key: (select expression, join), cheapest first."""
        if not by_user:
            return "NULL::BIGINT", ""
        if users is not None and len(users) == 1:
            return f"{int(users[0])}::BIGINT", ""  # the rows were already filtered to this user
        known = "users" if users is None else f"(SELECT * FROM users WHERE user_key IN ({_ints(users)}))"
        return "coalesce(u.user_key, 0)", f" LEFT JOIN {known} AS u ON u.user_id = r.user_id"

    def cells(
        self,
        levels: Sequence[Level],
        unit_us: int,
        users: Sequence[int] | None = None,
        extra: dict[str, tuple[str, str]] | None = None,
        by_user: bool = True,
        rows_only: bool = False,
        whole_days: bool = False,
    ) -> str:
        """Rows (user_key, t, extra..., metrics), t in ``unit_us`` buckets; their sums are exact.

        ``extra`` names more columns as (expression over the rollup alias c or ``dims`` alias d,
        expression over a request row), e.g. the model or a property's value. ``by_user`` False
        leaves user_key NULL, which spares the raw pieces a lookup in ``users``. ``rows_only``
        reads request rows for the whole window (for a breakdown by folded values). ``whole_days``:
        every row also has ``mask`` (``active_days_sql``), and the whole UTC days come from the
        cache when ``use_whole_days`` found an entry (t is NULL on its rows).
        """
        extra = extra or {}
        if rows_only or self.rows_only:
            levels = ()
        whole = self.whole if whole_days and levels and unit_us == US_PER_DAY else None
        mask = ", NULL::BIGINT AS mask" if whole_days else ""
        parts = []
        pieces = decompose(self.window.since_us, self.window.until_us, levels, self.crowded)
        for level, first, last in pieces:
            if level is not None:
                part = functools.partial(
                    self._level_part, users=users, extra=extra, by_user=by_user, unit=unit_us
                )
                if whole is not None and level == USER_DAY and (first, last) == (whole.first, whole.last):
                    # Exactly one of the two branches has rows, decided in this statement's snapshot.
                    self.params["wd_fp"] = whole.fingerprint
                    same = f"{cache.fingerprint_sql(first, last)} = $wd_fp"
                    parts.append(part(None, whole.name, same, first, last, ", c.mask"))
                    parts.append(part(level, level.table, f"NOT ({same})", first, last, mask))
                else:
                    parts.append(part(level, level.table, "TRUE", first, last, mask))
            else:
                # Aggregate the rows first, then look up the few user keys the groups need.
                inner_cols = "".join(f"{raw_expr} AS {name}, " for name, (_, raw_expr) in extra.items())
                sums = ", ".join(f"{_cast(n, aggregate(n, expr))} AS {n}" for n, _, expr in METRICS)
                outer = "".join(f"r.{name}, " for name in extra) + ", ".join(f"r.{m}" for m in METRIC_NAMES)
                user_col, join = self._user_key(users, by_user)
                # A group must cross at most one local midnight (active_days_sql): on a crowded
                # UTC day, request rows are grouped by the hour too.
                hour = self._crowded_in(first, last) and unit_us > US_PER_HOUR
                inner_cols += f"epoch_us(start_time) // {US_PER_HOUR} AS hour_of_row, " if hour else ""
                parts.append(
                    f"SELECT {user_col} AS user_key, r.t, {outer}{mask} FROM ("
                    f"SELECT user_id, epoch_us(start_time) // {unit_us} AS t, {inner_cols}{sums} "
                    f"FROM {self._raw(first, last, users)} GROUP BY ALL) AS r{join}"
                )
        return " UNION ALL ".join(f"({p})" for p in parts)

    def _level_part(
        self,
        level: Level | None,
        table: str,
        condition: str,
        first: int,
        last: int,
        mask: str,
        *,
        users: Sequence[int] | None,
        extra: dict[str, tuple[str, str]],
        by_user: bool,
        unit: int,
    ) -> str:
        """One part of ``cells``: the rollup cells of ``level`` in [first, last) that pass
        ``condition`` and the filters (level None: the cached whole days in ``table``, t NULL)."""
        where = f"{self._rollup(level, first, last, users)} AND {condition}"
        cols = "".join(f"{rollup_expr} AS {name}, " for name, (rollup_expr, _) in extra.items())
        if any("d." in rollup_expr for rollup_expr, _ in extra.values()):
            join, where = " JOIN dims AS d USING (dims_id)", f"{where} AND {self.predicate}"
        else:
            join = ""
            if self.filters.active:
                where += f" AND c.dims_id IN (SELECT dims_id FROM dims WHERE {self.predicate})"
        user_col = "c.user_key" if (level is None or level.per_user) and by_user else "NULL::BIGINT"
        t = "NULL::BIGINT" if level is None else f"c.{level.time_column} // {unit // level.unit_us}"
        metrics = ", ".join(f"c.{m}" for m in METRIC_NAMES)
        select = f"SELECT {user_col} AS user_key, {t} AS t, {cols}{metrics}{mask}"
        return f"{select} FROM {table} AS c{join} WHERE {where}"

    def _crowded_in(self, since_us: int, until_us: int) -> bool:
        return any(since_us < (d + 1) * US_PER_DAY and d * US_PER_DAY < until_us for d in self.crowded)

    def bucket_cells(
        self,
        levels: Sequence[Level],
        starts: Sequence[int],
        users: Sequence[int] | None = None,
        by_user: bool = True,
    ) -> str:
        """Rows (user_key, t, metrics) where t numbers the bucket [starts[t], starts[t + 1]) the
        row's requests lie in (``calendar.bucket_starts``); their sums per t are exact.

        Each bucket (cut to the window) is decomposed on its own, so no cell straddles a bucket
        boundary. One part per level joins its cells to the (first, last, bucket) ranges of that
        level (an ASOF join on the cell's time); the request rows of every raw piece are read in
        one part, contiguous pieces as one scan, and labelled by the bucket start they follow.
        """
        if self.rows_only:
            levels = ()
        since, until = self.window.since_us, self.window.until_us
        ranges: dict[Level, list[tuple[int, int, int]]] = {}
        spans: list[list[int]] = []
        labels: list[int] = []
        for k, (a, b) in enumerate(pairwise(starts)):
            for level, first, last in decompose(max(a, since), min(b, until), levels):
                if level is not None:
                    ranges.setdefault(level, []).append((first, last, k))
                    continue
                if not labels or labels[-1] != k:
                    labels.append(k)
                if spans and spans[-1][1] == first:
                    spans[-1][1] = last
                else:
                    spans.append([first, last])
        metrics = ", ".join(f"c.{m}" for m in METRIC_NAMES)
        parts = []
        # A scan per run of contiguous cuts: a day series reads the hours of its partial days only.
        for level, run in ((level, run) for level, cuts in ranges.items() for run in _runs(cuts)):
            where = self._rollup(level, run[0][0], run[-1][1], users)
            if self.filters.active:
                where += f" AND c.dims_id IN (SELECT dims_id FROM dims WHERE {self.predicate})"
            user_col = "c.user_key" if level.per_user and by_user else "NULL::BIGINT"
            values = ", ".join(f"({a}, {b}, {k})" for a, b, k in run)
            time = f"c.{level.time_column}"
            parts.append(
                f"SELECT {user_col} AS user_key, b.k AS t, {metrics} "
                f"FROM (SELECT * FROM {level.table} AS c WHERE {where}) AS c "
                f"ASOF JOIN (VALUES {values}) AS b(lo, hi, k) ON {time} >= b.lo WHERE {time} < b.hi"
            )
        if spans:
            sums = ", ".join(f"{_cast(n, aggregate(n, expr))} AS {n}" for n, _, expr in METRICS)
            outer = ", ".join(f"r.{m}" for m in METRIC_NAMES)
            user_col, join = self._user_key(users, by_user)
            values = ", ".join(f"({starts[k]}, {k})" for k in labels)
            columns = _RAW_COLUMNS + (", properties" if self.filters.properties else "")
            rows = self._raw_spans([(a, b) for a, b in spans], users, columns)
            parts.append(
                f"SELECT {user_col} AS user_key, r.t, {outer} FROM ("
                f"SELECT q.user_id, b.k AS t, {sums} FROM (SELECT * FROM {rows}) AS q "
                f"ASOF JOIN (VALUES {values}) AS b(s, k) ON epoch_us(q.start_time) >= b.s "
                f"GROUP BY ALL) AS r{join}"
            )
        return " UNION ALL ".join(f"({p})" for p in parts)

    def latency_cells(self, users: Sequence[int] | None) -> str:
        """Rows (user_key, bucket, n): request counts per logarithmic latency bucket."""
        parts = []
        levels = () if self.rows_only else (LATENCY_DAY,)
        whole = None if self.filters.active else self.whole  # cached per user, not per dims
        for level, first, last in decompose(self.window.since_us, self.window.until_us, levels):
            if level is not None:
                where = self._rollup(level, first, last, users)
                if self.filters.active:
                    where += f" AND c.dims_id IN (SELECT dims_id FROM dims WHERE {self.predicate})"
                if whole is not None and (first, last) == (whole.first, whole.last):
                    self.params["wd_fp"] = whole.fingerprint  # as in cells: one branch has rows
                    same = f"{cache.fingerprint_sql(first, last)} = $wd_fp"
                    cached = f"{self._rollup(None, first, last, users)} AND {same}"
                    parts.append(f"SELECT c.user_key, c.bucket, c.n FROM {whole.latency} AS c WHERE {cached}")
                    where += f" AND NOT ({same})"
                parts.append(f"SELECT c.user_key, c.bucket, c.n FROM rollup_latency_day AS c WHERE {where}")
            else:
                user_col, join = self._user_key(users, True)
                parts.append(
                    f"SELECT {user_col} AS user_key, r.bucket, r.n FROM ("
                    f"SELECT user_id, {LATENCY_BUCKET_SQL} AS bucket, count(*) AS n "
                    f"FROM {self._raw(first, last, users)} AND duration_ms IS NOT NULL "
                    f"GROUP BY ALL) AS r{join}"
                )
        return " UNION ALL ".join(f"({p})" for p in parts)


# What a raw piece of a bucketed series reads: the metrics' inputs, the user, the filters' columns.
_RAW_COLUMNS = (
    "start_time, user_id, status, cost_source, cost_usd, input_tokens, output_tokens, "
    "cache_read_tokens, cache_write_tokens, reasoning_tokens, duration_ms, request_model, "
    "response_model, service_name, environment"
)


def _cast(name: str, expr: str) -> str:
    # Keep the rollups' column types: a HUGEINT or DECIMAL(38) in one branch of the UNION would
    # widen every branch, and sums over wide types are several times slower.
    kind = {n: k for n, k, _ in METRICS}[name]
    return f"({expr})::{kind}"


def _runs(cuts: list[tuple[int, int, int]]) -> list[list[tuple[int, int, int]]]:
    """Cuts (first, last, bucket) in order, grouped into runs of contiguous ones."""
    runs: list[list[tuple[int, int, int]]] = []
    for cut in cuts:
        if runs and runs[-1][-1][1] == cut[0]:
            runs[-1].append(cut)
        else:
            runs.append([cut])
    return runs
