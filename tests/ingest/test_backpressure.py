"""Backpressure: a bounded write queue answered retry-later, and exporters that retry into exactly-once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import Service
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from otlp import chat, request, span
from senders import CALLS, EXPORT, post, send_with_sdk

from user_metrics.store.writer import Store


class Gate:
    """Holds the store's writer before each commit until opened."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.open = threading.Event()
        self.waiting = threading.Event()
        original = Store._insert

        def held(store: Store, batch: Any, *side: Any, **kw: Any) -> int:
            self.waiting.set()
            assert self.open.wait(60), "the test never opened the gate"
            return original(store, batch, *side, **kw)

        monkeypatch.setattr(Store, "_insert", held)


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Gate:
    return Gate(monkeypatch)


@pytest.fixture
def small_queue(tmp_path: Path, gate: Gate) -> Iterator[Service]:
    svc = Service(tmp_path / "um.duckdb", write_queue_rows=5)
    svc.start()
    yield svc
    gate.open.set()
    svc.stop()


def spans_body(users: list[str]) -> bytes:
    return request([span(chat(user=u)) for u in users]).SerializeToString()


def grpc_call(target: str, body: bytes) -> grpc.RpcError | None:
    with grpc.insecure_channel(target) as channel:
        try:
            channel.unary_unary(EXPORT)(body, timeout=60)
            return None
        except grpc.RpcError as exc:
            return exc


def retry_delay(error: Any) -> float:
    """The RetryInfo delay in a gRPC error's google.rpc.Status trailer."""
    trailer = dict(error.trailing_metadata())["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(trailer)
    assert status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)
    # The same delay in the trailer the OTel Python exporter reads.
    python_sdk = error_details_pb2.RetryInfo.FromString(
        dict(error.trailing_metadata())["google.rpc.retryinfo-bin"]
    )
    assert python_sdk == info
    return info.retry_delay.seconds + info.retry_delay.nanos / 1e9


def test_a_full_queue_is_answered_retry_later_on_both_protocols(small_queue: Service, gate: Gate) -> None:
    app = small_queue.app
    assert app is not None
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(grpc_call, small_queue.target, spans_body(["a", "b", "c"]))
        assert gate.waiting.wait(30)  # 3 rows are with the writer, not yet committed
        error = grpc_call(small_queue.target, spans_body(["d", "e", "f"]))
        assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE
        assert "write queue is full" in error.details()
        assert retry_delay(error) >= 1
        status, headers, _ = post(app.otlp_http_url, spans_body(["g", "h", "i"]))
        assert status == 503 and int(headers["Retry-After"]) >= 1
        # A request that fits in what is left of the queue is still taken.
        small = pool.submit(grpc_call, small_queue.target, spans_body(["j"]))
        time.sleep(0.3)
        assert app.store.queue[1] == 4
        gate.open.set()
        assert first.result(30) is None and small.result(30) is None
    assert app.stats.exports_refused["queue_full"] == 2
    assert sorted(r["user_id"] for r in small_queue.rows()) == ["a", "b", "c", "j"]


def test_the_queue_never_holds_more_than_its_limit(small_queue: Service, gate: Gate) -> None:
    """A flood of exports while the writer is stuck: rows waiting stay within the limit."""
    app = small_queue.app
    assert app is not None
    with ThreadPoolExecutor(8) as pool:
        futures = [
            pool.submit(grpc_call, small_queue.target, spans_body([f"u{i}", f"v{i}"])) for i in range(40)
        ]
        assert gate.waiting.wait(30)
        deadline = time.monotonic() + 5
        while sum(f.done() for f in futures) < 38 and time.monotonic() < deadline:
            time.sleep(0.05)
            assert app.store.queue[1] <= 5
        gate.open.set()
        outcomes = [f.result(30) for f in futures]
    accepted = [o for o in outcomes if o is None]
    refused = [o for o in outcomes if o is not None]
    assert len(accepted) == 2 and all(o.code() == grpc.StatusCode.UNAVAILABLE for o in refused)
    assert len(small_queue.rows()) == 4


def test_busy_http_workers_answer_503(tmp_path: Path, gate: Gate) -> None:
    svc = Service(tmp_path / "um.duckdb", http_workers=1)
    app = svc.start()
    try:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(post, app.otlp_http_url, spans_body(["slow"]))
            assert gate.waiting.wait(30)
            status, headers, _ = post(app.otlp_http_url, spans_body(["second"]))
            assert (status, headers["Retry-After"]) == (503, "1")
            gate.open.set()
            assert first.result(30)[0] == 200
        assert app.stats.exports_refused["workers_busy"] == 1
        assert post(app.otlp_http_url, spans_body(["third"]))[0] == 200  # the slot was given back
    finally:
        gate.open.set()
        svc.stop()
    assert sorted(r["user_id"] for r in svc.rows()) == ["slow", "third"]


def test_sdk_exporters_back_off_and_everything_is_stored_once(tmp_path: Path, gate: Gate) -> None:
    """The SDK's gRPC exporter (honouring RetryInfo) and HTTP exporter (503) retry until stored."""
    svc = Service(tmp_path / "um.duckdb", write_queue_rows=3)
    app = svc.start()
    try:
        with ThreadPoolExecutor(3) as pool:
            blocker = pool.submit(grpc_call, app.grpc_address, spans_body(["x", "y", "z"]))
            assert gate.waiting.wait(30)  # the queue is now full
            via_grpc = pool.submit(send_with_sdk, app.grpc_address, CALLS[:3])
            http_exporter = HttpSpanExporter(endpoint=f"{app.otlp_http_url}/v1/traces")
            via_http = pool.submit(send_with_sdk, "", CALLS[3:], http_exporter)
            deadline = time.monotonic() + 20
            while app.stats.exports_refused["queue_full"] < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert app.stats.exports_refused["queue_full"] >= 2  # both were told to come back
            gate.open.set()
            assert blocker.result(30) is None
            via_grpc.result(60)
            via_http.result(60)
    finally:
        gate.open.set()
        svc.stop()
    rows = svc.rows()
    assert sorted(r["user_id"] for r in rows) == sorted(["x", "y", "z", *(c["user"] for c in CALLS)])
    assert len({(r["trace_id"], r["span_id"]) for r in rows}) == len(rows)


def test_one_exports_unstorable_data_does_not_fail_its_group(
    tmp_path: Path, gate: Gate, caplog: pytest.LogCaptureFixture
) -> None:
    """Grouped with an export DuckDB cannot store, the others are committed; that one is not retryable."""
    from decimal import Decimal

    from user_metrics.errors import InvalidInput
    from user_metrics.ingest.attributes import compile_conventions
    from user_metrics.ingest.mapping import map_request
    from user_metrics.store.batches import to_arrow

    svc = Service(tmp_path / "um.duckdb")
    app = svc.start()
    try:

        def table(users: list[str], cost_nanos: int | None) -> Any:
            mapped = map_request(
                request([span(chat(user=u)) for u in users]),
                compile_conventions(),
                now_unix_nano=time.time_ns(),
            )
            n = len(mapped.records)
            return to_arrow(mapped.records, [cost_nanos] * n, ["reported"] * n)

        first = app.store.write(table(["first"], None))
        assert gate.waiting.wait(30)  # the writer holds "first"; the next two are grouped behind it
        # Two requests of $999,999,999 for one user and day: their sum overflows the rollup's DECIMAL(18, 9).
        unstorable = app.store.write(table(["rich", "rich"], int(Decimal("999999999") * 10**9)))
        fine = app.store.write(table(["fine"], 1_000))
        gate.open.set()
        assert first.result(30) == 1 and fine.result(30) == 1
        with pytest.raises(InvalidInput, match="cannot be stored"):
            unstorable.result(30)
        assert "a group of 2 exports cannot be stored" in caplog.text  # they really were grouped
    finally:
        gate.open.set()
        svc.stop()
    assert sorted(r["user_id"] for r in svc.rows()) == ["fine", "first"]
