"""gRPC front-end of the query layer: ``user_metrics.v1.UserMetricsService``.

Each rpc opens a reader, calls the matching query function (``user_metrics.query``) and answers its
result dataclass as the message of the same name and fields (``proto/user_metrics/v1/``). Money is
exact decimal text, instants are Timestamps, and a None field is left unset (so revenue, margin
and margin ratio are unset while no revenue source exists). A request's ``tz`` (else the service's
``timezone`` setting) is the zone its window is read in. Domain errors become
the status of ``errors.grpc_status`` with the error's message.

Each rpc has ``query_timeout`` seconds from the arrival of its request message (waiting for a
worker thread included): then its DuckDB query is interrupted and the call is answered
``DEADLINE_EXCEEDED``. A client that cancels, or whose own deadline passes first, has its query
interrupted too.

The modules in ``user_metrics/v1/`` are generated; after editing the .proto, regenerate them from the
repository root with::

    python -m grpc_tools.protoc -Iproto --python_out=src --pyi_out=src --grpc_python_out=src \
        proto/user_metrics/v1/user_metrics.proto

(one command; ``tests/serve/test_grpc_api.py`` fails while the committed modules are stale).
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import duckdb
import grpc
import grpc.aio
from google.protobuf.message import Message

from user_metrics.coverage_counts import CoverageCounts
from user_metrics.errors import DeadlineExceeded, InvalidInput, Unavailable
from user_metrics.net.grpc_server import Rpcs
from user_metrics.query.anomalies import DEFAULT_HISTORY, DEFAULT_THRESHOLD, anomalies
from user_metrics.query.calendar import request_zone
from user_metrics.query.coverage import DEFAULT_KEYS, coverage
from user_metrics.query.deadline import stopped_error
from user_metrics.query.properties import by_property, property_keys
from user_metrics.query.results import DEFAULT_VALUES, decimal_text
from user_metrics.query.timeseries import timeseries
from user_metrics.query.totals import totals
from user_metrics.query.users import recent_requests, user, users
from user_metrics.stats import Stats
from user_metrics.v1 import user_metrics_pb2 as pb
from user_metrics.v1.user_metrics_pb2_grpc import UserMetricsServiceServicer

SERVICE = pb.DESCRIPTOR.services_by_name["UserMetricsService"]
DEFAULT_SORT = "-cost_usd"
DEFAULT_LIMIT = 100
DEFAULT_RECENT = 20
DEFAULT_BUCKET = "day"
# DuckDB forgets an interrupt that comes between two statements, so a stopped query is
# interrupted again this often until its work is over.
INTERRUPT_AGAIN_S = 0.05

OpenReader = Callable[[], duckdb.DuckDBPyConnection]
M = TypeVar("M", bound=Message)
R = TypeVar("R")


def to_message(result: Any, message: M) -> M:
    """Fill ``message`` from the result dataclass whose field names it has, and return it."""
    for field in dataclasses.fields(result):
        value = getattr(result, field.name)
        if value is None:
            continue  # an optional scalar or a message field: unset is null
        if isinstance(value, tuple) and all(dataclasses.is_dataclass(item) for item in value):
            repeated = getattr(message, field.name)
            for item in value:
                to_message(item, repeated.add())
        elif isinstance(value, tuple):
            getattr(message, field.name).extend(value)  # repeated scalars
        elif isinstance(value, dict):
            getattr(message, field.name).update(value)  # a map field
        elif isinstance(value, datetime):
            getattr(message, field.name).FromDatetime(value)
        elif isinstance(value, Decimal):
            setattr(message, field.name, decimal_text(value))
        else:
            setattr(message, field.name, value)
    return message


def _window(window: pb.Window) -> tuple[str | None, str | None]:
    return window.since or None, window.until or None


# The request messages with filters, and those with a tz (every one that takes a window).
Filtered = (
    pb.ListUsersRequest
    | pb.GetUserRequest
    | pb.GetTimeseriesRequest
    | pb.GetPropertyBreakdownRequest
    | pb.GetTotalsRequest
    | pb.GetCoverageRequest
    | pb.GetRecentRequestsRequest
)
Zoned = Filtered | pb.GetAnomaliesRequest


def _filters(filters: pb.Filters) -> dict[str, Any]:
    return {
        "properties": dict(filters.properties),
        "model": filters.model or None,
        "service": filters.service or None,
        "environment": filters.environment or None,
    }


def _user_id(request: pb.GetUserRequest | pb.GetRecentRequestsRequest) -> str | None:
    """The user a request names: exactly one of user_id and anonymous."""
    if request.anonymous and request.user_id:
        raise InvalidInput("user_id: leave it empty when anonymous is set")
    if not request.anonymous and not request.user_id:
        raise InvalidInput("user_id: name a user, or set anonymous for the requests that named no user")
    return None if request.anonymous else request.user_id


class _Reader:
    """One rpc's DuckDB reader, opened and used on a worker thread, which the event loop can stop."""

    def __init__(self, open_reader: OpenReader, loop: asyncio.AbstractEventLoop) -> None:
        self._open_reader = open_reader
        self._loop = loop
        self._lock = threading.Lock()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._stopped: DeadlineExceeded | None = None
        self._finished = False

    def run(self, work: Callable[[duckdb.DuckDBPyConnection], R]) -> R:
        """``work(con)`` on a new reader, closed after; raises the reason when stopped before or during."""
        with self._lock:
            if self._stopped is not None:
                raise self._stopped
            try:
                self._con = con = self._open_reader()
            except duckdb.Error as exc:
                raise Unavailable(f"the store cannot be read: {exc}") from exc
        try:
            return work(con)
        except duckdb.InterruptException as exc:
            raise (
                self._stopped or stopped_error(con) or DeadlineExceeded("the query was interrupted")
            ) from exc
        finally:
            with self._lock:
                self._con = None
                self._finished = True
            con.close()

    def stop(self, reason: DeadlineExceeded) -> bool:
        """Stop the work, from the loop's thread; whether it was not over yet."""
        with self._lock:
            if self._finished:
                return False
            first = self._stopped is None
            if first:
                self._stopped = reason
        if first:
            self._interrupt()
        return True

    def _interrupt(self) -> None:
        with self._lock:
            if self._con is None:
                return  # closed, or not opened yet: then it never will be
            self._con.interrupt()
        self._loop.call_later(INTERRUPT_AGAIN_S, self._interrupt)


class UserMetricsServicer(UserMetricsServiceServicer):
    """The query rpcs; one reader (DuckDB cursor) per call, on a worker thread, closed when it returns."""

    def __init__(
        self,
        open_reader: OpenReader,
        rpcs: Rpcs,
        query_timeout: float,
        stats: Stats,
        coverage: CoverageCounts | None = None,
        timezone: str = "UTC",
    ) -> None:
        self._open_reader = open_reader
        # The timezone setting: the zone of a request's window when it names none
        # (calendar.request_zone(asked, self._timezone) gives the zone to pass as tz=).
        self._timezone = timezone
        self._rpcs = rpcs
        self._query_timeout = query_timeout
        self._stats = stats
        self._coverage = coverage

    def _zone(self, request: Zoned) -> dict[str, Any]:
        """``{"tz": ...}``: the request's zone (checked), else the service's ``timezone`` setting."""
        return {"tz": request_zone(request.tz, self._timezone)}

    def _scope(self, request: Filtered) -> dict[str, Any]:
        """The request's filters and zone, as keyword arguments of a query function."""
        return {**_filters(request.filters), **self._zone(request)}

    async def _answer(
        self,
        context: grpc.aio.ServicerContext,
        message: type[M],
        call: Callable[[duckdb.DuckDBPyConnection], Any],
    ) -> M:
        loop = asyncio.get_running_loop()
        reader = _Reader(self._open_reader, loop)
        timed_out = DeadlineExceeded(
            f"the query did not finish within query_timeout_seconds ({self._query_timeout:g} s) "
            "and was stopped"
        )

        def expire() -> None:
            if reader.stop(timed_out):
                self._stats.limit_read("query_timeout_seconds")

        timer = loop.call_later(self._query_timeout, expire)
        try:
            return await self._rpcs.run(context, lambda: to_message(reader.run(call), message()), reads=True)
        except asyncio.CancelledError:
            # The client cancelled or its deadline passed: nobody waits for the answer any more.
            reader.stop(DeadlineExceeded("the call was cancelled"))
            raise
        finally:
            timer.cancel()

    async def ListUsers(self, request: pb.ListUsersRequest, context: grpc.aio.ServicerContext) -> pb.UserPage:
        return await self._answer(
            context,
            pb.UserPage,
            lambda con: users(
                con,
                *_window(request.window),
                sort=request.sort or DEFAULT_SORT,
                limit=request.limit or DEFAULT_LIMIT,
                offset=request.offset,
                search=request.search or None,
                **self._scope(request),
            ),
        )

    async def GetUser(self, request: pb.GetUserRequest, context: grpc.aio.ServicerContext) -> pb.UserStats:
        def call(con: duckdb.DuckDBPyConnection) -> Any:
            user_id = _user_id(request)
            return user(con, user_id, *_window(request.window), **self._scope(request))

        return await self._answer(context, pb.UserStats, call)

    async def GetRecentRequests(
        self, request: pb.GetRecentRequestsRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecentRequests:
        def call(con: duckdb.DuckDBPyConnection) -> Any:
            return recent_requests(
                con,
                _user_id(request),
                *_window(request.window),
                limit=request.limit or DEFAULT_RECENT,
                **self._scope(request),
            )

        return await self._answer(context, pb.RecentRequests, call)

    async def ListPropertyKeys(
        self, request: pb.ListPropertyKeysRequest, context: grpc.aio.ServicerContext
    ) -> pb.PropertyKeys:
        return await self._answer(context, pb.PropertyKeys, property_keys)

    async def GetTimeseries(
        self, request: pb.GetTimeseriesRequest, context: grpc.aio.ServicerContext
    ) -> pb.Timeseries:
        user_id = request.user_id if request.HasField("user_id") else None
        return await self._answer(
            context,
            pb.Timeseries,
            lambda con: timeseries(
                con,
                user_id,
                *_window(request.window),
                bucket=request.bucket or DEFAULT_BUCKET,
                **self._scope(request),
            ),
        )

    async def GetPropertyBreakdown(
        self, request: pb.GetPropertyBreakdownRequest, context: grpc.aio.ServicerContext
    ) -> pb.PropertyBreakdown:
        return await self._answer(
            context,
            pb.PropertyBreakdown,
            lambda con: by_property(
                con,
                request.key,
                *_window(request.window),
                limit=request.limit or DEFAULT_VALUES,
                **self._scope(request),
            ),
        )

    async def GetTotals(self, request: pb.GetTotalsRequest, context: grpc.aio.ServicerContext) -> pb.Totals:
        return await self._answer(
            context,
            pb.Totals,
            lambda con: totals(con, *_window(request.window), **self._scope(request)),
        )

    async def GetAnomalies(
        self, request: pb.GetAnomaliesRequest, context: grpc.aio.ServicerContext
    ) -> pb.Anomalies:
        since, until = _window(request.window)
        return await self._answer(
            context,
            pb.Anomalies,
            lambda con: anomalies(
                con,
                since,
                until,
                history=request.history or DEFAULT_HISTORY,
                threshold=request.threshold or DEFAULT_THRESHOLD,
                **self._zone(request),
            ),
        )

    async def GetCoverage(
        self, request: pb.GetCoverageRequest, context: grpc.aio.ServicerContext
    ) -> pb.Coverage:
        live = self._coverage.snapshot() if self._coverage is not None else None
        return await self._answer(
            context,
            pb.Coverage,
            lambda con: coverage(
                con,
                *_window(request.window),
                limit=request.limit or DEFAULT_KEYS,
                live=live,
                **self._scope(request),
            ),
        )


def user_metrics_service_handler(
    open_reader: OpenReader,
    rpcs: Rpcs,
    *,
    query_timeout: float,
    stats: Stats,
    coverage: CoverageCounts | None = None,
    timezone: str = "UTC",
) -> grpc.GenericRpcHandler:
    """The query service as a generic handler, for the listener's ``handlers``.

    ``open_reader`` returns a new DuckDB connection for one call (the app passes ``store.reader``);
    ``coverage``, the live counters that GetCoverage reports beside the stored shares;
    ``timezone``, the setting: the zone of windows whose request names none.
    Request and response types come from the service descriptor, as in the generated
    ``add_UserMetricsServiceServicer_to_server``.
    """
    servicer = UserMetricsServicer(open_reader, rpcs, query_timeout, stats, coverage, timezone)
    handlers = {
        method.name: rpcs.unary(
            getattr(servicer, method.name),
            request_deserializer=getattr(pb, method.input_type.name).FromString,
            response_serializer=getattr(pb, method.output_type.name).SerializeToString,
        )
        for method in SERVICE.methods
    }
    return grpc.method_handlers_generic_handler(SERVICE.full_name, handlers)
