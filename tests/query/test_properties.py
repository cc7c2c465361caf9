"""query/properties.py against a real service holding known spans: breakdowns by a property, the keys."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import duckdb
import pytest
from query_data import in_window
from query_service import END, START, TRUTHS, WINDOWS

from user_metrics.errors import InvalidInput
from user_metrics.query.properties import by_property as query_by_property


class TestByProperty:
    def test_per_value_users_requests_cost_and_extremes(self, con: duckdb.DuckDBPyConnection) -> None:
        """Average cost per user and the costliest and cheapest users, per plan."""
        since, until = WINDOWS["ragged both ends"]
        rows = in_window(TRUTHS, since, until)
        got = {v.value: v for v in query_by_property(con, "plan", since, until).values}
        assert set(got) == {t.plan for t in rows}
        for value, item in got.items():
            mine = [t for t in rows if t.plan == value]
            cost: dict[str | None, Decimal] = {}
            for t in mine:
                cost[t.user] = cost.get(t.user, Decimal(0)) + (t.cost or 0)
            named = {u: c for u, c in cost.items() if u is not None}
            assert item.requests == len(mine)
            assert item.users == len(named)
            assert item.cost_usd == sum(cost.values(), Decimal(0))
            assert item.unpriced_requests == sum(t.cost is None for t in mine)
            if named:
                assert item.avg_cost_per_user == (sum(named.values()) / len(named)).quantize(Decimal("1e-9"))
                assert item.most_costly_user_cost_usd == max(named.values())
                assert cost[item.most_costly_user] == max(named.values())
                assert cost[item.least_costly_user] == min(named.values())

    def test_property_names_are_case_insensitive(self, con: duckdb.DuckDBPyConnection) -> None:
        """Names are stored lower-cased, so PLAN finds plan."""
        assert query_by_property(con, "PLAN", START, END) == query_by_property(con, "plan", START, END)

    def test_a_limit_keeps_the_costliest_values_and_says_how_many_there_were(
        self, con: duckdb.DuckDBPyConnection
    ) -> None:
        """limit=n answers the first n values of the full answer; total_values and truncated tell."""
        full = query_by_property(con, "plan", START, END)
        assert full.total_values == len(full.values) == 4 and not full.truncated  # three plans and unset
        assert [v.cost_usd for v in full.values] == sorted((v.cost_usd for v in full.values), reverse=True)
        for limit in (1, 3):
            cut = query_by_property(con, "plan", START, END, limit=limit)
            assert cut.values == full.values[:limit] and cut.total_values == 4 and cut.truncated
        assert query_by_property(con, "plan", START, END, limit=4) == full
        empty = query_by_property(con, "plan", END + timedelta(days=1), END + timedelta(days=2), limit=1)
        assert (empty.values, empty.total_values, empty.truncated) == ((), 0, False)

    @pytest.mark.parametrize("limit", [0, -1, 10_001])
    def test_a_limit_out_of_range_is_refused(self, con: duckdb.DuckDBPyConnection, limit: int) -> None:
        """limit must be 1 to 10,000."""
        with pytest.raises(InvalidInput, match="limit"):
            query_by_property(con, "plan", START, END, limit=limit)
