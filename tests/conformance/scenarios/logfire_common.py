"""Logfire set-up shared by the Logfire scenarios: no Logfire backend, an OTLP/HTTP exporter to
the runner as an additional span processor (https://logfire.pydantic.dev/docs/how-to-guides/alternative-backends/)."""

import contextlib

import logfire
from common import OTLP_ENDPOINT, SERVICE_NAME
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import BatchSpanProcessor


def configure(**options):
    """``options``: more of ``logfire.configure``'s arguments (e.g. ``scrubbing``)."""
    logfire.configure(
        send_to_logfire=False,
        service_name=SERVICE_NAME,
        console=False,
        additional_span_processors=[
            BatchSpanProcessor(OTLPSpanExporter(endpoint=OTLP_ENDPOINT + "/v1/traces"))
        ],
        **options,
    )


def root(call):
    return logfire.span("handle call {n}", n=call["n"])


def attach(call):
    """`logfire.set_baggage` adds its keys as attributes to every span below
    (https://logfire.pydantic.dev/docs/reference/advanced/baggage/)."""
    if not call["user"]:
        return contextlib.nullcontext()
    return logfire.set_baggage(
        **{"user.id": call["user"], "session.id": call["session"]}, **call["properties"]
    )


def shutdown():
    logfire.force_flush()
    logfire.shutdown()
