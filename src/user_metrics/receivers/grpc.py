"""OTLP/gRPC front-end: ``TraceService/Export`` over the shared ingest core.

Registered as a generic handler that receives the raw request bytes, so an undecodable body is
answered ``INVALID_ARGUMENT`` with a message (a generated servicer would answer ``INTERNAL``).
gRPC itself decompresses gzip and enforces the message size limit (``RESOURCE_EXHAUSTED``).
A full write queue is answered ``UNAVAILABLE`` with a ``google.rpc.RetryInfo`` detail, which the
OTLP exporters honour as the delay before their retry.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from user_metrics.errors import UserMetricsError, grpc_status, message
from user_metrics.ingest import Ingestor, decode_protobuf

log = logging.getLogger(__name__)

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


def abort(context: Any, error: UserMetricsError) -> None:
    """End the call with the error's status; retryable errors say when to retry (RetryInfo)."""
    code = grpc_status(error)
    delay = getattr(error, "retry_after_seconds", None)
    if delay is not None:
        retry_info = error_details_pb2.RetryInfo(retry_delay=Duration(seconds=delay))
        detail = AnyProto()
        detail.Pack(retry_info)
        status = status_pb2.Status(code=code.value[0], message=message(error), details=[detail])
        # The rich status is what gRPC clients (and the Collector) read; the OTel Python exporter
        # reads the RetryInfo from a trailer of its own.
        context.set_trailing_metadata(
            (
                ("grpc-status-details-bin", status.SerializeToString()),
                ("google.rpc.retryinfo-bin", retry_info.SerializeToString()),
            )
        )
    context.abort(code, message(error))


def trace_service_handler(ingestor: Ingestor) -> grpc.GenericRpcHandler:
    """The OTLP trace Export method, bound to an ingestor."""

    def export(body: bytes, context: Any) -> ExportTraceServiceResponse:
        try:
            result = ingestor.export(decode_protobuf(body))
        except UserMetricsError as exc:
            abort(context, exc)
        return result.to_response()

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Export": grpc.unary_unary_rpc_method_handler(
                export,
                request_deserializer=None,  # raw bytes: we decode, and answer bad input ourselves
                response_serializer=ExportTraceServiceResponse.SerializeToString,
            )
        },
    )
