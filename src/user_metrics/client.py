"""``user_metrics.connect``: the query functions, from the DuckDB file or from a running server.

Both clients answer with the same result objects. ``LocalClient`` (``serve/local_client.py``) opens the
file read-only (possible only while no server holds it) and calls the query functions;
``RemoteClient`` calls the HTTP JSON API and turns the JSON back into the same objects. This
module imports neither DuckDB nor the query layer: the CLI asking a server starts in a fraction
of the time.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from user_metrics.errors import (
    BadRows,
    DeadlineExceeded,
    InvalidInput,
    NotFound,
    TooLarge,
    Unauthenticated,
    Unavailable,
    UserMetricsError,
)
from user_metrics.query.results import (
    Anomalies,
    Coverage,
    PropertyBreakdown,
    PropertyKeys,
    RecentRequests,
    SqlResult,
    Statement,
    Timeseries,
    Totals,
    UserPage,
    UserStats,
    format_instant,
    from_json,
)
from user_metrics.query.revenue_records import RevenueImport, RevenueRecords
from user_metrics.query.window import Instant
from user_metrics.settings import Settings

if TYPE_CHECKING:
    from user_metrics.serve.local_client import LocalClient


def _segment(name: str, value: str) -> str:
    """One percent-encoded segment of an API path; an empty one would name another endpoint."""
    if value == "":
        raise InvalidInput(f"{name}: must not be empty")
    return quote(value, safe="")


def _user_path(user_id: str | None) -> str:
    """The HTTP API's address of one user (which has no address for requests without a user id)."""
    if user_id is None:
        raise InvalidInput("user_id: the HTTP API names users by id; list users to see requests without one")
    return f"/api/v1/users/{_segment('user_id', user_id)}"


class RemoteClient:
    """Asks a running server's HTTP JSON API.

    Every window method takes ``tz=`` (an IANA zone name, sent as ``?tz=``); without one the
    server's ``timezone`` setting is the zone of calendar periods and buckets.
    """

    def __init__(
        self, url: str, timeout: float = 60.0, token: str | None = None, ca_file: str | None = None
    ) -> None:
        """``token``: a read token, when the server wants one; ``ca_file``: PEM to verify its TLS."""
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._token = token
        self._tls = ssl.create_default_context(cafile=ca_file) if ca_file else None

    def close(self) -> None:
        pass

    def __enter__(self) -> RemoteClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(
        self, path: str, params: dict[str, Any] | None = None, body: Any = None, content_type: str = ""
    ) -> Any:
        """GET ``path``, or POST ``body`` (JSON; bytes as ``content_type``), and decode the JSON answer."""
        pairs: list[tuple[str, str]] = []
        for name, value in (params or {}).items():
            if value is None:
                continue
            if name == "map":
                pairs += [("map", f"{ours}={theirs}") for ours, theirs in value.items()]
            elif name == "properties":
                items = value.items() if isinstance(value, dict) else value
                pairs += [("property", v if isinstance(v, str) else f"{v[0]}={v[1]}") for v in items]
            elif isinstance(value, datetime | date):
                pairs.append(
                    (name, format_instant(value) if isinstance(value, datetime) else value.isoformat())
                )
            else:
                pairs.append((name, str(value)))
        url = self.url + path + ("?" + urlencode(pairs) if pairs else "")
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
        if data is not None:
            request.add_header("Content-Type", content_type or "application/json")
        if self._token:
            request.add_header("Authorization", f"Bearer {self._token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self._tls) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                answer = json.loads(exc.read())
                message = answer["error"]
            except (ValueError, KeyError, TypeError):
                answer, message = {}, f"HTTP {exc.code} from {url}"
            if exc.code == 400 and isinstance(answer.get("errors"), list):
                raise BadRows(answer["errors"], int(answer.get("bad_rows", len(answer["errors"])))) from None
            error: type[UserMetricsError] = {
                400: InvalidInput,
                401: Unauthenticated,
                404: NotFound,
                413: TooLarge,
                504: DeadlineExceeded,
            }.get(exc.code, Unavailable)
            raise error(message) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unavailable(f"cannot reach the server at {self.url}: {reason}") from exc

    def health(self) -> dict[str, Any]:
        """The server's /healthz answer; Unavailable when nothing answers."""
        answer: dict[str, Any] = self._call("/healthz")
        return answer

    def users(self, since: Instant = None, until: Instant = None, **kwargs: Any) -> UserPage:
        return from_json(UserPage, self._call("/api/v1/users", {"since": since, "until": until, **kwargs}))

    def user(
        self, user_id: str | None, since: Instant = None, until: Instant = None, **kwargs: Any
    ) -> UserStats:
        path = _user_path(user_id)
        return from_json(UserStats, self._call(path, {"since": since, "until": until, **kwargs}))

    def timeseries(
        self, user_id: str | None = None, since: Instant = None, until: Instant = None, **kwargs: Any
    ) -> Timeseries:
        path = "/api/v1/timeseries" if user_id is None else _user_path(user_id) + "/timeseries"
        return from_json(Timeseries, self._call(path, {"since": since, "until": until, **kwargs}))

    def by_property(
        self, key: str, since: Instant = None, until: Instant = None, **kwargs: Any
    ) -> PropertyBreakdown:
        path = f"/api/v1/properties/{_segment('key', key)}"
        return from_json(PropertyBreakdown, self._call(path, {"since": since, "until": until, **kwargs}))

    def recent_requests(
        self, user_id: str | None, since: Instant = None, until: Instant = None, **kwargs: Any
    ) -> RecentRequests:
        path = _user_path(user_id) + "/requests"
        return from_json(RecentRequests, self._call(path, {"since": since, "until": until, **kwargs}))

    def property_keys(self) -> PropertyKeys:
        return from_json(PropertyKeys, self._call("/api/v1/properties"))

    def totals(self, since: Instant = None, until: Instant = None, **kwargs: Any) -> Totals:
        return from_json(Totals, self._call("/api/v1/totals", {"since": since, "until": until, **kwargs}))

    def anomalies(self, since: Instant = None, until: Instant = None, **kwargs: Any) -> Anomalies:
        return from_json(
            Anomalies, self._call("/api/v1/anomalies", {"since": since, "until": until, **kwargs})
        )

    def coverage(self, since: Instant = None, until: Instant = None, **kwargs: Any) -> Coverage:
        """Per service and scope: stored shares in the window, and the server's live key report."""
        return from_json(Coverage, self._call("/api/v1/coverage", {"since": since, "until": until, **kwargs}))

    def statement(
        self, month: str, user_id: str | None = None, tz: str | None = None, **kwargs: Any
    ) -> Statement:
        """A month's statement (``query/statements.py``): one user, or a page of users (``limit``,
        ``offset``)."""
        if user_id is not None:
            _segment("user_id", user_id)
        params = {"month": month, "user": user_id, "tz": tz, **kwargs}
        return from_json(Statement, self._call("/api/v1/statements", params))

    def sql(self, sql: str, limit: int | None = None) -> SqlResult:
        """``limit`` None: the server's default (1000 rows, or its ``sql_max_rows`` if lower)."""
        body: dict[str, Any] = {"sql": sql} if limit is None else {"sql": sql, "limit": limit}
        return from_json(SqlResult, self._call("/api/v1/sql", body=body))

    def revenue_records(
        self,
        user: str | None = None,
        since: Instant = None,
        until: Instant = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> RevenueRecords:
        params = {"user": user, "since": since, "until": until, "limit": limit, "offset": offset}
        return from_json(RevenueRecords, self._call("/api/v1/revenue", params))

    def import_revenue(
        self,
        data: Any,
        *,
        format: str | None = None,  # noqa: A002 - the name the CLI and HTTP use
        mapping: Mapping[str, str] | None = None,
        tz: str | None = None,
        source: str | None = None,
    ) -> RevenueImport:
        """POST revenue records: ``data`` is CSV or JSON text (or bytes), or a list of dicts
        (sent as JSON). ``source`` is kept with the new records (default ``http``)."""
        body, fmt = revenue_body(data, format)
        content_type = "application/json" if fmt == "json" else "text/csv; charset=utf-8"
        params = {"format": fmt, "map": dict(mapping or {}), "tz": tz, "source": source}
        return from_json(RevenueImport, self._call("/api/v1/revenue", params, body, content_type))


def revenue_body(data: Any, fmt: str | None) -> tuple[bytes, str]:
    """Revenue records as the bytes of a file and its format (json or csv): a list of dicts is
    JSON (Decimal amounts as exact text); text starting with ``[`` or ``{`` is JSON, else CSV."""
    if isinstance(data, list | tuple | dict):
        return json.dumps(data, default=_exact).encode(), fmt or "json"
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if fmt is None:
        fmt = "json" if raw.lstrip()[:1] in (b"[", b"{") else "csv"
    return raw, fmt


def _exact(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"cannot send {type(value).__name__} as JSON")


def _import_into_file(
    path: Path, data: Any, fmt: str | None, mapping: Mapping[str, str], tz: str | None, source: str | None
) -> tuple[int, int]:
    """Write revenue records into the database file with the store's own writer (no server may
    hold the file meanwhile): (new, unchanged)."""
    from user_metrics.ingest.revenue_import import import_revenue
    from user_metrics.stats import Stats
    from user_metrics.store.writer import Store

    body, fmt = revenue_body(data, fmt)  # as a server would receive it: the same answer
    store = Store(path, Stats())
    try:
        return import_revenue(store, body, fmt, mapping, tz, source)
    finally:
        store.close()


def _lake_client(catalog: str, memory_limit_mib: int, timezone: str) -> LocalClient:
    """A client reading the lake whose catalog is ``catalog``; revenue imports are written to it."""
    from user_metrics.ingest.revenue_import import import_revenue
    from user_metrics.node import LakeWrites
    from user_metrics.serve.local_client import LocalClient
    from user_metrics.stats import Stats
    from user_metrics.store.lake import Lake

    lake = Lake(
        catalog,
        None,
        Stats(),
        memory_limit_mib=memory_limit_mib,
        max_dimension_values=Settings.max_dimension_values,
        create=False,
    )

    def into_lake(
        _: Path, data: Any, fmt: str | None, mapping: Mapping[str, str], tz: str | None, source: str | None
    ) -> tuple[int, int]:
        body, fmt = revenue_body(data, fmt)  # as a server would receive it: the same answer
        return import_revenue(LakeWrites(lake), body, fmt, mapping, tz, source)  # type: ignore[arg-type]

    try:
        return LocalClient(
            "lake", memory_limit_mib=memory_limit_mib, importer=into_lake, timezone=timezone, source=lake
        )
    except BaseException:
        lake.close()
        raise


def connect(
    path: str | Path | None = None,
    url: str | None = None,
    *,
    lake: str | None = None,
    token: str | None = None,
    ca_file: str | None = None,
    memory_limit_mib: int = Settings.memory_limit_mib,
    timezone: str = Settings.timezone,
) -> LocalClient | RemoteClient:
    """A client for the database file at ``path`` (read-only), the server at ``url`` or the lake
    whose catalog is ``lake`` (a PostgreSQL connection string).

    With none, the default database file (``./user_metrics.duckdb``). ``token`` and
    ``ca_file`` are for servers with read tokens and TLS; ``memory_limit_mib`` bounds DuckDB
    when reading the file or the lake (0: DuckDB's default); ``timezone`` is the default zone for
    calendar periods (a server uses its own ``timezone`` setting). Every query takes ``tz=``.
    """
    if sum(x is not None for x in (path, url, lake)) > 1:
        raise InvalidInput("connect: give one of path, url and lake")
    if url is not None:
        return RemoteClient(url, token=token, ca_file=ca_file)
    if lake is not None:
        return _lake_client(lake, memory_limit_mib, timezone)
    from user_metrics.serve.local_client import LocalClient

    return LocalClient(
        path if path is not None else Settings().db,
        memory_limit_mib=memory_limit_mib,
        importer=_import_into_file,
        timezone=timezone,
    )
