"""The query tests' service: a running service holding ``query_data``'s spans, the windows they are
read in, and the check of one user's fields against the truth."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import duckdb
import pytest
from conftest import Service
from query_data import DAY0, build, requests_for

from user_metrics.query.results import UserStats

TRUTHS = build()
START, END = DAY0, DAY0 + timedelta(days=4)
WINDOWS = {
    "whole days": (DAY0, DAY0 + timedelta(days=4)),
    "ragged both ends": (DAY0 + timedelta(hours=5, minutes=7), DAY0 + timedelta(days=3, hours=13, seconds=1)),
    "inside one day": (DAY0 + timedelta(days=1, hours=2), DAY0 + timedelta(days=1, hours=20)),
    "one microsecond before midnight": (
        DAY0 + timedelta(days=1) - timedelta(microseconds=1),
        DAY0 + timedelta(days=1),
    ),
    "from midnight": (DAY0 + timedelta(days=2), DAY0 + timedelta(days=2, hours=1)),
    "ends one microsecond after midnight": (DAY0, DAY0 + timedelta(days=2, microseconds=1)),
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("query") / "um.duckdb")
    app = svc.start()
    for req in requests_for(TRUTHS):
        result = app.ingestor.export(req)
        assert result.rejected_spans == 0, result.error_message
    yield svc
    svc.stop()


@pytest.fixture
def con(served: Service) -> Iterator[duckdb.DuckDBPyConnection]:
    assert served.app is not None
    reader = served.app.store.reader()
    yield reader
    reader.close()


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def check_user(got: UserStats, want: dict[str, Any]) -> None:
    assert got.requests == want["requests"]
    assert got.errors == want["errors"]
    assert got.input_tokens == want["input_tokens"]
    assert got.output_tokens == want["output_tokens"]
    assert got.total_tokens == want["input_tokens"] + want["output_tokens"]
    assert got.cost_usd == want["cost_usd"]
    assert got.unpriced_requests == want["unpriced_requests"]
    assert got.first_active == want["first"] and got.last_active == want["last"]
    assert got.active_days == len(want["days"])
    assert got.avg_requests_per_active_day == pytest.approx(want["requests"] / len(want["days"]))
    assert got.avg_tokens_per_request == pytest.approx(
        (want["input_tokens"] + want["output_tokens"]) / want["requests"]
    )
    assert got.avg_latency_ms == pytest.approx(sum(want["durations"]) / len(want["durations"]))
    assert got.error_rate == pytest.approx(want["errors"] / want["requests"])
    for value, q in ((got.p50_latency_ms, 0.5), (got.p95_latency_ms, 0.95)):
        assert value == pytest.approx(nearest_rank(want["durations"], q), rel=0.045)
    assert {(m.provider, m.model): m.requests for m in got.models} == dict(want["models"])
