"""The gRPC listener against slow and silent callers: calls that never send their message, queries that run too long.

A real server (conftest's Service) with few workers, real channels, the OTel SDK's gRPC exporter.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import INGEST, READ, Service, counter_total, cuts
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otlp import chat
from senders import EXPORT
from servers import SlowQuery

from user_metrics.net.auth import Tokens
from user_metrics.v1 import user_metrics_pb2 as pb
from user_metrics.v1.user_metrics_pb2_grpc import UserMetricsServiceStub

WORKERS = 4
SILENT_CALLS = 16  # four times the workers
GUARDED = {"ingest_tokens": (INGEST,), "read_tokens": (READ,)}


def metadata(token: str | None) -> tuple[tuple[str, str], ...] | None:
    return None if token is None else (("authorization", f"Bearer {token}"),)


class Silent:
    """Calls to Export that send their headers and never their message, until the block ends."""

    def __init__(self, target: str, token: str | None, count: int = SILENT_CALLS) -> None:
        self.released = threading.Event()
        self.channel = grpc.insecure_channel(target)
        grpc.channel_ready_future(self.channel).result(timeout=30)
        export = self.channel.stream_unary(EXPORT, request_serializer=None, response_deserializer=None)
        self.calls = [
            export.future(self._nothing(), metadata=metadata(token), timeout=600) for _ in range(count)
        ]

    def _nothing(self) -> Iterator[bytes]:
        self.released.wait()
        yield from ()

    def outcomes(self, timeout: float) -> list[tuple[grpc.StatusCode, str]]:
        """How each call ended; grpc.FutureTimeoutError if one has not within ``timeout`` seconds."""
        ended = []
        for call in self.calls:
            error = call.exception(timeout=timeout)
            ended.append((grpc.StatusCode.OK, "") if error is None else (error.code(), error.details()))
        return ended

    def __enter__(self) -> Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        for call in self.calls:
            call.cancel()
        self.channel.close()


def sdk_export(target: str, token: str | None, user: str) -> SpanExportResult:
    """One LLM span through the OTel SDK's gRPC exporter, which gives up after 30 s."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    provider.get_tracer("tests").start_span("chat", attributes=chat(user=user)).end()
    headers = None if token is None else {"authorization": f"Bearer {token}"}
    exporter = OTLPSpanExporter(endpoint=target, insecure=True, headers=headers, timeout=30)
    try:
        return exporter.export(spans.get_finished_spans())
    finally:
        exporter.shutdown()


def list_users(target: str, token: str | None, timeout: float = 30) -> list[str]:
    with grpc.insecure_channel(target) as channel:
        page = UserMetricsServiceStub(channel).ListUsers(
            pb.ListUsersRequest(), metadata=metadata(token), timeout=timeout
        )
    return [user.user_id for user in page.users]


def totals(target: str, token: str | None = None) -> int:
    with grpc.insecure_channel(target) as channel:
        answer = UserMetricsServiceStub(channel).GetTotals(
            pb.GetTotalsRequest(), metadata=metadata(token), timeout=20
        )
    return answer.requests


@contextmanager
def started(tmp_path: Path, **overrides: Any) -> Iterator[Service]:
    settings: dict[str, Any] = {"grpc_workers": WORKERS, "metrics_refresh_seconds": 0, **overrides}
    svc = Service(tmp_path / "um.duckdb", **settings)
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


class TestSilentCalls:
    @pytest.mark.parametrize("caller", ["no token", "valid token", "open server"])
    def test_calls_that_never_send_their_message_block_nothing(self, tmp_path: Path, caller: str) -> None:
        """More silent calls than workers: an SDK Export and a query are still answered meanwhile."""
        guarded = caller != "open server"
        ingest, read = (INGEST, READ) if guarded else (None, None)
        with (
            started(tmp_path, receive_timeout_seconds=600, **(GUARDED if guarded else {})) as svc,
            Silent(svc.target, INGEST if caller == "valid token" else None) as silent,
        ):
            if caller == "no token":
                # Refused at once, without waiting for the message that never comes.
                refusal = Tokens((INGEST,), "ingest").refusal(None)
                assert (
                    silent.outcomes(timeout=20) == [(grpc.StatusCode.UNAUTHENTICATED, refusal)] * SILENT_CALLS
                )
            else:
                time.sleep(0.5)  # they reach the server first: a thread-per-call server parks them all
            assert sdk_export(svc.target, ingest, "legit") == SpanExportResult.SUCCESS
            assert list_users(svc.target, read) == ["legit"]
            if caller != "no token":
                silent.released.set()  # the client ends them with no message at all
                missing = (grpc.StatusCode.INVALID_ARGUMENT, "the call ended without its request message")
                assert silent.outcomes(timeout=20) == [missing] * SILENT_CALLS

    def test_a_refused_unary_call_gets_the_reason(self, tmp_path: Path) -> None:
        """A plain unary call without a token still gets UNAUTHENTICATED with the reason."""
        with (
            started(tmp_path, **GUARDED) as svc,
            grpc.insecure_channel(svc.target) as channel,
            pytest.raises(grpc.RpcError) as info,
        ):
            UserMetricsServiceStub(channel).GetTotals(pb.GetTotalsRequest(), timeout=20)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert info.value.details() == Tokens((READ,), "read").refusal(None)

    @pytest.mark.parametrize("caller", ["valid token", "open server"])
    def test_a_message_not_sent_within_receive_timeout_is_deadline_exceeded(
        self, tmp_path: Path, caller: str
    ) -> None:
        """Each silent call is answered DEADLINE_EXCEEDED after receive_timeout_seconds and counted."""
        guarded = caller == "valid token"
        ingest, read = (INGEST, READ) if guarded else (None, None)
        with (
            started(tmp_path, receive_timeout_seconds=2, **(GUARDED if guarded else {})) as svc,
            Silent(svc.target, ingest) as silent,
        ):
            assert svc.app is not None
            message = "the request message did not arrive within receive_timeout_seconds (2 s)"
            assert (
                silent.outcomes(timeout=60) == [(grpc.StatusCode.DEADLINE_EXCEEDED, message)] * SILENT_CALLS
            )
            assert cuts(svc.app.api_url, read)["receive_timeout_seconds"] == SILENT_CALLS
            assert sdk_export(svc.target, ingest, "after") == SpanExportResult.SUCCESS


@contextmanager
def slow_queries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, timeout: float
) -> Iterator[tuple[Service, SlowQuery]]:
    """A service with one worker, query_timeout_seconds ``timeout``, and ListUsers that runs for hours."""
    with (
        started(tmp_path, query_timeout_seconds=timeout, grpc_workers=1) as svc,
        SlowQuery(monkeypatch) as slow,
    ):
        assert svc.app is not None
        yield svc, slow


class TestQueryDeadlines:
    def test_a_query_past_query_timeout_is_deadline_exceeded(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Two long queries on one worker: both answered DEADLINE_EXCEEDED and counted; then it serves on."""
        with slow_queries(tmp_path, monkeypatch, timeout=1) as (svc, slow_query):
            assert svc.app is not None
            with grpc.insecure_channel(svc.target) as channel:
                list_users_call = UserMetricsServiceStub(channel).ListUsers
                calls = [list_users_call.future(pb.ListUsersRequest(), timeout=20) for _ in range(2)]
                errors = [call.exception(timeout=30) for call in calls]
            message = "the query did not finish within query_timeout_seconds (1 s) and was stopped"
            timed_out = (grpc.StatusCode.DEADLINE_EXCEEDED, message)
            assert [(e.code(), e.details()) for e in errors] == [timed_out, timed_out]
            assert slow_query.interrupted.is_set()
            assert (
                counter_total(svc.app.api_url, "user_metrics_reads_limited", limit="query_timeout_seconds")
                == 2
            )
            assert totals(svc.target) == 0  # the one worker is free again

    def test_the_clients_deadline_stops_its_query(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A client that gives up after 3 s has its query interrupted, long before query_timeout_seconds."""
        with slow_queries(tmp_path, monkeypatch, timeout=3600) as (svc, slow_query):
            assert svc.app is not None
            with pytest.raises(grpc.RpcError) as info:
                list_users(svc.target, None, timeout=3)  # long enough for the query to start
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert slow_query.interrupted.wait(30)
            assert totals(svc.target) == 0
            # the client's limit, not ours
            assert (
                counter_total(svc.app.api_url, "user_metrics_reads_limited", limit="query_timeout_seconds")
                == 0
            )
