"""Deadlines of the HTTP API's readers: query routes and SQL answer in time, and stay bounded after.

Real services on loopback, real DuckDB files and real HTTP requests; each request has a client
deadline far past the server's, so a server that does not answer in time fails the test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import Service
from servers import CLIENT_TIMEOUT_S, call, reads_limited

from user_metrics import connect
from user_metrics.errors import DeadlineExceeded
from user_metrics.serve import http_api

ENDLESS = "SELECT count(*) FROM range(1000000000000000) a, range(1000) b"  # interruptible, never ends
SLOW_TOTALS_S = 120.0  # how long the patched totals() keeps querying unless it is interrupted
# One block of 2,048 rows through a quadratic function: seconds of work DuckDB cannot interrupt.
STUCK = "SELECT max(levenshtein(repeat('a', 500), repeat('b', 500) || range)) FROM range(2048)"


def wait_for(condition: Callable[[], bool], seconds: float = 120.0) -> None:
    """Poll until ``condition()`` holds; fail after ``seconds`` (a liveness bound, not a timing)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.05)


@pytest.fixture
def slow_totals(monkeypatch: pytest.MonkeyPatch) -> None:
    """GET /api/v1/totals runs short statements one after another for SLOW_TOTALS_S, unless interrupted.

    Like the real query functions it runs several statements, so an interrupt that falls between
    two of them must still stop it.
    """

    def slow(con: duckdb.DuckDBPyConnection, *_: Any, **__: Any) -> Any:
        end = time.monotonic() + SLOW_TOTALS_S
        while time.monotonic() < end:
            con.execute("SELECT count(*) FROM range(100000000) a, range(3) b").fetchall()
        return {}

    monkeypatch.setattr(http_api, "totals", slow)


class TestQueryRoutes:
    @pytest.fixture
    def served(self, tmp_path: Path) -> Iterator[Service]:
        svc = Service(tmp_path / "um.duckdb", query_timeout_seconds=0.5, metrics_refresh_seconds=0)
        svc.start()
        yield svc
        svc.stop()

    def test_a_query_past_query_timeout_is_stopped_and_answered_504(
        self, served: Service, slow_totals: None
    ) -> None:
        """The reader is interrupted at the deadline, the client gets 504, and the server keeps serving."""
        app = served.app
        assert app is not None and app.api is not None
        status, body, _ = call(app.api_url, "GET", "/api/v1/totals")
        assert (status, body["status"]) == (504, 504) and "query_timeout_seconds" in body["error"]
        # Stopped well before it would have ended by itself: the interrupt reached DuckDB.
        wait_for(lambda: app.api is not None and app.api.queries.running == 0, SLOW_TOTALS_S / 2)
        assert reads_limited(app.api_url)["query_timeout_seconds"] == 1
        status, body, _ = call(app.api_url, "GET", "/api/v1/users")
        assert status == 200 and body["total"] == 0
        with connect(url=app.api_url) as client, pytest.raises(DeadlineExceeded, match="query_timeout"):
            client.totals()


class TestSqlDeadlines:
    def test_beyond_sql_max_concurrent_queries_get_503_with_retry_after(self, tmp_path: Path) -> None:
        """Two running queries hold both places; the third is refused at once (counted); stop ends them."""
        svc = Service(
            tmp_path / "um.duckdb", sql_max_concurrent=2, sql_timeout_seconds=60, metrics_refresh_seconds=0
        )
        app = svc.start()
        assert app.api is not None
        answers: list[tuple[int, Any]] = []

        def hold() -> None:
            status, body, _ = call(app.api_url, "POST", "/api/v1/sql", {"sql": ENDLESS})
            answers.append((status, body))

        held = [threading.Thread(target=hold) for _ in range(2)]
        try:
            for thread in held:
                thread.start()
            wait_for(lambda: app.api is not None and app.api.sql_queries.running == 2)
            status, body, response = call(app.api_url, "POST", "/api/v1/sql", {"sql": "SELECT 42"})
            assert (status, body["status"]) == (503, 503) and "retry" in body["error"]
            assert response.getheader("Retry-After") == "1"
            assert reads_limited(app.api_url)["sql_max_concurrent"] == 1
            status, body, _ = call(app.api_url, "GET", "/api/v1/users")
            assert status == 200, "the query routes do not share SQL's places"
        finally:
            svc.stop()  # interrupts the held queries: they are answered, and end
            for thread in held:
                thread.join(CLIENT_TIMEOUT_S)
        assert [status for status, _ in answers] == [503, 503]
        assert all("stopping" in body["error"] for _, body in answers)

    def test_a_query_duckdb_cannot_stop_is_answered_at_the_deadline_and_keeps_its_place(
        self, tmp_path: Path
    ) -> None:
        """The answer comes at sql_timeout_seconds; the query counts against sql_max_concurrent until it ends."""
        svc = Service(
            tmp_path / "um.duckdb", sql_max_concurrent=1, sql_timeout_seconds=0.5, metrics_refresh_seconds=0
        )
        app = svc.start()
        try:
            assert app.api is not None
            status, body, _ = call(app.api_url, "POST", "/api/v1/sql", {"sql": STUCK})
            assert (status, body["status"]) == (400, 400) and "time limit" in body["error"]
            status, body, _ = call(app.api_url, "POST", "/api/v1/sql", {"sql": "SELECT 42"})
            assert status == 503, "the stuck query still holds the only place"
            wait_for(lambda: app.api is not None and app.api.sql_queries.running == 0)
            status, body, _ = call(app.api_url, "POST", "/api/v1/sql", {"sql": "SELECT 42"})
            assert (status, body["rows"]) == (200, [[42]])
            counted = reads_limited(app.api_url)
            assert (counted["sql_timeout_seconds"], counted["sql_max_concurrent"]) == (1, 1)
        finally:
            svc.stop()
