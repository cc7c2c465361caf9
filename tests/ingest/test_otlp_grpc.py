"""OTLP/gRPC Export against a real server: the OTel SDK as client, rows read back from DuckDB."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import grpc
import pytest
from conftest import Service
from genai_prices import Usage, calc_price
from otlp import chat, request, span
from senders import CALLS, START, raw_export, send_with_sdk


@pytest.fixture
def service(service_on_each_path: Service) -> Service:
    """Every test of this file that takes ``service`` runs on both ingest paths (conftest.INGEST_PATHS)."""
    return service_on_each_path


def expected_cost(call: dict[str, Any], start_ns: int) -> Decimal | None:
    """The price straight from genai-prices' calc_price, rounded to the nano-dollar."""
    try:
        price = calc_price(
            Usage(
                input_tokens=call["in"],
                output_tokens=call["out"],
                cache_read_tokens=call["cached"],
                output_reasoning_tokens=call["reasoning"],
            ),
            call["model"],
            provider_id="openai",
            genai_request_timestamp=datetime.fromtimestamp(start_ns / 1e9, UTC),
        )
    except LookupError:
        return None
    return price.total_price.quantize(Decimal("1e-9"), rounding=ROUND_HALF_EVEN)


class TestSdkExport:
    def test_rows_match_what_the_sdk_sent(self, service: Service) -> None:
        """Users, models, tokens, properties and cost (to the nano-dollar) are stored as sent."""
        send_with_sdk(service.target, CALLS)
        rows = service.rows()
        assert len(rows) == len(CALLS)
        for i, (call, row) in enumerate(zip(CALLS, rows, strict=True)):
            start = START + i * 1_000_000_000 + 1000
            assert row["user_id"] == call["user"]
            assert row["request_model"] == call["model"]
            assert row["properties"] == {"plan": call["plan"]}
            assert (row["input_tokens"], row["output_tokens"]) == (call["in"], call["out"])
            assert (row["cache_read_tokens"], row["reasoning_tokens"]) == (call["cached"], call["reasoning"])
            assert (row["service_name"], row["environment"], row["provider"]) == ("shop", "test", "openai")
            assert row["start_time"] == datetime.fromtimestamp(start // 1000 / 1e6, UTC)
            assert row["duration_ms"] == pytest.approx(250.0)
            assert row["status"] == "ok" and row["operation"] == "chat"
            cost = expected_cost(call, start)
            assert row["cost_usd"] == cost
            assert row["cost_source"] == ("computed" if cost is not None else "unpriced")
        assert rows[-1]["cost_usd"] is None  # an unknown model is never a silent $0

    def test_resend_and_restart_do_not_duplicate(self, service: Service) -> None:
        """The same Export bytes sent again, before and after a restart, are stored once."""
        body = request([span(chat(user=f"u{i}")) for i in range(20)]).SerializeToString()
        assert not raw_export(service.target, body).HasField("partial_success")
        raw_export(service.target, body)
        service.restart()
        raw_export(service.target, body)
        raw_export(service.target, body, compression=grpc.Compression.Gzip)
        rows = service.rows()
        assert len(rows) == 20
        assert len({(r["trace_id"], r["span_id"]) for r in rows}) == 20

    def test_retry_mixed_with_new_spans_stores_only_the_new(self, service: Service) -> None:
        """A batch holding spans already stored and new ones stores just the new ones."""
        old = [span(chat(user="old")) for _ in range(5)]
        raw_export(service.target, request(old).SerializeToString())
        new = [span(chat(user="new")) for _ in range(3)]
        raw_export(service.target, request(old + new + new[:1]).SerializeToString())
        rows = service.rows()
        assert sorted(r["user_id"] for r in rows) == ["new"] * 3 + ["old"] * 5

    def test_ancestor_in_same_request_gives_the_user(self, service: Service) -> None:
        """The contrib instrumentation records no user: the parent span's user applies."""
        send_with_sdk(service.target, CALLS[:1])
        (row,) = service.rows()
        assert row["user_id"] == "alice" and row["parent_span_id"] is not None


class TestBadInput:
    def assert_still_serving(self, service: Service) -> None:
        body = request([span(chat(user="after"))]).SerializeToString()
        assert not raw_export(service.target, body).HasField("partial_success")

    def test_garbage_bytes_are_invalid_argument(self, service: Service) -> None:
        """Bytes that are not an ExportTraceServiceRequest get INVALID_ARGUMENT, and nothing is stored."""
        with pytest.raises(grpc.RpcError) as info:
            raw_export(service.target, b"\xff\xff\xff\x0f garbage \x00\x01")
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "ExportTraceServiceRequest" in info.value.details()
        self.assert_still_serving(service)
        assert [r["user_id"] for r in service.rows()] == ["after"]

    def test_unreadable_token_count_is_a_partial_success(self, service: Service) -> None:
        """input_tokens="lots" rejects that span through partial_success; the rest is stored."""
        bad = span(chat(user="bad", **{"gen_ai.usage.input_tokens": "lots"}))
        body = request([bad, span(chat(user="good1")), span(chat(user="good2"))]).SerializeToString()
        response = raw_export(service.target, body)
        assert response.partial_success.rejected_spans == 1
        assert "gen_ai.usage.input_tokens is not a number: 'lots'" in response.partial_success.error_message
        assert bad.span_id.hex() in response.partial_success.error_message
        self.assert_still_serving(service)
        assert sorted(r["user_id"] for r in service.rows()) == ["after", "good1", "good2"]

    def test_absurd_timestamp_is_rejected(self, service: Service) -> None:
        """A span that starts in year 2554 (max uint64 ns) is rejected with a message."""
        body = request([span(chat(user="future"), start=2**64 - 10**12, duration_ns=1)]).SerializeToString()
        response = raw_export(service.target, body)
        assert response.partial_success.rejected_spans == 1
        assert "future" in response.partial_success.error_message
        self.assert_still_serving(service)

    def test_ten_megabyte_attribute_is_accepted(self, service: Service) -> None:
        """A 10 MB attribute value (prompt content) is accepted; the stored property is cut to the limit."""
        big = "x" * (10 * 1024 * 1024)
        body = request(
            [span(chat(user="big", **{"gen_ai.input.messages": big, "property.blob": big}))]
        ).SerializeToString()
        assert not raw_export(service.target, body, compression=grpc.Compression.Gzip).HasField(
            "partial_success"
        )
        (row,) = service.rows()
        assert row["user_id"] == "big" and len(row["properties"]["blob"]) == service.settings.max_value_length

    def test_empty_request_is_success(self, service: Service) -> None:
        """An empty ExportTraceServiceRequest is a success with nothing stored."""
        assert not raw_export(service.target, b"").HasField("partial_success")
        assert service.rows() == []

    def test_over_the_size_limit_is_resource_exhausted(self, tmp_path: Any) -> None:
        """A request over max_message_mib is refused with RESOURCE_EXHAUSTED and the server keeps serving."""
        svc = Service(tmp_path / "limit.duckdb", max_message_mib=1)
        svc.start()
        try:
            body = request(
                [span(chat(**{"gen_ai.input.messages": "y" * (2 * 1024 * 1024)}))]
            ).SerializeToString()
            with pytest.raises(grpc.RpcError) as info:
                raw_export(svc.target, body)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            self.assert_still_serving(svc)
        finally:
            svc.stop()

    def test_non_llm_spans_are_skipped_not_errors(self, service: Service) -> None:
        """HTTP and database spans are not requests and are not rejected."""
        body = request(
            [span({"http.request.method": "GET"}), span({"db.system": "postgresql"})]
        ).SerializeToString()
        assert not raw_export(service.target, body).HasField("partial_success")
        assert service.rows() == []


def test_sixty_four_mib_request_is_accepted(tmp_path: Any) -> None:
    """The default limit takes a request of nearly 64 MiB."""
    svc = Service(tmp_path / "big.duckdb")
    svc.start()
    try:
        filler = os.urandom(30 * 1024 * 1024).hex()[: 60 * 1024 * 1024]
        body = request([span(chat(user="huge", **{"gen_ai.output.messages": filler}))]).SerializeToString()
        assert 60 * 1024 * 1024 < len(body) < 64 * 1024 * 1024
        assert not raw_export(svc.target, body).HasField("partial_success")
        assert [r["user_id"] for r in svc.rows()] == ["huge"]
    finally:
        svc.stop()


def test_store_failure_is_unavailable_and_nothing_is_acknowledged(service: Service) -> None:
    """When the commit fails, Export answers UNAVAILABLE (retryable) and the server keeps serving."""
    assert service.app is not None
    store = service.app.store
    original = store._insert

    def broken(batch: Any, *side: Any, **kw: Any) -> int:
        raise OSError("disk full")

    store._insert = broken  # type: ignore[method-assign]
    body = request([span(chat(user="lost"))]).SerializeToString()
    with pytest.raises(grpc.RpcError) as info:
        raw_export(service.target, body)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "disk full" in info.value.details()
    store._insert = original  # type: ignore[method-assign]
    assert not raw_export(service.target, body).HasField("partial_success")  # the exporter's retry
    assert [r["user_id"] for r in service.rows()] == ["lost"]
