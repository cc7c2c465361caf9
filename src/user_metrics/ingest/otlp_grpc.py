"""OTLP/gRPC front-end: ``TraceService/Export`` over the shared ingest core.

Registered as a generic handler that receives the raw request bytes, so an undecodable body is
answered ``INVALID_ARGUMENT`` with a message (a generated servicer would answer ``INTERNAL``).
gRPC itself decompresses gzip and enforces the message size limit (``RESOURCE_EXHAUSTED``).
A full write queue is answered ``UNAVAILABLE`` with a ``google.rpc.RetryInfo`` detail, which the
OTLP exporters honour as the delay before their retry. The wait for the request message and the
threads the export runs on are the listener's (``net/grpc_server.Rpcs``).
"""

from __future__ import annotations

import grpc
import grpc.aio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from user_metrics.ingest.ingestor import Ingestor
from user_metrics.net.grpc_server import Rpcs

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


def trace_service_handler(ingestor: Ingestor, rpcs: Rpcs) -> grpc.GenericRpcHandler:
    """The OTLP trace Export method, bound to an ingestor."""

    async def export(body: bytes, context: grpc.aio.ServicerContext) -> ExportTraceServiceResponse:
        # Decoding a request of up to max_message_mib is work too: it runs on a worker thread.
        return await rpcs.run(context, lambda: ingestor.export_body(body).to_response())

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Export": rpcs.unary(
                export,
                request_deserializer=None,  # raw bytes: we decode, and answer bad input ourselves
                response_serializer=ExportTraceServiceResponse.SerializeToString,
            )
        },
    )
