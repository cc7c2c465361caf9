"""The HTTP JSON API (default 127.0.0.1:9464): a thin adapter over the query functions.

The same server serves the dashboard's files (``dashboard.py``) and ``/metrics``.

Every route parses its parameters into the same arguments the Python functions take, calls the
function on a fresh reader cursor under a deadline (``deadline.QueryRunner``: the query routes'
``query_timeout_seconds``, SQL's ``sql_timeout_seconds``), and answers the result's JSON form.
Errors answer ``{"error": "...", "status": N}`` with that status; the error classes decide the
status. Every answer a bound gives (a query stopped, SQL refused or cut) is counted on ``/metrics``.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import duckdb

from user_metrics import __version__
from user_metrics.coverage_counts import CoverageCounts
from user_metrics.errors import (
    BadRows,
    DeadlineExceeded,
    InvalidInput,
    MethodNotAllowed,
    NotFound,
    RequestTimeout,
    Unavailable,
    UserMetricsError,
    http_status,
)
from user_metrics.net.auth import Tokens
from user_metrics.net.http_server import BackgroundServer, Bounds, Handler
from user_metrics.query.anomalies import anomalies
from user_metrics.query.calendar import request_zone
from user_metrics.query.coverage import DEFAULT_KEYS, coverage
from user_metrics.query.deadline import QueryRunner
from user_metrics.query.properties import by_property, property_keys
from user_metrics.query.results import DEFAULT_VALUES, Statement, to_json
from user_metrics.query.safe_sql import DEFAULT_ROWS, run_sql
from user_metrics.query.statement_csv import statement_csv
from user_metrics.query.statements import DEFAULT_LIMIT, statement
from user_metrics.query.timeseries import timeseries
from user_metrics.query.totals import totals
from user_metrics.query.users import recent_requests, user, users
from user_metrics.serve import dashboard, revenue_api
from user_metrics.serve.metrics import RenderedMetrics
from user_metrics.stats import Stats

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
# Bytes of request bodies (SQL queries) being read or held at once: 16 of the largest.
BODY_BUDGET = 16 * MAX_BODY
STOP_GRACE_S = 10.0  # how long stop() waits for interrupted queries to leave DuckDB
FILTERS = ("since", "until", "tz", "property", "model", "service", "environment")
# route -> the query parameters it accepts (besides the path's own)
PARAMETERS: dict[str, tuple[str, ...]] = {
    "users": (*FILTERS, "sort", "limit", "offset", "search"),
    "user": FILTERS,
    "requests": (*FILTERS, "limit"),
    "property_keys": (),
    "timeseries": (*FILTERS, "bucket"),
    "properties": (*FILTERS, "limit"),
    "totals": FILTERS,
    "anomalies": ("since", "until", "tz", "history", "threshold"),
    "coverage": (*FILTERS, "limit"),
    "statements": ("month", "user", "tz", "limit", "offset", "format"),
}


def _int(params: dict[str, Any], name: str, default: int) -> int:
    text = params.pop(name, None)
    if text is None:
        return default
    # ASCII digits only: int() would also take "1_000", " 7 " and other scripts' digits.
    if not re.fullmatch(r"-?[0-9]+", text):
        raise InvalidInput(f"{name}: must be a whole number, got {text!r}")
    return int(text)


def _arguments(route: str, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Query-string pairs -> keyword arguments of the query function; unknown names are errors."""
    allowed = PARAMETERS[route]
    params: dict[str, Any] = {}
    properties = []
    for name, value in pairs:
        if name not in allowed:
            takes = f"takes {', '.join(allowed)}" if allowed else "takes no parameters"
            raise InvalidInput(f"{name}: unknown parameter; this endpoint {takes}")
        if name == "property":
            properties.append(value)
        elif name in params:
            raise InvalidInput(f"{name}: given more than once")
        else:
            params[name] = value
    if properties:
        params["properties"] = properties
    if route == "users":
        params["limit"] = _int(params, "limit", 100)
        params["offset"] = _int(params, "offset", 0)
    if route == "requests":
        params["limit"] = _int(params, "limit", 20)
    if route == "properties":
        params["limit"] = _int(params, "limit", DEFAULT_VALUES)
    if route == "coverage":
        params["limit"] = _int(params, "limit", DEFAULT_KEYS)
    if route == "statements":
        params["limit"] = _int(params, "limit", DEFAULT_LIMIT)
        params["offset"] = _int(params, "offset", 0)
    if "threshold" in params:
        try:
            params["threshold"] = float(params["threshold"])
        except ValueError:
            raise InvalidInput(f"threshold: must be a number, got {params['threshold']!r}") from None
    return params


@dataclass(frozen=True)
class CsvAnswer:
    """An answer sent as CSV (``text/csv``) instead of JSON."""

    text: str
    headers: tuple[tuple[str, str], ...] = ()


def _statement(con: duckdb.DuckDBPyConnection, a: dict[str, Any]) -> Statement | CsvAnswer:
    """A month's statement: JSON, or with ``format=csv`` its CSV (this page, the month's totals)."""
    fmt = a.pop("format", "json")
    if fmt not in ("json", "csv"):
        raise InvalidInput(f"format: {fmt!r}; json (the default) or csv")
    found = statement(con, a.pop("month", ""), a.pop("user", None), **a)
    if fmt == "json":
        return found
    return CsvAnswer(statement_csv([found]), (("X-Total-Users", str(found.totals.users)),))


class QueryDeadline(DeadlineExceeded):
    """A query route's query ran past ``query_timeout_seconds``."""

    limit = "query_timeout_seconds"


class ApiServer(BackgroundServer):
    """Serves the API on its own threads; ``open_reader`` gives one DuckDB cursor per query.

    Everything but ``/healthz`` needs one of ``read_tokens`` when any are configured, except
    ``POST /api/v1/revenue``, a write: it needs one of ``write_tokens`` (the app passes the ingest
    tokens: whoever may send data may import it, a read token may not; the read tokens while no
    ingest token is set, so an import is never less guarded than a read).
    """

    def __init__(
        self,
        address: tuple[str, int],
        open_reader: Callable[[], duckdb.DuckDBPyConnection],
        *,
        stats: Stats,
        query_timeout: float,
        sql_timeout: float,
        sql_max_rows: int,
        sql_max_concurrent: int,
        sql_max_result_bytes: int,
        receive_timeout: float,
        max_connections: int,
        metrics: RenderedMetrics | None = None,
        read_tokens: Tokens | None = None,
        write_tokens: Tokens | None = None,
        tls: ssl.SSLContext | None = None,
        health: Callable[[], str | None] = lambda: None,
        coverage: CoverageCounts | None = None,
        import_revenue: revenue_api.Importer | None = None,
        timezone: str = "UTC",
        plan_property: str = "",
    ) -> None:
        """``coverage``: the live counters ``/api/v1/coverage`` reports beside the stored shares;
        ``import_revenue``: what ``POST /api/v1/revenue`` does with the body; ``timezone``: the
        zone of a window whose request names none (``?tz=``); ``plan_property``: the ``[billing]``
        property that names the plan, which ``/healthz`` tells the dashboard."""
        self.health = health
        self.plan_property = plan_property.strip()
        self.import_revenue = import_revenue
        self.timezone = timezone
        self.coverage = coverage
        self.queries = QueryRunner(open_reader)
        self.sql_queries = QueryRunner(open_reader, max_running=sql_max_concurrent)
        self.stats = stats
        self.metrics = metrics
        self.query_timeout = query_timeout
        self.sql_timeout = sql_timeout
        self.sql_max_rows = sql_max_rows
        self.sql_max_result_bytes = sql_max_result_bytes
        self.read_tokens = read_tokens or Tokens((), "read")
        self.write_tokens = write_tokens or Tokens((), "ingest")
        api = self

        class ApiHandler(_Handler):
            server_api = api

        super().__init__(
            address, ApiHandler, tls, stats, Bounds(receive_timeout, max_connections, BODY_BUDGET)
        )

    def route(
        self, method: str, path: str, pairs: list[tuple[str, str]], body: bytes, content_type: str = ""
    ) -> Any:
        """The JSON answer for one request; raises a domain error for the error envelope."""
        parts = path.split("/")[1:]
        if "" in parts:  # "/api/v1/users/" is not the list, nor a user without an id: it names nothing
            raise NotFound(
                f"no such endpoint: {path} (no path has an empty segment or a trailing slash; "
                "one user is /api/v1/users/{user_id})"
            )
        segments = [unquote(s) for s in parts]
        if segments == ["healthz"]:
            self._method(method, "GET")
            problem = self.health()
            if problem is not None:
                raise Unavailable(f"unhealthy: {problem}")
            # The server facts the dashboard reads (no data, so no token): plan_property null when unset.
            return {
                "status": "ok",
                "version": __version__,
                "timezone": self.timezone,
                "plan_property": self.plan_property or None,
            }
        if segments[:2] != ["api", "v1"] or len(segments) < 3:
            raise NotFound(f"no such endpoint: {path}")
        rest = segments[2:]
        if rest == ["sql"]:
            self._method(method, "POST")
            return self._sql(body)
        if rest == ["revenue"] and method not in ("GET", "POST"):
            raise MethodNotAllowed(f"{method} is not allowed here; use GET or POST", allow="GET, HEAD, POST")
        if rest == ["revenue"] and method == "POST":
            return revenue_api.import_request(self.import_revenue, pairs, body, content_type)
        self._method(method, "GET")
        work = revenue_api.list_request(pairs) if rest == ["revenue"] else self._query(rest, pairs)
        if work is None:
            raise NotFound(f"no such endpoint: {path}")
        timeout = self.query_timeout
        return self.queries.run(
            work,
            timeout,
            timed_out=lambda: QueryDeadline(
                f"the query ran past query_timeout_seconds ({timeout:g} s) and was stopped; "
                "ask for a shorter window or fewer rows"
            ),
        )

    def _query(
        self, rest: list[str], pairs: list[tuple[str, str]]
    ) -> Callable[[duckdb.DuckDBPyConnection], Any] | None:
        """The call of the query function a path under /api/v1/ names (arguments parsed); None: no route."""
        name = rest[1] if len(rest) > 1 else ""  # a user id or a property key
        call: Callable[[duckdb.DuckDBPyConnection, dict[str, Any]], Any]
        if rest == ["users"]:
            route, call = "users", lambda con, a: users(con, **a)
        elif len(rest) == 2 and rest[0] == "users":
            route, call = "user", lambda con, a: user(con, name, **a)
        elif len(rest) == 3 and rest[0] == "users" and rest[2] == "timeseries":
            route, call = "timeseries", lambda con, a: timeseries(con, name, **a)
        elif len(rest) == 3 and rest[0] == "users" and rest[2] == "requests":
            route, call = "requests", lambda con, a: recent_requests(con, name, **a)
        elif rest == ["properties"]:
            route, call = "property_keys", lambda con, a: property_keys(con)
        elif rest == ["timeseries"]:
            route, call = "timeseries", lambda con, a: timeseries(con, None, **a)
        elif len(rest) == 2 and rest[0] == "properties":
            route, call = "properties", lambda con, a: by_property(con, name, **a)
        elif rest == ["totals"]:
            route, call = "totals", lambda con, a: totals(con, **a)
        elif rest == ["anomalies"]:
            route, call = "anomalies", lambda con, a: anomalies(con, **a)
        elif rest == ["statements"]:
            route, call = "statements", _statement
        elif rest == ["coverage"]:
            live = self.coverage.snapshot() if self.coverage is not None else None
            route, call = "coverage", lambda con, a: coverage(con, live=live, **a)
        else:
            return None
        arguments = _arguments(route, pairs)
        if "tz" in PARAMETERS[route]:
            arguments["tz"] = request_zone(arguments.get("tz"), self.timezone)
        return lambda con: call(con, arguments)

    @staticmethod
    def _method(method: str, allowed: str) -> None:
        if method != allowed:
            allow = "GET, HEAD" if allowed == "GET" else allowed
            raise MethodNotAllowed(f"{method} is not allowed here; use {allowed}", allow=allow)

    def _sql(self, body: bytes) -> Any:
        try:
            request = json.loads(body or b"null")
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise InvalidInput(f"body: not JSON ({exc})") from None
        if not isinstance(request, dict) or not isinstance(request.get("sql"), str):
            raise InvalidInput('body: must be {"sql": "SELECT ...", "limit": 1000}')
        unknown = sorted(set(request) - {"sql", "limit"})
        if unknown:
            raise InvalidInput(f"body: unknown fields {unknown}; known: sql, limit")
        limit = request.get("limit", min(DEFAULT_ROWS, self.sql_max_rows))
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > self.sql_max_rows:
            raise InvalidInput(f"limit: at most {self.sql_max_rows} rows, got {limit}")
        result = run_sql(
            self.sql_queries,
            request["sql"],
            limit=limit,
            timeout=self.sql_timeout,
            max_bytes=self.sql_max_result_bytes,
        )
        if result.truncated and len(result.rows) < limit:  # cut by bytes, not by rows
            self.stats.limit_read("sql_max_result_mib")
        return result

    def stop(self) -> None:
        """Stop serving, then interrupt the queries still running and wait a little for them."""
        super().stop()
        for runner in (self.queries, self.sql_queries):
            runner.stop(STOP_GRACE_S)


class _Handler(Handler):
    server_api: ApiServer

    def serve(self, method: str) -> None:
        url = urlsplit(self.path)
        method = "GET" if method == "HEAD" else method  # send() leaves out the body
        page = dashboard.lookup(url.path) if method == "GET" else None
        if page is not None:
            self.close_connection = self.close_connection or not self.finish_body()
            self.send(HTTPStatus.OK, page[0], page[1], dashboard.HEADERS)
            return
        try:
            if method == "POST" and url.path.rstrip("/") == "/api/v1/revenue":
                self.authenticate(self.server_api.write_tokens)
            elif url.path.rstrip("/") != "/healthz":
                self.authenticate(self.server_api.read_tokens)
            if url.path == "/metrics" and method == "GET" and self.server_api.metrics is not None:
                self.close_connection = self.close_connection or not self.finish_body()
                self._scrape(self.server_api.metrics)
                return
            body = self.read_body(MAX_BODY, required=False)
            result = self.server_api.route(
                method,
                url.path,
                parse_qsl(url.query, keep_blank_values=True),
                bytes(body),
                self.headers.get("Content-Type", ""),
            )
            if isinstance(result, CsvAnswer):
                headers = [("Cache-Control", "no-store"), *result.headers]
                self.send(HTTPStatus.OK, result.text.encode("utf-8"), "text/csv; charset=utf-8", headers)
                return
            self._answer(HTTPStatus.OK, to_json(result))
        except (RequestTimeout, ConnectionError):
            raise  # 408 from the Handler, which counts it; or the client is gone
        except UserMetricsError as exc:
            limit = getattr(exc, "limit", None)  # the bound that gave this answer
            if limit:
                self.server_api.stats.limit_read(limit)
            if not self.finish_body():  # drained when it can be, so the client reads the answer
                self.close_connection = True
            self.answer_error(exc)
        except Exception as exc:  # noqa: BLE001 - a reader's bug must still get an answer
            log.exception("%s %s failed", method, self.path)
            self._answer(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"internal error: {exc}", "status": 500})

    def answer_error(self, error: UserMetricsError) -> None:
        status = http_status(error)
        payload: dict[str, Any] = {"error": str(error), "status": status}
        if isinstance(error, BadRows):  # each bad row of an import, and how many there are
            payload |= {"errors": error.problems, "bad_rows": error.count}
        self._answer(HTTPStatus(status), payload, self.error_headers(error))

    def _scrape(self, metrics: RenderedMetrics) -> None:
        """The exposition format the scraper asks for (OpenMetrics or Prometheus text)."""
        try:
            data, content_type = metrics.render(self.headers.get("Accept", ""))
        except Exception as exc:  # noqa: BLE001 - a failed scrape must still be answered
            log.exception("scrape failed")
            self._answer(HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"scrape failed: {exc}", "status": 503})
            return
        self.send(HTTPStatus.OK, data, content_type)

    def _answer(self, status: HTTPStatus, payload: Any, headers: list[tuple[str, str]] | None = None) -> None:
        data = json.dumps(payload, ensure_ascii=False, allow_nan=False).encode("utf-8")
        self.send(
            status, data, "application/json; charset=utf-8", [("Cache-Control", "no-store"), *(headers or [])]
        )
