"""The HTTP JSON API over a real socket: routes, the error envelope, and the guarded SQL endpoint."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from conftest import Service
from query_data import DAY0, USERS, build, in_window, requests_for

from user_metrics.query.properties import by_property as query_by_property
from user_metrics.query.results import to_json
from user_metrics.query.timeseries import timeseries as query_timeseries
from user_metrics.query.totals import totals as query_totals
from user_metrics.query.users import recent_requests as query_recent_requests
from user_metrics.query.users import user as query_user
from user_metrics.query.users import users as query_users

TRUTHS = build(seed=11, count=200)
SINCE, UNTIL = "2026-11-10T03:00:00Z", "2026-11-13T21:30:00Z"
WINDOW = f"since={SINCE}&until={UNTIL}"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("api") / "um.duckdb", sql_timeout_seconds=1.0, sql_max_rows=500)
    app = svc.start()
    for req in requests_for(TRUTHS):
        app.ingestor.export(req)
    yield svc
    svc.stop()


def call(
    served: Service, method: str, path: str, body: Any = None, raw: bytes | None = None
) -> tuple[int, Any]:
    assert served.app is not None
    url = urlsplit(served.app.api_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
    response = conn.getresponse()
    payload = response.read()
    assert response.getheader("Content-Type") == "application/json; charset=utf-8"
    conn.close()
    return response.status, json.loads(payload)


def raw_call(served: Service, method: str, path: str) -> tuple[int, http.client.HTTPMessage, bytes]:
    """Status, headers and the raw body (none for HEAD) of one bodiless request."""
    assert served.app is not None
    url = urlsplit(served.app.api_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def reader_answer(served: Service, fn: Any, *args: Any, **kwargs: Any) -> Any:
    assert served.app is not None
    with served.app.store.reader() as con:
        return to_json(fn(con, *args, **kwargs))


class TestRoutes:
    def test_healthz(self, served: Service) -> None:
        """GET /healthz answers ok, and plan_property null while [billing] names none."""
        status, body = call(served, "GET", "/healthz")
        assert status == 200 and body["status"] == "ok" and body["version"]
        assert body["plan_property"] is None

    def test_healthz_names_the_plan_property(self, tmp_path: Path) -> None:
        """With [billing] plan prices, /healthz names their property (the dashboard's margin by plan)."""
        svc = Service(tmp_path / "um.duckdb", plan_property=" tier ", plan_prices=("gold=30/month",))
        svc.start()
        try:
            status, body = call(svc, "GET", "/healthz")
        finally:
            svc.stop()
        assert status == 200 and body["plan_property"] == "tier"

    def test_users_answers_the_query_functions_json(self, served: Service) -> None:
        """GET /api/v1/users is users() as JSON: {"users": [...], "total": N, ...}."""
        status, body = call(
            served, "GET", f"/api/v1/users?{WINDOW}&sort=-requests&limit=3&offset=1&property=plan%3Dpro"
        )
        assert status == 200
        want = reader_answer(
            served, query_users, SINCE, UNTIL, sort="-requests", limit=3, offset=1, properties=["plan=pro"]
        )
        assert body == want and set(body) == {"users", "total", "since", "until"}
        assert isinstance(body["users"][0]["cost_usd"], str), "money is an exact decimal string"

    @pytest.mark.parametrize("user_id", USERS)
    def test_user_paths_take_any_id_percent_encoded(self, served: Service, user_id: str) -> None:
        """Ids with quotes, unicode, spaces, slashes and SQL round-trip through the path."""
        status, body = call(served, "GET", f"/api/v1/users/{quote(user_id, safe='')}?{WINDOW}")
        assert status == 200 and body == reader_answer(served, query_user, user_id, SINCE, UNTIL)
        want = sum(
            1
            for t in in_window(
                TRUTHS, DAY0 + timedelta(hours=3), DAY0 + timedelta(days=3, hours=21, minutes=30)
            )
            if t.user == user_id
        )
        assert body["requests"] == want

    def test_timeseries_routes(self, served: Service) -> None:
        """Per-user and whole-application series."""
        status, body = call(served, "GET", f"/api/v1/users/alice/timeseries?{WINDOW}&bucket=hour")
        assert status == 200 and body == reader_answer(
            served, query_timeseries, "alice", SINCE, UNTIL, bucket="hour"
        )
        status, body = call(served, "GET", f"/api/v1/timeseries?{WINDOW}&model=gpt-4o-mini")
        assert status == 200 and body == reader_answer(
            served, query_timeseries, None, SINCE, UNTIL, model="gpt-4o-mini"
        )

    def test_properties_and_totals(self, served: Service) -> None:
        """GET /api/v1/properties/{key} and /api/v1/totals."""
        status, body = call(served, "GET", f"/api/v1/properties/plan?{WINDOW}")
        assert status == 200 and body == reader_answer(served, query_by_property, "plan", SINCE, UNTIL)
        assert body["total_values"] == len(body["values"]) and body["truncated"] is False
        status, body = call(served, "GET", f"/api/v1/properties/plan?{WINDOW}&limit=2")
        assert status == 200 and body == reader_answer(
            served, query_by_property, "plan", SINCE, UNTIL, limit=2
        )
        assert len(body["values"]) == 2 and body["total_values"] > 2 and body["truncated"] is True
        status, body = call(served, "GET", f"/api/v1/totals?{WINDOW}&environment=prod")
        assert status == 200 and body == reader_answer(served, query_totals, SINCE, UNTIL, environment="prod")
        assert body["requests"] == sum(
            1
            for t in TRUTHS
            if t.environment == "prod" and SINCE <= t.start.isoformat().replace("+00:00", "Z") < UNTIL
        )

    def test_search_recent_requests_and_property_keys(self, served: Service) -> None:
        """users?search=, users/{id}/requests and the property keys, as the query functions answer."""
        status, body = call(served, "GET", f"/api/v1/users?{WINDOW}&search=O%27B")
        assert status == 200 and [u["user_id"] for u in body["users"]] == ["o'brien"]
        path = f"/api/v1/users/{quote('zoë 🙂', safe='')}/requests?{WINDOW}&limit=4&property=plan%3Dpro"
        status, body = call(served, "GET", path)
        assert status == 200 and body == reader_answer(
            served, query_recent_requests, "zoë 🙂", SINCE, UNTIL, limit=4, properties=["plan=pro"]
        )
        assert 0 < len(body["requests"]) <= 4
        status, body = call(served, "GET", "/api/v1/properties")
        assert (status, body) == (200, {"keys": ["plan"]})


class TestErrors:
    @pytest.mark.parametrize(
        ("path", "status", "mentions"),
        [
            ("/api/v1/users?since=the-day-before", 400, "since"),
            ("/api/v1/users?until=2026-02-30T00:00:00Z", 400, "until"),
            (f"/api/v1/users?since={UNTIL}&until={SINCE}", 400, "before"),
            ("/api/v1/users?limit=ten", 400, "limit"),
            ("/api/v1/users?limit=0", 400, "limit"),
            ("/api/v1/users?sort=cost", 400, "sort"),
            ("/api/v1/users?sinse=1d", 400, "sinse"),
            ("/api/v1/users?since=1d&since=2d", 400, "more than once"),
            ("/api/v1/users?property=plan", 400, "KEY=VALUE"),
            ("/api/v1/users/alice?limit=3", 400, "limit"),
            ("/api/v1/timeseries?bucket=fortnight", 400, "bucket"),
            ("/api/v1/timeseries?bucket=hour&since=3000d", 400, "window"),
            ("/api/v1/users/nobody", 404, "nobody"),
            ("/api/v1/users/nobody/requests", 404, "nobody"),
            ("/api/v1/users/alice/requests?limit=many", 400, "limit"),
            ("/api/v1/users/alice/requests?limit=1001", 400, "limit"),
            ("/api/v1/users/alice/requests?sort=-cost_usd", 400, "sort"),
            ("/api/v1/properties?since=1d", 400, "since"),
            ("/api/v1/properties/plan?limit=10001", 400, "limit: must be between 1 and 10000"),
            ("/api/v1/properties/plan?limit=0", 400, "limit: must be between 1 and 10000"),
            ("/api/v1/properties/plan?limit=all", 400, "limit: must be a whole number"),
            ("/api/v1/users/nobody/timeseries", 404, "nobody"),
            ("/api/v1/nothing", 404, "no such endpoint"),
            ("/metrics/../api", 404, "no such endpoint"),
            # An empty segment names nothing: not the list, not a user without an id.
            ("/api/v1/users/", 404, "empty segment"),
            ("/api/v1/users//timeseries", 404, "empty segment"),
            ("/api/v1/users//requests", 404, "empty segment"),
            ("/api/v1/properties/", 404, "empty segment"),
            ("/api/v1//totals", 404, "empty segment"),
            ("/healthz/", 404, "trailing slash"),
            # Numbers out of range or not plain ASCII digits name the parameter, never a 500.
            ("/api/v1/users?offset=99999999999999999999999", 400, "offset"),
            ("/api/v1/users?offset=9223372036854775808", 400, "offset"),
            ("/api/v1/users?sort=p95_latency_ms&offset=99999999999999999999999", 400, "offset"),
            ("/api/v1/users?offset=-1", 400, "offset"),
            ("/api/v1/users?offset=1_000", 400, "offset"),
            ("/api/v1/users?limit=%E0%A5%A7", 400, "limit"),  # DEVANAGARI DIGIT ONE
            ("/api/v1/users?limit=99999999999999999999999", 400, "limit"),
            ("/api/v1/users/alice/requests?limit=99999999999999999999", 400, "limit"),
            ("/api/v1/anomalies?threshold=1e999", 400, "threshold"),
            ("/api/v1/anomalies?threshold=nan", 400, "threshold"),
            ("/api/v1/anomalies?threshold=-1", 400, "threshold"),
        ],
    )
    def test_errors_use_one_envelope_with_the_status(
        self, served: Service, path: str, status: int, mentions: str
    ) -> None:
        """Every error is {"error": "...", "status": N} with that HTTP status and a reason."""
        got_status, body = call(served, "GET", path)
        assert got_status == status and set(body) == {"error", "status"} and body["status"] == status
        assert mentions in body["error"]

    def test_the_largest_offset_is_an_empty_page(self, served: Service) -> None:
        """offset takes any BIGINT: past the last user the page is empty, and total still counts."""
        status, body = call(served, "GET", f"/api/v1/users?{WINDOW}&offset={2**63 - 1}")
        assert status == 200 and body["users"] == [] and body["total"] > 0

    @pytest.mark.parametrize(
        ("method", "path"), [("POST", "/api/v1/users"), ("GET", "/api/v1/sql"), ("DELETE", "/api/v1/totals")]
    )
    def test_a_wrong_method_is_405(self, served: Service, method: str, path: str) -> None:
        """Each route takes one method, and the 405 names it in Allow (RFC 9110 requires it)."""
        status, body = call(served, method, path)
        assert status == 405 and body["status"] == 405
        assert raw_call(served, method, path)[1]["Allow"] == ("POST" if path.endswith("sql") else "GET, HEAD")

    @pytest.mark.parametrize(
        "path", ["/healthz", "/api/v1/totals", "/api/v1/users?limit=3", "/", "/static/app.js"]
    )
    def test_head_answers_the_get_headers_without_a_body(self, served: Service, path: str) -> None:
        """HEAD (uptime checkers, curl -I) gets GET's status and headers, and no body."""
        get_status, get_headers, get_body = raw_call(served, "GET", path)
        head_status, head_headers, head_body = raw_call(served, "HEAD", path)
        assert get_status == head_status == 200 and get_body and head_body == b""
        assert head_headers["Content-Type"] == get_headers["Content-Type"]
        if not path.startswith("/api"):  # (a query's answer may differ by a timestamp)
            assert head_headers["Content-Length"] == get_headers["Content-Length"] == str(len(get_body))
        assert raw_call(served, "HEAD", "/api/v1/sql")[0] == 405


class TestSql:
    def test_a_select_answers_columns_rows_and_truncated(self, served: Service) -> None:
        """POST /api/v1/sql runs one SELECT; decimals come back as exact strings."""
        status, body = call(
            served, "POST", "/api/v1/sql", {"sql": "SELECT count(*) AS n, sum(cost_usd) AS c FROM requests"}
        )
        assert status == 200 and body["columns"] == ["n", "c"] and body["truncated"] is False
        assert body["rows"][0][0] == len(TRUTHS)

    def test_the_row_limit_truncates(self, served: Service) -> None:
        """Asking for fewer rows than exist says truncated; above the configured maximum is refused."""
        status, body = call(
            served, "POST", "/api/v1/sql", {"sql": "FROM requests SELECT span_id", "limit": 7}
        )
        assert status == 200 and len(body["rows"]) == 7 and body["truncated"] is True
        status, body = call(served, "POST", "/api/v1/sql", {"sql": "SELECT 1", "limit": 501})
        assert status == 400 and "500" in body["error"]

    def test_a_long_query_is_stopped_at_the_time_limit(self, served: Service) -> None:
        """The configured limit (1 s here) interrupts a runaway query and the server keeps answering."""
        status, body = call(
            served, "POST", "/api/v1/sql", {"sql": "SELECT count(*) FROM range(1000000000000) a"}
        )
        assert status == 400 and "time limit" in body["error"]
        assert call(served, "POST", "/api/v1/sql", {"sql": "SELECT 42"})[1]["rows"] == [[42]]

    @pytest.mark.parametrize(
        ("sql", "mentions"),
        [
            ("COPY requests TO '/tmp/stolen.csv'", "not COPY"),
            ("ATTACH '/tmp/other.duckdb' AS other", "not ATTACH"),
            ("SELECT * FROM read_csv('/etc/passwd')", "disabled"),
            ("SELECT * FROM read_text('/etc/passwd')", "disabled"),
            ("SELECT * FROM glob('/etc/*')", "disabled"),
            ("SELECT * FROM 'https://example.com/x.parquet'", ""),
            ("INSTALL httpfs", "not"),
            ("LOAD httpfs", "not LOAD"),
            ("SET threads = 1", "not SET"),
            ("PRAGMA threads = 1", "not SET"),
            ("RESET lock_configuration", "not"),
            ("CREATE TABLE x (a INTEGER)", "not CREATE"),
            ("DROP TABLE requests", "not DROP"),
            ("DELETE FROM requests", "not DELETE"),
            ("UPDATE requests SET user_id = 'x'", "not UPDATE"),
            ("INSERT INTO users VALUES (999, 'x')", "not INSERT"),
            ("SELECT 1; DROP TABLE requests", "exactly one statement"),
            ("SELECT nextval('user_key_seq')", "read-only"),
            ("CHECKPOINT", "not"),
            ("EXPORT DATABASE '/tmp/dump'", "not"),
            ("SELEC 1", "Parser Error"),
            ("", "SELECT"),
        ],
    )
    def test_anything_but_a_read_only_select_is_refused_and_changes_nothing(
        self, served: Service, sql: str, mentions: str
    ) -> None:
        """Files, network, extensions, settings, DDL, DML and stacked statements are all refused."""
        before = call(served, "POST", "/api/v1/sql", {"sql": _FINGERPRINT})[1]["rows"]
        status, body = call(served, "POST", "/api/v1/sql", {"sql": sql})
        assert status == 400 and body["status"] == 400 and mentions in body["error"]
        assert call(served, "POST", "/api/v1/sql", {"sql": _FINGERPRINT})[1]["rows"] == before
        assert not Path("/tmp/stolen.csv").exists() and not Path("/tmp/dump").exists()

    @pytest.mark.parametrize(
        "body",
        [
            b"not json",
            b"[]",
            b'{"sql": 1}',
            b'{"query": "SELECT 1"}',
            b'{"sql": "SELECT 1", "limit": "x"}',
            b'{"sql": "SELECT 1", "extra": 1}',
        ],
    )
    def test_a_malformed_body_is_400(self, served: Service, body: bytes) -> None:
        """The body must be {"sql": "...", "limit": N}."""
        status, answer = call(served, "POST", "/api/v1/sql", raw=body)
        assert status == 400 and answer["status"] == 400


_FINGERPRINT = (
    "SELECT (SELECT count(*) FROM requests), (SELECT count(*) FROM users), "
    "(SELECT max(user_key) FROM users), (SELECT count(*) FROM duckdb_tables()), "
    "(SELECT value FROM duckdb_settings() WHERE name = 'threads'), "
    "(SELECT count(*) FROM duckdb_databases())"
)


def sql_over(served: Service, head: bytes, body: bytes) -> list[tuple[int, Any]]:
    """POST /api/v1/sql with these framing headers and body bytes, then GET /healthz on the same
    connection: the (status, JSON) of each answer the server gave before closing."""
    assert served.app is not None
    url = urlsplit(served.app.api_url)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(b"POST /api/v1/sql HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n" + body)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answers = []
        stream = sock.makefile("rb")
        for _ in range(2):
            status = int(stream.readline().split()[1])
            headers = http.client.parse_headers(stream)
            answers.append((status, json.loads(stream.read(int(headers["Content-Length"])))))
            if headers["Connection"] == "close":
                break
        return answers


class TestBodies:
    def test_a_chunked_body_is_read(self, served: Service) -> None:
        """A chunked SQL request is answered, and the connection goes on with the next request."""
        query = json.dumps({"sql": "SELECT 42 AS answer"}).encode()
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (query[:9], query[9:])) + b"0\r\n\r\n"
        [(status, body), (next_status, _)] = sql_over(served, b"Transfer-Encoding: chunked\r\n", chunks)
        assert (status, body["rows"], next_status) == (200, [[42]], 200)

    def test_a_body_over_1_mib_is_413(self, served: Service) -> None:
        """Declared too large: refused before it is read, drained, and the connection goes on."""
        body = b" " * (1024 * 1024 + 1)
        [(status, answer), (next_status, _)] = sql_over(served, b"Content-Length: %d\r\n" % len(body), body)
        assert (status, answer["status"], next_status) == (413, 413, 200)

    @pytest.mark.parametrize(
        ("head", "body"),
        [
            (b"Transfer-Encoding: chunked\r\n", b"-1\r\n{}\r\n0\r\n\r\n"),
            (b"Transfer-Encoding: chunked\r\n", b"100001\r\n"),
            (b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n", b"2\r\n{}\r\n0\r\n\r\n"),
        ],
        ids=["negative-chunk", "chunk-over-1-mib", "both-framings"],
    )
    def test_untrustworthy_framing_is_refused_and_the_connection_closed(
        self, served: Service, head: bytes, body: bytes
    ) -> None:
        [(status, answer)] = sql_over(served, head, body)
        assert status in (400, 413) and answer["status"] == status
