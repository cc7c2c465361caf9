"""POST /api/v1/sql within its bounds: the statement's text, shape, files, and the size of its answer.

The service's DuckDB is a real file with real spans; each request goes over a real socket, with a
client deadline long enough that a slow answer fails the test rather than hanging it.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Service
from query_data import build, requests_for
from servers import call, reads_limited

from user_metrics.query.safe_sql import MAX_TEXT_BYTES
from user_metrics.query.sql_bounds import MAX_JOINS


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(
        tmp_path_factory.mktemp("sql") / "um.duckdb",
        sql_timeout_seconds=1.0,
        sql_max_result_mib=1,
        metrics_refresh_seconds=0,
    )
    app = svc.start()
    for req in requests_for(build(seed=3, count=60)):
        app.ingestor.export(req)
    yield svc
    svc.stop()


def sql(served: Service, text: str, limit: int | None = None) -> tuple[int, Any, http.client.HTTPResponse]:
    """POST /api/v1/sql: the status, the JSON answer and the response (for its headers)."""
    assert served.app is not None
    body = {"sql": text} if limit is None else {"sql": text, "limit": limit}
    return call(served.app.api_url, "POST", "/api/v1/sql", body)


def counted(served: Service) -> dict[str, float]:
    """user_metrics_reads_limited_total by limit, as the service's /metrics says."""
    assert served.app is not None
    return reads_limited(served.app.api_url)


def union(n: int) -> str:
    return " UNION ALL ".join(f"SELECT {i} AS x" for i in range(n))


def chain_join(n: int) -> str:
    joins = " ".join(f"JOIN range(10) t{i} ON t{i}.range = t{i - 1}.range" for i in range(1, n))
    return f"SELECT count(*) FROM range(10) t0 {joins}"


class TestTheIssuesExamples:
    @pytest.mark.parametrize(
        ("text", "status", "mentions", "limit"),
        [
            (union(10_000), 413, "bytes", "sql_text_bytes"),
            (union(2_000), 400, "SELECT", "sql_complexity"),
            (chain_join(200), 400, "joins", "sql_complexity"),
            ("SELECT repeat('x', 10000000) FROM range(150)", 400, "repeat()", "sql_complexity"),
        ],
        ids=["union-10000", "union-2000", "join-200", "repeat-10MB"],
    )
    def test_each_is_refused_before_it_runs(
        self, served: Service, text: str, status: int, mentions: str, limit: str
    ) -> None:
        """Statements DuckDB would plan for minutes, or fill gigabytes with, get a clear error at once."""
        before = counted(served)[limit]
        got, body, _ = sql(served, text)
        assert (got, body["status"]) == (status, status) and mentions in body["error"], body
        assert counted(served)[limit] == before + 1
        assert sql(served, "SELECT 42")[1]["rows"] == [[42]]

    def test_what_stays_within_the_bounds_runs(self, served: Service) -> None:
        """The bounds leave room: MAX_JOINS joins, a union of 60, CTEs, DESCRIBE, the catalog."""
        status, body, _ = sql(served, chain_join(MAX_JOINS + 1))
        assert (status, body["rows"]) == (200, [[10]])
        status, body, _ = sql(served, union(60), limit=100)
        assert status == 200 and len(body["rows"]) == 60
        for text in (
            "WITH u AS (SELECT user_id, count(*) AS n FROM requests GROUP BY 1) SELECT max(n) FROM u",
            "DESCRIBE requests",
            "SUMMARIZE SELECT cost_usd FROM requests",
            "SELECT count(*) FROM duckdb_tables()",
            "SELECT lpad('7', 3, '0'), repeat('ab', 3), printf('%5d', 42), format('{:>4}', 'x')",
            "SELECT len(range(10)), count(*) FROM generate_series(1, 100000)",
            "SELECT user_id, sum(cost_usd) OVER (PARTITION BY provider) FROM requests",
        ):
            status, body, _ = sql(served, text)
            assert status == 200, (text, body)


class TestShape:
    @pytest.mark.parametrize(
        ("text", "mentions"),
        [
            ("SELECT lpad('a', 100000, ' ')", "lpad()"),
            ("SELECT repeat('ab', n) FROM (SELECT 3 AS n)", "repeat()"),
            ("SELECT list_resize([1], 20000000)", "list_resize()"),
            ("SELECT len(range(200000000))", "range()"),
            (
                "SELECT generate_series(TIMESTAMP '2000-01-01', TIMESTAMP '2100-01-01', INTERVAL 1 SECOND)",
                "FROM",
            ),
            ("SELECT printf('%100000000d', 1)", "printf()"),
            ("SELECT printf('%*d', 100000000, 1)", "printf()"),
            ("SELECT format('{:>100000000}', 'x')", "format()"),
            ("SELECT format('{:>{}}', 'x', 100000000)", "format()"),
            ("SELECT printf(f, 1) FROM (SELECT '%100000000d' AS f)", "literal"),
            (
                "SELECT "
                + ", ".join(f"sum(range) OVER (ORDER BY range % {i + 1})" for i in range(40))
                + " FROM range(10)",
                "window functions",
            ),
            (
                "SELECT count(*) FROM range(10) GROUP BY CUBE(range, range + 1, range + 2, range + 3, "
                "range + 4, range + 5, range + 6)",
                "grouping sets",
            ),
            (
                "SELECT range FROM range(10) WHERE "
                + " OR ".join(f"(range = {i} AND range < {i})" for i in range(800)),
                "nodes",
            ),
        ],
    )
    def test_what_would_take_long_or_large_is_refused(
        self, served: Service, text: str, mentions: str
    ) -> None:
        """Huge sizes given to functions, and statements too intricate to plan quickly, are 400."""
        status, body, _ = sql(served, text)
        assert status == 400 and mentions in body["error"], body

    def test_the_text_is_bounded(self, served: Service) -> None:
        """Up to MAX_TEXT_BYTES of SQL (UTF-8) run; one byte more is 413, counted."""
        head = "SELECT 'é' AS e -- "
        text = head + "x" * (MAX_TEXT_BYTES - len(head.encode()))
        status, body, _ = sql(served, text)
        assert (status, body["rows"]) == (200, [["é"]])
        before = counted(served)["sql_text_bytes"]
        status, body, _ = sql(served, text + "x")
        assert (status, body["status"]) == (413, 413) and str(MAX_TEXT_BYTES) in body["error"]
        assert counted(served)["sql_text_bytes"] == before + 1


class TestFiles:
    @pytest.mark.parametrize(
        "template",
        [
            "SELECT content FROM read_blob('{db}')",
            "SELECT size FROM read_blob('{db}.wal')",
            "SELECT * FROM read_blob(['{db}'])",
            "SELECT * FROM read_text('{db}.wal')",
            "SELECT * FROM read_csv('{db}.wal', all_varchar = true, header = false)",
            "SELECT * FROM read_blob('{db}.tmp/*')",
            "SELECT * FROM glob('{db}*')",
            "SELECT * FROM query('SELECT * FROM read_blob(''{db}'')')",
            "SELECT * FROM '{db}.wal'",
            "DESCRIBE '{db}.csv'",
            "SELECT * FROM (SELECT 1) t, LATERAL (SELECT * FROM read_blob('{db}'))",
        ],
    )
    def test_the_database_files_cannot_be_read(self, served: Service, template: str) -> None:
        """Not the database file, its WAL, its spill directory, nor through another SQL string: 400."""
        before = counted(served)["sql_files"]
        status, body, _ = sql(served, template.format(db=Path(served.db).resolve()))
        assert (status, body["status"]) == (400, 400), body
        assert "not allowed" in body["error"] or "not a table" in body["error"]
        assert counted(served)["sql_files"] == before + 1


class TestResultSize:
    def test_rows_beyond_the_byte_bound_are_cut(self, served: Service) -> None:
        """Rows stop once their JSON reaches sql_max_result_mib (1 MiB here): truncated, counted."""
        before = counted(served)["sql_max_result_mib"]
        status, body, _ = sql(served, "SELECT range AS n, repeat('x', 10000) AS s FROM range(400)", limit=400)
        assert status == 200 and body["truncated"] is True
        rows = body["rows"]
        assert 50 < len(rows) < 400 and [r[0] for r in rows] == list(range(len(rows)))
        assert all(r[1] == "x" * 10000 for r in rows)
        assert len(json.dumps(rows).encode()) <= 1024 * 1024
        assert counted(served)["sql_max_result_mib"] == before + 1

    def test_a_first_row_over_the_bound_is_413(self, served: Service) -> None:
        """A single row larger than the bound cannot be sent in part: 413, counted."""
        before = counted(served)["sql_max_result_mib"]
        status, body, _ = sql(served, "SELECT string_agg(repeat('x', 10000), '') FROM range(200)")
        assert (status, body["status"]) == (413, 413) and "sql_max_result_mib" in body["error"]
        assert counted(served)["sql_max_result_mib"] == before + 1

    def test_the_row_limit_still_says_truncated(self, served: Service) -> None:
        """Small rows: the row limit cuts first, as before, and is not counted as a size cut."""
        before = counted(served)["sql_max_result_mib"]
        status, body, _ = sql(served, "SELECT range FROM range(1000)", limit=300)
        assert status == 200 and body["truncated"] is True and len(body["rows"]) == 300
        status, body, _ = sql(served, "SELECT range FROM range(300)", limit=300)
        assert status == 200 and body["truncated"] is False and len(body["rows"]) == 300
        assert counted(served)["sql_max_result_mib"] == before
