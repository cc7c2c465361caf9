"""Statements: one calendar month per user as line items per model and bucket, cost, revenue, margin.

A statement reads the ``requests`` rows of the month (``calendar.period`` in the zone asked for)
and reconciles to the nano-dollar with ``users()`` and ``totals()`` of the same window: a user's
line amounts sum to their cost_usd, and the users' costs to the statement's total.

Line buckets. A computed or custom cost is stored split by bucket (``requests.<bucket>_cost_usd``,
summing exactly to cost_usd), so its lines are:
- ``input`` (uncached input tokens), ``cache_read``, ``cache_write``, ``output`` (without
  reasoning), ``reasoning``: count in tokens, unit price in USD per million tokens at the full
  rate of the bucket (a cache-read token costs what it costs, not a discount on input);
- ``request``: a price's per-request fee, counted in requests (only when the fee is not 0).
Token counts are those the price was applied to: input includes cache and output reasoning
(OTel totals), and a cache or reasoning count above its total is cut to it, as pricing does.
Other requests: ``total`` (a cost computed before schema 11 stored the split: one line per model
and its cost), ``reported`` (the cost the span reported), ``unpriced`` (an unknown model: no
amount) and ``no_usage`` (no token counts: no amount), each counted in requests.

Unit price: amount / count. It is ``exact`` when every request of the line was charged at that
one rate (compared exactly, as reduced fractions), else ``average`` (the price changed within the
month, or costs rounded to the nano-dollar per request made the rates differ). It is shown with at
most 18 decimals, rounded half to even beyond them.

Revenue comes from ``revenue.revenue_by_user_id``, plan days in the month's zone: without any
revenue source revenue and margin are null; with one, a user without revenue has 0. Users with
revenue but no request in the month are listed, without line items, those no request ever named
too.

Bounds: one page of at most ``MAX_PAGE`` users (``limit``, default 1000), sorted by user id with
the null user (requests that named none) last; ``totals`` covers every user of the month, so an
all-users statement is read in full page by page (``offset``).

Reads: one read-only snapshot. All users: one GROUP BY user over the month's rows (ids, costs,
totals), one for the page's lines. One user: one GROUP BY over their rows, read only on the runs
of UTC days the daily rollup has them on when there are at most ``MAX_RUNS``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

import duckdb

from user_metrics.errors import InvalidInput, NotFound
from user_metrics.query import calendar, scope
from user_metrics.query.results import Statement, StatementLine, StatementTotals, UserStatement
from user_metrics.query.revenue import has_records, revenue_by_user_id
from user_metrics.query.scope import MAX_PAGE, fetch_dicts, user_key
from user_metrics.query.window import Window, from_micros

DEFAULT_LIMIT = 1000
MAX_RUNS = 16  # runs of days one user's statement reads on its own (one scan each); more: the whole month
_MONTH = re.compile(r"^\d{4}-\d{2}$")
_MONTHS = ("this_month", "last_month")
NANO = Decimal("1e-9")
_PLACES = 18

# bucket -> (token count of a request row as pricing counted it, stored amount column)
_IN = "coalesce(input_tokens, 0)"
_OUT = "coalesce(output_tokens, 0)"
_CR = f"least(coalesce(cache_read_tokens, 0), {_IN})"
_CW = f"least(coalesce(cache_write_tokens, 0), {_IN} - {_CR})"
_RS = f"least(coalesce(reasoning_tokens, 0), {_OUT})"
BUCKETS: dict[str, tuple[str, str]] = {
    "input": (f"{_IN} - {_CR} - {_CW}", "input_cost_usd"),
    "cache_read": (_CR, "cache_read_cost_usd"),
    "cache_write": (_CW, "cache_write_cost_usd"),
    "output": (f"{_OUT} - {_RS}", "output_cost_usd"),
    "reasoning": (_RS, "reasoning_cost_usd"),
    "request": ("1", "request_cost_usd"),
}
# What a row is: split by bucket, a cost without its split (before schema 11), reported, or none.
_KIND = """CASE WHEN input_cost_usd IS NOT NULL THEN 'split'
    WHEN cost_usd IS NULL THEN cost_source
    WHEN cost_source = 'reported' THEN 'reported' ELSE 'total' END"""


def statement(
    con: duckdb.DuckDBPyConnection,
    month: str,
    user_id: str | None = None,
    *,
    tz: str | None = None,
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
    now: Callable[[], datetime] = scope.now,
) -> Statement:
    """The statement of ``month`` (``YYYY-MM``, ``this_month`` to date, ``last_month``) in ``tz``
    (None: UTC): one user (NotFound if never stored) or a page of every user of the month."""
    name = month.strip() if isinstance(month, str) else ""
    if (
        not (_MONTH.match(name) and 1 <= int(name[:4]) <= 9998 and 1 <= int(name[5:]) <= 12)
        and name not in _MONTHS
    ):
        raise InvalidInput(
            f"month: {month!r} is no month; write YYYY-MM (e.g. 2026-11), this_month or last_month"
        )
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit: must be between 1 and {MAX_PAGE}, got {limit}")
    if offset < 0:
        raise InvalidInput(f"offset: must be 0 or more, got {offset}")
    zone = calendar.zone_name(tz)
    clock = now()
    bounds = calendar.period(name, clock, zone)
    assert bounds is not None  # a month or a month's name
    # One snapshot: rows committed between the statement's reads must not make lines and costs differ.
    con.execute("BEGIN TRANSACTION READ ONLY")
    try:
        return _read(con, name, zone, Window(*bounds, zone), user_id, limit, offset)
    finally:
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")


def _read(
    con: duckdb.DuckDBPyConnection,
    name: str,
    zone: str,
    window: Window,
    user_id: str | None,
    limit: int,
    offset: int,
) -> Statement:
    params: dict[str, Any] = {"since": window.since, "until": window.until}
    where = "start_time >= $since AND start_time < $until"
    source = "requests"
    one = user_id is not None
    key: int | None = 0
    if one:
        try:
            key = user_key(con, user_id)
        except NotFound:
            if user_id is None or not has_records(con, user_id):
                raise
            key = None  # revenue was imported for a user no request named yet: no rows to read
    lines: dict[str | None, list[StatementLine]] = {}
    active: dict[str | None, dict[str, Any]] = {}
    if one and key is not None:  # the user's sums come with their lines: one read of their rows
        params["uid"] = user_id
        source, where = _days_of(con, key, window, params), "user_id = $uid"
        lines, active = _lines(con, where, params, [user_id], source)
    elif not one:
        active = {
            r["user_id"]: r
            for r in fetch_dicts(
                con,
                f"""SELECT user_id, count(*) AS requests, sum(cost_usd) AS cost, count(cost_usd) AS priced
                    FROM requests WHERE {where} GROUP BY user_id""",
                params,
            )
        }
    if one:  # only this user's (key None: a user known only from revenue)
        only = [] if key is None else [key]
        revenue = revenue_by_user_id(con, window, keys=only, ids=[user_id or ""])
    else:
        revenue = revenue_by_user_id(con, window)
    ids = sorted({*active, *(revenue or {})} | ({user_id} if one else set()), key=_order)
    page = ids[offset : offset + limit]
    if not one:
        lines = _lines(con, where, params, page)[0] if page else {}
    users = []
    for uid in page:
        row = active.get(uid)
        cost = row["cost"] if row and row["priced"] else None
        earned = None if revenue is None else revenue.get(uid, Decimal(0))
        users.append(
            UserStatement(
                uid,
                int(row["requests"]) if row else 0,
                tuple(lines.get(uid, ())),
                cost,
                earned,
                _margin(earned, cost),
            )
        )
    cost_total = sum((r["cost"] for r in active.values() if r["priced"]), Decimal(0))
    earned_total = None if revenue is None else sum(revenue.values(), Decimal(0))
    totals = StatementTotals(
        len(ids),
        sum(int(r["requests"]) for r in active.values()),
        cost_total,
        earned_total,
        _margin(earned_total, cost_total),
    )
    return Statement(name, zone, window.since, window.until, tuple(users), offset, limit, totals)


def _days_of(con: duckdb.DuckDBPyConnection, key: int, window: Window, params: dict[str, Any]) -> str:
    """Where one user's rows of the window are: the runs of UTC days the daily rollup has them
    on (clipped to the window), so the scan skips the rest; the whole window past ``MAX_RUNS``."""
    first, last = window.since_us // calendar.US_PER_DAY, (window.until_us - 1) // calendar.US_PER_DAY
    days = [
        int(d)
        for (d,) in con.execute(
            "SELECT DISTINCT day FROM rollup_user_day WHERE user_key = $k AND day BETWEEN $a AND $b "
            "ORDER BY day",
            {"k": key, "a": first, "b": last},
        ).fetchall()
    ]
    runs: list[list[int]] = []
    for d in days:
        if runs and runs[-1][1] == d:
            runs[-1][1] = d + 1
        else:
            runs.append([d, d + 1])
    if len(runs) > MAX_RUNS:
        return "(SELECT * FROM requests WHERE start_time >= $since AND start_time < $until)"
    # One scan a run: a plain time range lets DuckDB skip the other row groups (an OR of ranges
    # does not).
    scans = ["SELECT * FROM requests WHERE FALSE"]
    for i, (a, b) in enumerate(runs):
        params[f"s{i}"] = from_micros(max(a * calendar.US_PER_DAY, window.since_us))
        params[f"u{i}"] = from_micros(min(b * calendar.US_PER_DAY, window.until_us))
        scans.append(f"SELECT * FROM requests WHERE start_time >= $s{i} AND start_time < $u{i}")
    del params["since"], params["until"]
    return f"({' UNION ALL '.join(scans)})"


def _order(user_id: str | None) -> tuple[bool, str]:
    return (user_id is None, user_id or "")


def _margin(revenue: Decimal | None, cost: Decimal | None) -> Decimal | None:
    return None if revenue is None else revenue - (cost or Decimal(0))


def _lines(
    con: duckdb.DuckDBPyConnection,
    where: str,
    params: dict[str, Any],
    page: Sequence[str | None],
    source: str = "requests",
) -> tuple[dict[str | None, list[StatementLine]], dict[str | None, dict[str, Any]]]:
    """The line items of the users of ``page`` and their requests, cost and priced groups: one
    GROUP BY over their rows of the month."""
    named = [i for i in page if i is not None]
    params = {**params, "page": named}
    either = ["user_id IN (SELECT unnest($page::VARCHAR[]))"] + (["user_id IS NULL"] if None in page else [])
    columns, nanos, reduced, sums = [], [], [], []
    for bucket, (count, amount) in BUCKETS.items():
        columns += [f"({count})::BIGINT AS n_{bucket}", f"{amount} AS a_{bucket}"]
        nanos.append(f"(a_{bucket} * 1000000000)::BIGINT AS i_{bucket}")
        # each row's rate amount/count as a reduced fraction p/q (NULL without tokens)
        g = f"gcd(i_{bucket}, n_{bucket})"
        reduced += [
            f"CASE WHEN n_{bucket} > 0 THEN i_{bucket} // {g} END AS p_{bucket}",
            f"CASE WHEN n_{bucket} > 0 THEN n_{bucket} // {g} END AS q_{bucket}",
        ]
        sums += [
            f"sum(n_{bucket}) AS n_{bucket}",
            f"sum(a_{bucket}) AS a_{bucket}",
            # every row at one rate: the reduced fractions are all the same
            f"min(p_{bucket}) = max(p_{bucket}) AND min(q_{bucket}) = max(q_{bucket}) AS x_{bucket}",
        ]
    rows = fetch_dicts(
        con,
        f"""SELECT user_id, model, provider, kind, count(*) AS requests, sum(cost_usd) AS cost,
                   {", ".join(sums)}
            FROM (SELECT *, {", ".join(reduced)}
                  FROM (SELECT *, {", ".join(nanos)}
                        FROM (SELECT user_id, coalesce(request_model, response_model) AS model, provider,
                                     {_KIND} AS kind, cost_usd, {", ".join(columns)}
                              FROM {source} WHERE {where} AND ({" OR ".join(either)}))))
            GROUP BY user_id, model, provider, kind
            ORDER BY model NULLS LAST, provider NULLS LAST,
                     list_position(['split', 'total', 'reported', 'unpriced'], kind) NULLS LAST, kind""",
        params,
    )
    out: dict[str | None, list[StatementLine]] = {}
    per_user: dict[str | None, dict[str, Any]] = {}
    for row in rows:
        out.setdefault(row["user_id"], []).extend(_line_items(row))
        user = per_user.setdefault(row["user_id"], {"requests": 0, "cost": Decimal(0), "priced": 0})
        user["requests"] += row["requests"]
        if row["cost"] is not None:
            user["cost"] += row["cost"]
            user["priced"] += 1
    return out, per_user


def _line_items(row: dict[str, Any]) -> list[StatementLine]:
    """The lines of one (user, model, provider, kind) group."""
    model, provider, kind = row["model"], row["provider"], row["kind"]
    if kind != "split":
        amount = row["cost"] if kind in ("total", "reported") else None
        return [StatementLine(model, provider, kind, int(row["requests"]), "request", None, None, amount)]
    lines = []
    for bucket in BUCKETS:
        count, amount = int(row[f"n_{bucket}"]), row[f"a_{bucket}"]
        if bucket == "request":
            if not amount:
                continue
            count = int(row["requests"])
        elif count == 0 and not amount:
            continue
        unit = "request" if bucket == "request" else "mtok"
        price = _unit_price(amount, count, 1 if unit == "request" else 1_000_000) if count else None
        basis = None if price is None else "exact" if row[f"x_{bucket}"] else "average"
        lines.append(StatementLine(model, provider, bucket, count, unit, price, basis, amount))
    return lines


def _unit_price(amount: Decimal, count: int, per: int) -> Decimal:
    """amount / count x per, exactly when it has at most 18 decimals, else rounded half to even."""
    exact = Fraction(amount) * per / count
    value = Decimal(exact.numerator) / Decimal(exact.denominator)  # 28 significant digits
    if Fraction(value) != exact or value.as_tuple().exponent < -_PLACES:  # type: ignore[operator]
        value = _rounded(exact)
    value = value.normalize()
    return value.quantize(Decimal(1)) if value.as_tuple().exponent > 0 else value  # type: ignore[operator]


def _rounded(value: Fraction) -> Decimal:
    scaled = value * 10**_PLACES
    q, r = divmod(scaled.numerator, scaled.denominator)
    if r * 2 > scaled.denominator or (r * 2 == scaled.denominator and q % 2 == 1):
        q += 1
    return Decimal(q).scaleb(-_PLACES)
