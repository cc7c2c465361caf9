"""Margins: revenue (``revenue.py``) against cost, per user, per property value and in total.

margin_usd = revenue_usd - cost_usd (a cost of None counts as 0 once revenue is known) and
margin_ratio = margin / revenue (None when revenue is 0). Without any revenue source (no plan
price, no imported record) all three are None. Revenue is the user's, whatever the filters: a
filter chooses requests, so with one active only users with a matching request are listed (and
counted in totals), while without one a user with revenue in the window but no request in it is
listed too, with zero requests.

``ranked_sql`` is the relation ``users()`` sorts and pages: one row per listed user with its sort
value and its revenue and margin in nano-dollars, joined in SQL, so that sorting by margin stays
one statement however many users there are.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any, TypeVar

import duckdb

from user_metrics.query import revenue
from user_metrics.query.cells import PER_USER, CellSql
from user_metrics.query.results import PROFIT_FIELDS
from user_metrics.query.revenue import to_usd
from user_metrics.store.rollups import US_PER_DAY

T = TypeVar("T")

# Fields whose value is 0 for a user without requests in the window (so they sort as 0).
ZERO_FIELDS = frozenset(
    (
        "requests",
        "errors",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
        "total_tokens",
        "unpriced_requests",
        "active_days",
    )
)
_PROFIT_SORT = {
    "revenue_usd": "j.rev",
    "margin_usd": "j.margin",
    "margin_ratio": "CASE WHEN j.rev <> 0 THEN j.margin::DOUBLE / j.rev::DOUBLE END",
}


def margins(revenue_usd: Decimal | None, cost_usd: Decimal | None) -> dict[str, Any]:
    """The three profit fields from revenue and cost (None revenue: no revenue source)."""
    if revenue_usd is None:
        return dict.fromkeys(PROFIT_FIELDS)
    margin = revenue_usd - (cost_usd if cost_usd is not None else Decimal(0))
    ratio = float(margin / revenue_usd) if revenue_usd != 0 else None
    return {"revenue_usd": revenue_usd, "margin_usd": margin, "margin_ratio": ratio}


def with_margins(result: T, revenue_usd: Decimal | None) -> T:
    """A result (UserStats, PropertyValue, Totals) with its profit fields filled in."""
    cost = getattr(result, "cost_usd")  # noqa: B009 - any of the three result types
    return dataclasses.replace(result, **margins(revenue_usd, cost))  # type: ignore[type-var]


def ranked_sql(
    con: duckdb.DuckDBPyConnection, q: CellSql, field: str, value_sql: str | None, with_ids: bool
) -> tuple[str, bool]:
    """(relation, revenue known): rows (user_key, user_id, s, rev) for every listed user, s the
    sort value of ``field`` (its aggregate ``value_sql``), rev the revenue in nano-dollars (NULL
    without a revenue source, and when ``field`` is no profit field: then ``page_revenue``
    answers for the page).
    user_key is NULL for a user with revenue whom no request ever named (user_id is then theirs);
    other rows have user_id only ``with_ids`` (else NULL). Call after ``q.begin``.
    """
    cells = q.cells(PER_USER, US_PER_DAY, whole_days=True)
    value = value_sql or "NULL"
    by_profit = field in PROFIT_FIELDS
    # Sorting by anything else needs revenue only for the page, and the users listed for it alone.
    cost = "NULL::HUGEINT"
    if field in ("margin_usd", "margin_ratio"):
        # Summed as nano-dollars per cell (cells keep DECIMAL(18, 9)): exact and cheap.
        cost = f"CASE WHEN sum(priced_requests) > 0 THEN sum({revenue.nanos_sql('cost_usd')}) END"
    grouped = f"SELECT user_key, {value} AS s, {cost} AS cost FROM ({cells}) GROUP BY user_key"
    known = revenue.has_source(con)
    rev_sql = None
    if known and by_profit:
        rev_sql = revenue.revenue_sql(con, q.window, q.params)
    elif known and not q.filters.active:
        listed = revenue.listed_sql(con, q.window, q.params)
        rev_sql = f"SELECT user_key, user_id, NULL::HUGEINT AS revenue_nanos FROM ({listed})"
    if rev_sql is None:
        rev_sql = "SELECT NULL::BIGINT AS user_key, NULL::VARCHAR AS user_id, NULL::HUGEINT AS revenue_nanos"
        rev, join = "NULL::HUGEINT", "LEFT JOIN"
    else:
        rev = "coalesce(r.revenue_nanos, 0)" if by_profit else "NULL::HUGEINT"
        join = "LEFT JOIN" if q.filters.active else "FULL JOIN"
    s = "g.s"
    if field in ZERO_FIELDS:
        s = "coalesce(g.s, 0)"
    joined = f"""SELECT coalesce(g.user_key, r.user_key) AS user_key, r.user_id AS rid, {s} AS s,
                        {rev} AS rev, {rev} - coalesce(g.cost, 0) AS margin
                 FROM ({grouped}) AS g {join} ({rev_sql}) AS r ON r.user_key = g.user_key"""
    sort = _PROFIT_SORT.get(field) or ("coalesce(u.user_id, j.rid)" if field == "user_id" else "j.s")
    if not with_ids and field != "user_id":  # spare 100k lookups in users: the page looks up its own
        return f"SELECT j.user_key, j.rid AS user_id, {sort} AS s, j.rev FROM ({joined}) AS j", known
    relation = f"""SELECT j.user_key, coalesce(u.user_id, j.rid) AS user_id, {sort} AS s, j.rev
                   FROM ({joined}) AS j LEFT JOIN users AS u ON u.user_key = j.user_key"""
    return relation, known


def page_revenue(
    con: duckdb.DuckDBPyConnection, q: CellSql, page: list[tuple[int | None, str | None]]
) -> dict[tuple[int | None, str | None], Decimal]:
    """The revenue of the page's users, keyed (user_key, None) or (None, user_id) for a user no
    request named; users without revenue are absent."""
    params: dict[str, Any] = {}
    keys = [k for k, _ in page if k is not None]
    ids = [u for k, u in page if k is None and u is not None]
    sql = revenue.revenue_sql(con, q.window, params, keys=keys, ids=ids)
    if sql is None or not page:
        return {}
    rows = con.execute(f"SELECT user_key, user_id, revenue_nanos FROM ({sql})", params).fetchall()
    return {(k, None if k is not None else u): to_usd(n) for k, u, n in rows}


def revenue_of(nanos: int | None, known: bool) -> Decimal | None:
    """A ranked row's revenue as USD (None without a revenue source)."""
    if not known:
        return None
    return to_usd(nanos or 0)
