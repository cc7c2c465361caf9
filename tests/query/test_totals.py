"""query/totals.py against a real service holding known spans."""

from __future__ import annotations

from decimal import Decimal

import duckdb
import pytest
from query_data import in_window
from query_service import TRUTHS, WINDOWS

from user_metrics.query.totals import totals as query_totals


class TestTotals:
    @pytest.mark.parametrize("name", WINDOWS)
    def test_totals_match_the_spans(self, con: duckdb.DuckDBPyConnection, name: str) -> None:
        """Users, anonymous requests, tokens and cost of the whole application."""
        since, until = WINDOWS[name]
        rows = in_window(TRUTHS, since, until)
        got = query_totals(con, since, until)
        assert got.requests == len(rows)
        assert got.users == len({t.user for t in rows if t.user is not None})
        assert got.anonymous_requests == sum(t.user is None for t in rows)
        assert got.errors == sum(t.error for t in rows)
        assert got.total_tokens == sum(t.input_tokens + t.output_tokens for t in rows)
        assert got.cost_usd == sum((t.cost for t in rows if t.cost is not None), Decimal(0))
        assert got.unpriced_requests == sum(t.cost is None for t in rows)
