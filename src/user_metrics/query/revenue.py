"""Revenue per user in a window, exact to the nano-dollar: plan prices prorated, imported records.

Two sources, both optional (README "Revenue and margins" states the rules):

- Plan prices (``plan_prices``): a user is on plan v on a local day (the window's zone) when one
  of their requests that day carried the plan property = v; of several priced values on a day
  the dearest counts (the highest price per micro of that day's month, or year). Each plan day
  counts for its overlap with the window, and per (user, local month or year, plan) revenue is
  price x (plan-day micros in the window) / (micros of that month or year), rounded half to
  even to the nano-dollar once. A day that an imported period of the user overlaps gets none.
- Imported records (``revenue``): amount x overlap(period, window) / period length, rounded
  half to even per record; an instant counts whole when it lies in the window.

Everything is exact integer arithmetic: nano-dollars times microseconds in HUGEINT; a rounded
quotient's DOUBLE estimate is only a first guess that integer arithmetic corrects (``rounded_sql``).
Which days a user was on a plan comes from the rollup cells (their first and last request), not
from ``requests``: a UTC day or hour touches at most two local days, save the rare UTC days that
hold a whole short local day (``calendar.crowded_utc_days``), which are read from request rows.
When the plan property has folded values into ``(other)`` (``dims.py``), every plan day is read
from request rows, since a folded cell cannot name its plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import duckdb

from user_metrics.query import calendar, revenue_days
from user_metrics.query.calendar import US_PER_DAY
from user_metrics.query.cells import PER_USER, CellSql
from user_metrics.query.folding import folded
from user_metrics.query.window import Filters, Window, from_micros
from user_metrics.store import dims

NANOS = 10**9


def nanos_sql(col: str) -> str:
    """SQL for the nano-dollars (BIGINT) of a DECIMAL(18, 9) value, exactly: its whole dollars
    and its fraction apart, in 64-bit arithmetic (a DECIMAL(38, 9) -> HUGEINT cast divides in
    software, some 50 times slower)."""
    d = f"({col})::DECIMAL(18, 9)"
    return f"(trunc({d})::BIGINT * {NANOS} + (({d} - trunc({d})) * {NANOS})::BIGINT)"


def half_even_sql(n: str, d: str) -> str:
    """SQL for n / d rounded half to even (HUGEINT n of any sign, d > 0; both plain columns)."""
    q, r = f"(abs({n}) // {d})", f"(abs({n}) % {d})"
    up = f"CASE WHEN 2 * {r} > {d} OR (2 * {r} = {d} AND {q} % 2 = 1) THEN 1 ELSE 0 END"
    return f"(CASE WHEN {n} < 0 THEN -1 ELSE 1 END * ({q} + {up}))"


# Below this, quotients and remainders are BIGINT arithmetic (2^62).
_SMALL = 4611686018427387904


def rounded_sql(source: str, cols: str, n: str, d: str) -> str:
    """SELECT ``cols``, nanos FROM ``source``: nanos = n / d rounded half to even (n any sign, d a
    BIGINT > 0), exactly, without HUGEINT division (a software loop in DuckDB) for the usual sizes:
    a DOUBLE estimate of the quotient, the remainder of that estimate computed exactly (HUGEINT
    multiply and subtract), corrected in BIGINT; rows where that would not fit take
    ``half_even_sql``."""
    est = f"""SELECT {cols}, _n, _d, CASE WHEN abs(_n)::DOUBLE / _d::DOUBLE < 4e18
                                THEN floor(abs(_n)::DOUBLE / _d::DOUBLE)::BIGINT END AS _q0
              FROM (SELECT {cols}, ({n})::HUGEINT AS _n, ({d})::BIGINT AS _d FROM ({source}))"""
    rem = f"""SELECT {cols}, _n, _d, _q0, abs(_n) - _q0::HUGEINT * _d AS _r0 FROM ({est})"""
    small = f"_q0 IS NOT NULL AND _d < {_SMALL} AND _r0 > -{_SMALL} AND _r0 < {_SMALL}"
    fix = f"""SELECT {cols}, _n, _d, _q0, CASE WHEN {small} THEN _r0::BIGINT END AS _r FROM ({rem})"""
    # floor(_r / _d) and the remainder in [0, _d): BIGINT // truncates toward zero.
    floor_q = "(_r // _d - CASE WHEN _r % _d < 0 THEN 1 ELSE 0 END)"
    split = f"""SELECT {cols}, _n, _d, _r, _q0 + {floor_q} AS _q, _r - {floor_q} * _d AS _m FROM ({fix})"""
    up = "CASE WHEN 2 * _m > _d OR (2 * _m = _d AND _q % 2 = 1) THEN 1 ELSE 0 END"
    exact = half_even_sql("_n", "_d::HUGEINT")
    value = f"CASE WHEN _r IS NULL THEN {exact} ELSE (sign(_n) * (_q + {up}))::HUGEINT END"
    return f"SELECT {cols}, {value} AS nanos FROM ({split})"


def to_usd(nanos: int) -> Decimal:
    """Nano-dollars as USD with 9 decimals."""
    return Decimal(int(nanos)).scaleb(-9)


def has_source(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether any revenue source exists: a plan price or an imported record."""
    row = con.execute(
        "SELECT EXISTS (SELECT 1 FROM plan_prices) OR EXISTS (SELECT 1 FROM revenue)"
    ).fetchone()
    return bool(row and row[0])


def has_records(con: duckdb.DuckDBPyConnection, user_id: str) -> bool:
    """Whether revenue records were imported for ``user_id``."""
    row = con.execute("SELECT EXISTS (SELECT 1 FROM revenue WHERE user_id = $id)", {"id": user_id}).fetchone()
    return bool(row and row[0])


# The plan prices, each with an id (pid).
_PRICES_SQL = f"""SELECT row_number() OVER (ORDER BY lower(property), value, per)::INTEGER AS pid,
                         lower(property) AS property, value, per,
                         {nanos_sql("amount_usd")}::HUGEINT AS price
                  FROM plan_prices"""


def _plan_days_sql(
    con: duckdb.DuckDBPyConnection,
    tz: str | None,
    span: Window,
    day0: int,
    params: dict[str, Any],
    keys: Sequence[int] | None,
    prefix: str = "rv_",
) -> str | None:
    """(user_key, di, pid): each priced plan value (price id) a named user's requests carried on a
    local day (index di from local day ``day0``) from the requests in ``span``; None without plan
    prices. Reads CTE ``pp`` (``_PRICES_SQL``); its parameters' names start with ``prefix``."""
    # Property keys are stored lower-cased (the mapper does it), so the plan property is too.
    rows = con.execute("SELECT DISTINCT lower(property) FROM plan_prices ORDER BY 1").fetchall()
    props = [k for (k,) in rows]
    if not props or (keys is not None and not keys):
        return None
    rows_only = folded(con, [dims.property_dimension(k) for k in props])
    q = CellSql(span, Filters(), rows_only=rows_only)
    q.begin(**{f"pk{i}": key for i, key in enumerate(props)})
    # Rollup cells carry dims_id (mapped to a price id through the small dims table), request
    # rows their values.
    extra = {"dims_id": ("c.dims_id", "NULL::INTEGER")}
    extra |= {f"pv{i}": ("NULL::VARCHAR", f"properties[$pk{i}]") for i in range(len(props))}
    cells = q.cells(PER_USER, US_PER_DAY, keys, extra)
    params.update({f"{prefix}{k}": v for k, v in q.params.items()})
    cells = _rename_params(cells, q.params, prefix)
    offsets = calendar.offsets(tz, span.since_us, span.until_us)
    local_day = offsets.local_day_sql
    # A UTC day or hour cell lies inside one local day when the zone is a whole number of days off UTC.
    same_day = all(o % US_PER_DAY == 0 for o in offsets.offsets)
    crowded = [] if rows_only else calendar.crowded_utc_days(span.since_us, span.until_us, tz)
    parts = []
    for i in range(len(props)):
        key = f"${prefix}pk{i}"
        mapped = f"""SELECT c.user_key, coalesce(m.pid, r.pid) AS pid, c.first_us, c.last_us FROM c
                     LEFT JOIN (SELECT d.dims_id, pp.pid FROM dims AS d JOIN pp
                                ON pp.property = {key} AND pp.value = d.properties[{key}]) AS m
                     ON m.dims_id = c.dims_id
                     LEFT JOIN pp AS r ON r.property = ${prefix}pk{i} AND r.value = c.pv{i}
                     WHERE c.user_key <> 0"""
        # A cell's first and last request prove its days: the same local day for most cells.
        days = f"""SELECT user_key, pid, {local_day("first_us")} - {day0} AS d1,
                          {local_day("last_us")} - {day0} AS d2 FROM ({mapped}) WHERE pid IS NOT NULL"""
        parts.append(
            f"SELECT user_key, d1 AS di, pid FROM ({days}) "
            + ("" if same_day else f"UNION ALL SELECT user_key, d2, pid FROM ({days}) WHERE d2 <> d1")
        )
        if crowded:  # a whole short local day inside one UTC day: its requests are read as rows
            parts.append(
                f"SELECT u.user_key, {local_day('epoch_us(r.start_time)')} - {day0} AS di, "
                f"pp.pid FROM requests AS r JOIN users AS u ON u.user_id = r.user_id "
                f"JOIN pp ON pp.property = ${prefix}pk{i} AND pp.value = r.properties[${prefix}pk{i}] "
                f"WHERE epoch_us(r.start_time) // {US_PER_DAY} IN (SELECT unnest(${prefix}crowded::BIGINT[]))"
                + ("" if keys is None else " AND u.user_key IN (SELECT unnest($rv_keys::BIGINT[]))")
            )
    if crowded:
        params[f"{prefix}crowded"] = crowded
    return f"WITH c AS ({cells}) {' UNION ALL '.join(parts)}"


def _rename_params(sql: str, params: dict[str, Any], prefix: str) -> str:
    # Longest names first, so that $a1 does not rename the start of $a10.
    for name in sorted(params, key=len, reverse=True):
        sql = sql.replace(f"${name}", f"${prefix}{name}")
    return sql


# The revenue records that count in the window [$rv_since, $rv_until).
_COUNTING = """end_us >= start_us
    AND ((end_us = start_us AND start_us >= $rv_since AND start_us < $rv_until)
         OR (end_us > start_us AND start_us < $rv_until AND end_us > $rv_since))"""


def listed_sql(
    con: duckdb.DuckDBPyConnection, window: Window, params: dict[str, Any], tz: str | None = None
) -> str | None:
    """(user_key, user_id): the users ``revenue_sql`` has a row for, but only those without a request
    in the window are sure to be there, found cheaply: the users of the records counting in the
    window, and those with a priced plan value in the parts of the window's first and last local
    days outside it. None when no revenue source exists."""
    if not has_source(con):
        return None
    tz = tz if tz is not None else getattr(window, "tz", None)
    stored = revenue_days.stored_part(con, window)
    params.update(rv_since=window.since_us, rv_until=window.until_us)
    parts = [
        f"""SELECT u.user_key, CASE WHEN u.user_key IS NULL THEN r.user_id END AS user_id
            FROM revenue AS r LEFT JOIN users AS u ON u.user_id = r.user_id WHERE {_COUNTING}"""
    ]
    edges = []
    if stored is not None:  # the parts of the first and last local days outside the window
        table = calendar.offsets(tz, window.since_us, window.until_us)
        if stored.since_us == window.since_us:
            day = table.local(window.since_us) // US_PER_DAY
            edges.append((table.first_reaching(day * US_PER_DAY), window.since_us, "rve0_"))
        if stored.until_us == window.until_us:
            day = table.local(window.until_us - 1) // US_PER_DAY + 1
            edges.append((window.until_us, table.first_reaching(day * US_PER_DAY), "rve1_"))
    plan_parts = []
    for start, end, prefix in edges:
        if start < end:
            days = _plan_days_sql(
                con, tz, Window(from_micros(start), from_micros(end)), 0, params, None, prefix
            )
            if days is not None:
                plan_parts.append(f"SELECT user_key, NULL::VARCHAR AS user_id FROM ({days})")
    if plan_parts:
        parts.append(f"WITH pp AS ({_PRICES_SQL}) {' UNION ALL '.join(plan_parts)}")
    return f"SELECT DISTINCT user_key, user_id FROM ({' UNION ALL '.join(f'({p})' for p in parts)})"


def revenue_sql(
    con: duckdb.DuckDBPyConnection,
    window: Window,
    params: dict[str, Any],
    tz: str | None = None,
    keys: Sequence[int] | None = None,
    ids: Sequence[str] = (),
    total: bool = False,
) -> str | None:
    """A relation (user_key BIGINT, user_id VARCHAR, revenue_nanos HUGEINT): every user with a
    revenue term in the window (a plan day, or an imported record counting in it), revenue in
    nano-dollars. A user that no request ever named has no key: user_key NULL and user_id their
    id; every other user has user_id NULL (look it up in ``users``). Its parameters are
    added to ``params`` (names starting ``rv``). None when no revenue source exists at all.

    ``keys`` (user keys) and ``ids`` (user ids): only these users (``keys`` None: everyone).
    ``total``: one row (revenue_nanos) instead, the sum over every user (each term rounded alike).
    """
    if not has_source(con):
        return None
    tz = tz if tz is not None else getattr(window, "tz", None)
    stored = revenue_days.stored_part(con, window)
    params.update(rv_since=window.since_us, rv_until=window.until_us)
    only = ""
    if keys is not None:
        params["rv_keys"] = [int(k) for k in keys]
        params["rv_ids"] = [str(i) for i in ids]
        only = (
            " AND (user_id IN (SELECT user_id FROM users"
            " WHERE user_key IN (SELECT unnest($rv_keys::BIGINT[])))"
            " OR user_id IN (SELECT unnest($rv_ids::VARCHAR[])))"
        )
    records = f"""SELECT user_id, {nanos_sql("amount_usd")}::HUGEINT AS amount, start_us, end_us,
                         least(end_us, $rv_until) - greatest(start_us, $rv_since) AS overlap
                  FROM revenue WHERE {_COUNTING}{only}"""
    # An instant: overlap / length = 1 (as 1 / 1).
    record_terms = rounded_sql(
        records,
        "user_id",
        "amount * CASE WHEN end_us = start_us THEN 1 ELSE overlap END",
        "CASE WHEN end_us = start_us THEN 1 ELSE end_us - start_us END",
    )
    # A record's user by key; by id only when no request ever named the user.
    terms = [
        f"""SELECT u.user_key, CASE WHEN u.user_key IS NULL THEN t.user_id END AS user_id, t.nanos
            FROM ({record_terms}) AS t LEFT JOIN users AS u ON u.user_id = t.user_id"""
    ]
    cal = revenue_days.day_table(stored, tz) if stored is not None else None
    span = Window(from_micros(cal.starts[0]), from_micros(cal.ends[-1])) if cal is not None else window
    plan_days = _plan_days_sql(con, tz, span, cal.days[0], params, keys) if cal is not None else None
    if cal is not None and plan_days is not None:
        full = revenue_days.full_days(cal)
        months = sorted(
            {
                (mi, cal.months[i], cal.month_lengths[i], cal.years[i], cal.year_lengths[i], full[mi])
                for i in range(len(cal.days))
                for mi in (cal.month_index(i),)
            }
        )
        params.update(
            rv_months=[list(m) for m in zip(*months, strict=True)],
        )
        # The local days by index, with their month index and day of the month (0-based): made
        # here rather than passed as lists, which DuckDB would copy while planning.
        cal_sql = f"""SELECT di, (year(d) * 12 + month(d) - 1) - {cal.months[0]} AS mi, day(d) - 1 AS bit
                      FROM (SELECT range AS di, DATE '1970-01-01' + ({cal.days[0]} + range)::INTEGER AS d
                            FROM range({len(cal.days)}))"""
        months_sql = """SELECT unnest($rv_months[1]) AS mi, unnest($rv_months[2]) AS m,
                               unnest($rv_months[3]) AS mlen, unnest($rv_months[4]) AS y,
                               unnest($rv_months[5]) AS ylen, unnest($rv_months[6]) AS whole"""
        # Per local month and price: the term it adds to (its month, or its year) and its rank
        # among the month's prices, dearest last. Rates are compared as price per micro of the
        # month or year, cross-multiplied so that the comparison is exact; equal rates: the
        # smaller value ranks higher. (A month's days all have the same month and year.)
        month_prices = """SELECT mo.mi, pp.pid, pp.price, pp.per = 'year' AS yearly,
                                 CASE WHEN pp.per = 'year' THEN mo.y ELSE mo.m END AS period,
                                 CASE WHEN pp.per = 'year' THEN mo.ylen ELSE mo.mlen END AS plen,
                                 row_number() OVER (PARTITION BY mo.mi ORDER BY
                                     pp.price * CASE WHEN pp.per = 'year' THEN mo.mlen ELSE mo.ylen END,
                                     pp.value DESC, pp.per DESC) AS rank
                          FROM mo CROSS JOIN pp"""
        # The days of each month on which a user's requests carried a price, as a bit mask.
        seen = f"""SELECT p.user_key, c.mi, p.pid, bit_or(1::BIGINT << c.bit) AS mask
                   FROM ({plan_days}) AS p JOIN cal AS c ON c.di = p.di GROUP BY p.user_key, c.mi, p.pid"""
        # The days a dearer price of the user's took, that month.
        ranked = """SELECT s.user_key, s.mi, s.pid, s.mask, mp.price, mp.period, mp.plen, mp.yearly,
                           coalesce(bit_or(s.mask) OVER (PARTITION BY s.user_key, s.mi ORDER BY mp.rank DESC
                                    ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS taken
                    FROM seen AS s JOIN month_prices AS mp ON mp.mi = s.mi AND mp.pid = s.pid"""
        # The days an imported service period of the user overlaps: no plan revenue there.
        for_keys = "" if keys is None else " AND u.user_key IN (SELECT unnest($rv_keys::BIGINT[]))"
        # A period overlaps the local days from the one holding its start to the one holding its
        # last microsecond (both clamped to the days of the window).
        local_day = calendar.offsets(tz, span.since_us, span.until_us).local_day_sql
        first = local_day(f"greatest(r.start_us, {span.since_us})")
        last = local_day(f"least(r.end_us, {span.until_us}) - 1")
        day0 = cal.days[0]
        period_days = f"""SELECT u.user_key, unnest(range({first} - {day0}, {last} - {day0} + 1)) AS di
                          FROM revenue AS r JOIN users AS u USING (user_id)
                          WHERE r.end_us > r.start_us AND r.start_us < {span.until_us}
                            AND r.end_us > {span.since_us}{for_keys}"""
        suppressed = f"""SELECT p.user_key, c.mi, bit_or(1::BIGINT << c.bit) AS mask
                         FROM ({period_days}) AS p JOIN cal AS c ON c.di = p.di GROUP BY p.user_key, c.mi"""
        # Each month's whole days (bit mask) as constants: no join for them.
        whole = " ".join(f"WHEN {mi} THEN {mask}" for mi, mask in sorted(full.items()))
        kept = f"""SELECT r.user_key, r.pid, r.period, r.price, r.plen, r.mi, r.yearly,
                         CASE r.mi {whole} END::BIGINT AS whole,
                         r.mask & ~r.taken & ~coalesce(x.mask, 0) AS days
                  FROM ranked AS r
                  LEFT JOIN suppressed AS x ON x.user_key = r.user_key AND x.mi = r.mi"""
        # A month's price has one term per month: a row already; a year's sums its months.
        ov = revenue_days.overlap_sql(cal, "days", "mi", "whole")
        plan_terms = f"""WITH cal AS ({cal_sql}), mo AS ({months_sql}), pp AS ({_PRICES_SQL}),
                              month_prices AS ({month_prices}), seen AS ({seen}), ranked AS ({ranked}),
                              suppressed AS ({suppressed}), kept AS MATERIALIZED ({kept})
                         SELECT user_key, price, plen, {ov} AS ov FROM kept WHERE NOT yearly
                         UNION ALL
                         SELECT user_key, any_value(price) AS price, any_value(plen) AS plen, sum({ov}) AS ov
                         FROM kept WHERE yearly GROUP BY user_key, pid, period"""
        terms.append(
            "SELECT user_key, NULL::VARCHAR AS user_id, nanos "
            f"FROM ({rounded_sql(plan_terms, 'user_key', 'price * ov', 'plen')})"
        )
    union = " UNION ALL ".join(f"({t})" for t in terms)
    if total:
        return f"SELECT coalesce(sum(nanos), 0)::HUGEINT AS revenue_nanos FROM ({union})"
    return f"""SELECT user_key, user_id, sum(nanos)::HUGEINT AS revenue_nanos FROM ({union})
               GROUP BY user_key, user_id"""


def revenue_by_user(
    con: duckdb.DuckDBPyConnection,
    window: Window,
    users: Sequence[int] | None = None,
    *,
    tz: str | None = None,
) -> dict[int, Decimal] | None:
    """Revenue (USD, 9 decimals) per user key in the window; None when no revenue source exists.

    ``users`` None: every user with revenue in the window that has a user key (see
    ``revenue_by_user_id`` for users that no request ever named). Users without revenue terms
    are absent (their revenue is 0).
    """
    params: dict[str, Any] = {}
    sql = revenue_sql(con, window, params, tz, keys=users)
    if sql is None:
        return None
    rows = con.execute(
        f"SELECT user_key, revenue_nanos FROM ({sql}) WHERE user_key IS NOT NULL", params
    ).fetchall()
    return {int(k): to_usd(n) for k, n in rows}


def revenue_by_user_id(
    con: duckdb.DuckDBPyConnection,
    window: Window,
    *,
    tz: str | None = None,
    keys: Sequence[int] | None = None,
    ids: Sequence[str] = (),
) -> dict[str | None, Decimal] | None:
    """Revenue (USD, 9 decimals) per user id in the window, users no request named included;
    None when no revenue source exists. ``tz``: the zone of plan days (default: the window's);
    ``keys`` and ``ids``: only these users (as ``revenue_sql``)."""
    params: dict[str, Any] = {}
    sql = revenue_sql(con, window, params, tz, keys=keys, ids=ids)
    if sql is None:
        return None
    rows = con.execute(
        f"SELECT coalesce(r.user_id, u.user_id), r.revenue_nanos FROM ({sql}) AS r "
        "LEFT JOIN users AS u ON u.user_key = r.user_key",
        params,
    ).fetchall()
    return {u: to_usd(n) for u, n in rows}
