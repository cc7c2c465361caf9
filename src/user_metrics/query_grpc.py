"""gRPC front-end of the query layer: ``user_metrics.v1.UserMetricsService``.

Each rpc opens a reader, calls the matching function of ``user_metrics.query`` and answers its
result dataclass as the message of the same name and fields (``proto/user_metrics/v1/``). Money is
exact decimal text, instants are Timestamps, and a None field is left unset. Domain errors become
the status of ``errors.grpc_status`` with the error's message.

The modules in ``user_metrics/v1/`` are generated; after editing the .proto, regenerate them from the
repository root with::

    python -m grpc_tools.protoc -Iproto --python_out=src --pyi_out=src --grpc_python_out=src \
        proto/user_metrics/v1/user_metrics.proto

(one command; ``tests/test_query_grpc.py`` fails while the committed modules are stale).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, NoReturn, TypeVar

import duckdb
import grpc
from google.protobuf.message import Message

from user_metrics import query
from user_metrics.anomalies import DEFAULT_HISTORY, DEFAULT_THRESHOLD, anomalies
from user_metrics.errors import InvalidInput, Unavailable, UserMetricsError, grpc_status
from user_metrics.results import decimal_text
from user_metrics.v1 import user_metrics_pb2 as pb
from user_metrics.v1.user_metrics_pb2_grpc import UserMetricsServiceServicer

SERVICE = pb.DESCRIPTOR.services_by_name["UserMetricsService"]
DEFAULT_SORT = "-cost_usd"
DEFAULT_LIMIT = 100
DEFAULT_RECENT = 20
DEFAULT_BUCKET = "day"

OpenReader = Callable[[], duckdb.DuckDBPyConnection]
M = TypeVar("M", bound=Message)


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


def _filters(filters: pb.Filters) -> dict[str, Any]:
    return {
        "properties": dict(filters.properties),
        "model": filters.model or None,
        "service": filters.service or None,
        "environment": filters.environment or None,
    }


def _abort(context: grpc.ServicerContext, error: UserMetricsError) -> NoReturn:
    context.abort(grpc_status(error), str(error))
    raise AssertionError("context.abort returns only by raising")  # pragma: no cover


def _user_id(request: pb.GetUserRequest | pb.GetRecentRequestsRequest) -> str | None:
    """The user a request names: exactly one of user_id and anonymous."""
    if request.anonymous and request.user_id:
        raise InvalidInput("user_id: leave it empty when anonymous is set")
    if not request.anonymous and not request.user_id:
        raise InvalidInput("user_id: name a user, or set anonymous for the requests that named no user")
    return None if request.anonymous else request.user_id


class UserMetricsServicer(UserMetricsServiceServicer):
    """The query rpcs; one reader (DuckDB cursor) per call, closed when it returns."""

    def __init__(self, open_reader: OpenReader) -> None:
        self._open_reader = open_reader

    def _answer(
        self,
        context: grpc.ServicerContext,
        message: type[M],
        call: Callable[[duckdb.DuckDBPyConnection], Any],
    ) -> M:
        try:
            try:
                con = self._open_reader()
            except duckdb.Error as exc:
                raise Unavailable(f"the store cannot be read: {exc}") from exc
            try:
                result = call(con)
            finally:
                con.close()
        except UserMetricsError as exc:
            _abort(context, exc)
        return to_message(result, message())

    def ListUsers(self, request: pb.ListUsersRequest, context: grpc.ServicerContext) -> pb.UserPage:
        return self._answer(
            context,
            pb.UserPage,
            lambda con: query.users(
                con,
                *_window(request.window),
                sort=request.sort or DEFAULT_SORT,
                limit=request.limit or DEFAULT_LIMIT,
                offset=request.offset,
                search=request.search or None,
                **_filters(request.filters),
            ),
        )

    def GetUser(self, request: pb.GetUserRequest, context: grpc.ServicerContext) -> pb.UserStats:
        def call(con: duckdb.DuckDBPyConnection) -> Any:
            user_id = _user_id(request)
            return query.user(con, user_id, *_window(request.window), **_filters(request.filters))

        return self._answer(context, pb.UserStats, call)

    def GetRecentRequests(
        self, request: pb.GetRecentRequestsRequest, context: grpc.ServicerContext
    ) -> pb.RecentRequests:
        def call(con: duckdb.DuckDBPyConnection) -> Any:
            return query.recent_requests(
                con,
                _user_id(request),
                *_window(request.window),
                limit=request.limit or DEFAULT_RECENT,
                **_filters(request.filters),
            )

        return self._answer(context, pb.RecentRequests, call)

    def ListPropertyKeys(
        self, request: pb.ListPropertyKeysRequest, context: grpc.ServicerContext
    ) -> pb.PropertyKeys:
        return self._answer(context, pb.PropertyKeys, query.property_keys)

    def GetTimeseries(self, request: pb.GetTimeseriesRequest, context: grpc.ServicerContext) -> pb.Timeseries:
        user_id = request.user_id if request.HasField("user_id") else None
        return self._answer(
            context,
            pb.Timeseries,
            lambda con: query.timeseries(
                con,
                user_id,
                *_window(request.window),
                bucket=request.bucket or DEFAULT_BUCKET,
                **_filters(request.filters),
            ),
        )

    def GetPropertyBreakdown(
        self, request: pb.GetPropertyBreakdownRequest, context: grpc.ServicerContext
    ) -> pb.PropertyBreakdown:
        return self._answer(
            context,
            pb.PropertyBreakdown,
            lambda con: query.by_property(
                con,
                request.key,
                *_window(request.window),
                limit=request.limit or query.DEFAULT_VALUES,
                **_filters(request.filters),
            ),
        )

    def GetTotals(self, request: pb.GetTotalsRequest, context: grpc.ServicerContext) -> pb.Totals:
        return self._answer(
            context,
            pb.Totals,
            lambda con: query.totals(con, *_window(request.window), **_filters(request.filters)),
        )

    def GetAnomalies(self, request: pb.GetAnomaliesRequest, context: grpc.ServicerContext) -> pb.Anomalies:
        since, until = _window(request.window)
        return self._answer(
            context,
            pb.Anomalies,
            lambda con: anomalies(
                con,
                since,
                until,
                history=request.history or DEFAULT_HISTORY,
                threshold=request.threshold or DEFAULT_THRESHOLD,
            ),
        )


def user_metrics_service_handler(open_reader: OpenReader) -> grpc.GenericRpcHandler:
    """The query service as a generic handler, for ``grpc.server(..., handlers=[...])``.

    ``open_reader`` returns a new DuckDB connection for one call (the app passes ``store.reader``).
    Request and response types come from the service descriptor, as in the generated
    ``add_UserMetricsServiceServicer_to_server``.
    """
    servicer = UserMetricsServicer(open_reader)
    handlers = {
        method.name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=getattr(pb, method.input_type.name).FromString,
            response_serializer=getattr(pb, method.output_type.name).SerializeToString,
        )
        for method in SERVICE.methods
    }
    return grpc.method_handlers_generic_handler(SERVICE.full_name, handlers)
