"""``LocalClient``: the query functions on the DuckDB file itself, opened read-only, or on a lake.

A file can be read only while no server holds it; a lake (``connect(lake=CATALOG)``) any time,
as every node reads it. It answers with the same result objects as
``RemoteClient`` (``client.py``), which asks a running server instead; this module is imported
only when a file is read, so asking a server never loads DuckDB.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import duckdb

from user_metrics.errors import Unavailable
from user_metrics.query.anomalies import anomalies as find_anomalies
from user_metrics.query.calendar import request_zone
from user_metrics.query.coverage import coverage
from user_metrics.query.deadline import QueryRunner
from user_metrics.query.properties import by_property, property_keys
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
)
from user_metrics.query.revenue_records import DEFAULT_RECORDS, RevenueImport, RevenueRecords, revenue_records
from user_metrics.query.safe_sql import DEFAULT_ROWS, DEFAULT_TIMEOUT_S, run_sql
from user_metrics.query.statements import statement
from user_metrics.query.timeseries import timeseries
from user_metrics.query.totals import totals
from user_metrics.query.users import recent_requests, user, users
from user_metrics.query.window import Instant
from user_metrics.settings import Settings

CLOSE_GRACE_S = 10.0  # how long close() waits for an interrupted SQL query to leave DuckDB
# Writes revenue records into the file (path, data, format, mapping, tz, source) -> (new, unchanged):
# ``client.connect`` gives one that opens the file with the store's writer.
FileImporter = Callable[[Path, Any, str | None, Mapping[str, str], str | None, str | None], tuple[int, int]]


class Source(Protocol):
    """What a client reads other than a file: a lake (``store/lake.py``), handed in by ``connect``."""

    def reader(self) -> duckdb.DuckDBPyConnection: ...

    def close(self) -> None: ...


def open_read_only(path: str | Path, memory_limit_mib: int = 0) -> duckdb.DuckDBPyConnection:
    """Open the database file for reading, locked down like the server's readers.

    ``memory_limit_mib`` is DuckDB's memory limit, as the server's ``memory_limit_mib`` setting
    (0: DuckDB's default, 80 % of RAM).
    """
    path = Path(path)
    if not path.exists():
        raise Unavailable(f"no database file at {path}")
    config: dict[str, str | bool | int | float | list[str]] = (
        {"memory_limit": f"{memory_limit_mib}MiB"} if memory_limit_mib else {}
    )
    try:
        con = duckdb.connect(str(path), read_only=True, config=config)
    except duckdb.IOException as exc:
        raise Unavailable(
            f"cannot open {path} read-only: {str(exc).splitlines()[0]} "
            "(a running server holds the file: ask it instead, with --url http://HOST:PORT)"
        ) from exc
    try:
        con.execute("SELECT value FROM meta WHERE key = 'schema_version'")
    except duckdb.CatalogException as exc:
        con.close()
        raise Unavailable(f"{path} is not a user-metrics database (no meta table)") from exc
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


class LocalClient:
    """Reads the DuckDB file directly (read-only), within DuckDB's ``memory_limit_mib``.

    Every window method takes ``tz=`` (an IANA zone name); without one, ``timezone`` (the
    ``timezone`` setting, as a server would) is the zone of calendar periods and buckets.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        memory_limit_mib: int = Settings.memory_limit_mib,
        importer: FileImporter | None = None,
        timezone: str = Settings.timezone,
        source: Source | None = None,
    ) -> None:
        """``source``: read it (a lake) instead of the file at ``path``, and close it with the client."""
        self.path = Path(path)
        self._memory_limit_mib = memory_limit_mib
        self._importer = importer
        self.timezone = timezone
        self._source = source
        if source is not None:
            self._con = source.reader()
            self._sql = QueryRunner(source.reader)
        else:
            self._con = open_read_only(self.path, memory_limit_mib)
            self._sql = QueryRunner(self._con.cursor)

    def close(self) -> None:
        self._sql.stop(CLOSE_GRACE_S)  # a query DuckDB could not stop in time may still be running
        self._con.close()
        if self._source is not None:
            self._source.close()

    def __enter__(self) -> LocalClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _zone(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {**kwargs, "tz": request_zone(kwargs.get("tz"), self.timezone)}

    def users(self, since: Instant = None, until: Instant = None, **kwargs: Any) -> UserPage:
        return users(self._con, since, until, **self._zone(kwargs))

    def user(
        self, user_id: str | None, since: Instant = None, until: Instant = None, **kwargs: Any
    ) -> UserStats:
        return user(self._con, user_id, since, until, **self._zone(kwargs))

    def timeseries(
        self, user_id: str | None = None, since: Instant = None, until: Instant = None, **kwargs: Any
    ) -> Timeseries:
        return timeseries(self._con, user_id, since, until, **self._zone(kwargs))

    def by_property(
        self, key: str, since: Instant = None, until: Instant = None, **kwargs: Any
    ) -> PropertyBreakdown:
        return by_property(self._con, key, since, until, **self._zone(kwargs))

    def recent_requests(
        self, user_id: str | None, since: Instant = None, until: Instant = None, **kwargs: Any
    ) -> RecentRequests:
        return recent_requests(self._con, user_id, since, until, **self._zone(kwargs))

    def property_keys(self) -> PropertyKeys:
        return property_keys(self._con)

    def totals(self, since: Instant = None, until: Instant = None, **kwargs: Any) -> Totals:
        return totals(self._con, since, until, **self._zone(kwargs))

    def anomalies(self, since: Instant = None, until: Instant = None, **kwargs: Any) -> Anomalies:
        return find_anomalies(self._con, since, until, **self._zone(kwargs))

    def coverage(self, since: Instant = None, until: Instant = None, **kwargs: Any) -> Coverage:
        """The stored shares only (``live`` False): the key report lives in a running service."""
        return coverage(self._con, since, until, **self._zone(kwargs))

    def statement(
        self, month: str, user_id: str | None = None, tz: str | None = None, **kwargs: Any
    ) -> Statement:
        return statement(self._con, month, user_id, **self._zone({**kwargs, "tz": tz}))

    def sql(self, sql: str, limit: int = DEFAULT_ROWS, timeout: float = DEFAULT_TIMEOUT_S) -> SqlResult:
        return run_sql(self._sql, sql, limit=limit, timeout=timeout)

    def revenue_records(
        self,
        user: str | None = None,
        since: Instant = None,
        until: Instant = None,
        limit: int = DEFAULT_RECORDS,
        offset: int = 0,
    ) -> RevenueRecords:
        return revenue_records(self._con, user, since, until, limit, offset)

    def import_revenue(
        self,
        data: Any,
        *,
        format: str | None = None,  # noqa: A002 - the name the CLI and HTTP use
        mapping: Mapping[str, str] | None = None,
        tz: str | None = None,
        source: str | None = None,
    ) -> RevenueImport:
        """Write revenue records into the file (``data``: CSV or JSON text, or a list of dicts):
        the read-only connection is closed meanwhile, and the store's writer opens the file."""
        if self._importer is None:
            raise Unavailable("this client reads only; open it with user_metrics.connect(path) to import")
        if self._source is not None:  # a lake is written while it is read
            return RevenueImport(*self._importer(self.path, data, format, mapping or {}, tz, source))
        self.close()
        try:
            new, unchanged = self._importer(self.path, data, format, mapping or {}, tz, source)
        finally:
            self._con = open_read_only(self.path, self._memory_limit_mib)
            self._sql = QueryRunner(self._con.cursor)
        return RevenueImport(new, unchanged)
