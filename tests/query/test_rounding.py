"""query/revenue.py ``rounded_sql``: n / d rounded half to even, exactly, on both of its paths
(the BIGINT correction of a DOUBLE estimate, and HUGEINT division where that would not fit);
``nanos_sql``: the nano-dollars of a DECIMAL(18, 9)."""

from __future__ import annotations

from decimal import Decimal

import duckdb
from hypothesis import given, settings
from hypothesis import strategies as st

from user_metrics.query.revenue import nanos_sql, rounded_sql


def half_even(n: int, d: int) -> int:
    q, r = divmod(abs(n), d)
    if 2 * r > d or (2 * r == d and q % 2 == 1):
        q += 1
    return q if n >= 0 else -q


def rounded(pairs: list[tuple[int, int]]) -> list[int]:
    con = duckdb.connect()
    con.execute("CREATE TABLE t (i INTEGER, n HUGEINT, d BIGINT)")
    con.executemany("INSERT INTO t VALUES (?, ?, ?)", [(i, str(n), d) for i, (n, d) in enumerate(pairs)])
    rows = con.execute(f"SELECT i, nanos FROM ({rounded_sql('SELECT * FROM t', 'i', 'n', 'd')}) ORDER BY i")
    return [int(v) for _, v in rows.fetchall()]


def test_ties_go_to_the_even_neighbour_and_huge_quotients_are_exact() -> None:
    """Halves round to even in both signs; quotients beyond 2^62 (the HUGEINT path) are exact."""
    pairs = [
        (5, 2),
        (7, 2),
        (-5, 2),
        (-7, 2),
        (1, 3),
        (-2, 3),
        (0, 7),
        (10**30 + 1, 2),
        (-(10**37), 3),
        (2**64 + 1, 2**63 - 1),
    ]
    assert rounded(pairs) == [half_even(n, d) for n, d in pairs]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-(2**126), 2**126), st.integers(1, 2**63 - 1)),
        min_size=1,
        max_size=20,
    )
)
def test_any_numerator_and_divisor(pairs: list[tuple[int, int]]) -> None:
    """Any HUGEINT numerator and positive BIGINT divisor: the same as exact integer rounding."""
    assert rounded(pairs) == [half_even(n, d) for n, d in pairs]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-(10**18), 10**18), st.integers(0, 10**14), st.integers(1, 10**14))))
def test_prices_times_micros(terms: list[tuple[int, int, int]]) -> None:
    """The sizes revenue meets (nano-dollars times microseconds over a month or a year)."""
    pairs = [(p * ov, d) for p, ov, d in terms] or [(0, 1)]
    assert rounded(pairs) == [half_even(n, d) for n, d in pairs]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-(10**18) + 1, 10**18 - 1), min_size=1, max_size=20))
def test_nanos_of_a_decimal(nanos: list[int]) -> None:
    """``nanos_sql``: the nano-dollars of any DECIMAL(18, 9), both signs, to the last digit."""
    con = duckdb.connect()
    con.execute("CREATE TABLE t (i INTEGER, d DECIMAL(18, 9))")
    values = [*nanos, 10**18 - 1, -(10**18) + 1, 0, 1, -1]
    con.executemany(
        "INSERT INTO t VALUES (?, ?)", [(i, str(Decimal(n).scaleb(-9))) for i, n in enumerate(values)]
    )
    rows = con.execute(f"SELECT i, {nanos_sql('d')} FROM t ORDER BY i").fetchall()
    assert [int(v) for _, v in rows] == values
