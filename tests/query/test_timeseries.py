"""query/timeseries.py against a real service holding known spans."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import duckdb
import pytest
from query_data import in_window
from query_service import END, START, TRUTHS, WINDOWS

from user_metrics.errors import InvalidInput
from user_metrics.query.timeseries import timeseries as query_timeseries


class TestTimeseries:
    @pytest.mark.parametrize("bucket", ["hour", "day"])
    @pytest.mark.parametrize("user_id", [None, "alice", "zoë 🙂"])
    def test_buckets_hold_exact_counts_and_empty_ones_are_present(
        self, con: duckdb.DuckDBPyConnection, bucket: str, user_id: str | None
    ) -> None:
        """One point per UTC bucket from the one holding since to the one holding until."""
        since, until = WINDOWS["ragged both ends"]
        series = query_timeseries(con, user_id, since, until, bucket=bucket)
        step = timedelta(hours=1) if bucket == "hour" else timedelta(days=1)
        first = since.replace(minute=0, second=0, microsecond=0)
        if bucket == "day":
            first = first.replace(hour=0)
        starts = [p.start for p in series.points]
        assert starts[0] == first and all(b - a == step for a, b in zip(starts, starts[1:], strict=False))
        assert starts[-1] < until <= starts[-1] + step
        for point in series.points:
            lo, hi = max(point.start, since), min(point.start + step, until)
            want = [t for t in in_window(TRUTHS, lo, hi) if user_id is None or t.user == user_id]
            assert point.requests == len(want)
            assert point.errors == sum(t.error for t in want)
            assert point.total_tokens == sum(t.input_tokens + t.output_tokens for t in want)
            assert point.cost_usd == sum((t.cost for t in want if t.cost is not None), Decimal(0))
        assert any(p.requests == 0 for p in series.points) or bucket == "day"

    def test_a_bad_bucket_is_refused(self, con: duckdb.DuckDBPyConnection) -> None:
        """bucket must be hour, day, week or month."""
        with pytest.raises(InvalidInput, match="bucket: must be one of hour, day, week, month"):
            query_timeseries(con, None, START, END, bucket="fortnight")
