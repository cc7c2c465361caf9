"""One bad span never costs its batch; one big export never holds up the small ones.

Unexpected errors (bugs) injected into the mapper and the pricer for one span of a batch reject
that span alone through OTLP partial success, counted on /metrics; attribute lists are bounded;
big exports are mapped and written in parts, in turn with the exports that came after them.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from conftest import Service, counter_total
from otlp import chat, request, span, to_otlp_json
from senders import post, raw_export

from user_metrics.ingest import ingestor as ingest
from user_metrics.ingest import mapping
from user_metrics.ingest.attributes import compile_conventions
from user_metrics.ingest.fair_slots import FairSlots
from user_metrics.ingest.mapping import PAUSE_EVERY, map_request
from user_metrics.ingest.pricing import Pricer
from user_metrics.store import writer as store


@pytest.fixture
def sabotaged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A service whose mapper fails on provider 'explode' and whose pricer fails on model 'explode'."""
    real_provider = mapping._provider
    real_resolve = Pricer._resolve_locked

    def provider(scan: Any) -> str | None:
        found = real_provider(scan)
        if found == "explode":
            raise RuntimeError("injected mapping bug")
        return found

    def resolve(self: Pricer, *key: Any) -> Any:
        if "explode" in key:  # the response or the request model
            raise ZeroDivisionError("injected pricing bug")
        return real_resolve(self, *key)

    monkeypatch.setattr(mapping, "_provider", provider)
    monkeypatch.setattr(Pricer, "_resolve_locked", resolve)
    svc = Service(tmp_path / "um.duckdb", metrics_refresh_seconds=0)
    svc.start()
    yield svc
    svc.stop()


def mixed_batch() -> tuple[bytes, list[str]]:
    """Five LLM spans: three good ones (three users), one the mapper fails on, one the pricer does."""
    spans = [span(chat(user=f"good-{i}")) for i in range(3)]
    mapping_victim = span(chat(user="victim-1", **{"gen_ai.provider.name": "explode"}))
    pricing_victim = span(chat(user="victim-2", model="explode"))
    body = request([spans[0], mapping_victim, spans[1], pricing_victim, spans[2]]).SerializeToString()
    return body, [mapping_victim.span_id.hex(), pricing_victim.span_id.hex()]


class TestOneBadSpan:
    def test_grpc_rejects_the_bad_spans_and_stores_the_rest(self, sabotaged: Service) -> None:
        """Bugs hit while mapping one span and pricing another: partial success names both, the
        other three are stored, and /metrics counts two internal errors."""
        body, victims = mixed_batch()
        response = raw_export(sabotaged.target, body)
        assert response.partial_success.rejected_spans == 2
        message = response.partial_success.error_message
        assert "internal error" in message and "injected mapping bug" in message
        assert "injected pricing bug" in message
        assert all(victim in message for victim in victims)
        assert sabotaged.app is not None
        assert (
            counter_total(sabotaged.app.api_url, "user_metrics_spans_rejected", reason="internal error") == 2
        )
        assert sorted(r["user_id"] for r in sabotaged.rows()) == ["good-0", "good-1", "good-2"]

    def test_http_rejects_the_bad_spans_and_stores_the_rest(self, sabotaged: Service) -> None:
        """The same over OTLP/HTTP: 200 with partial success, never 500."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

        body, _ = mixed_batch()
        assert sabotaged.app is not None
        status, _, answer = post(sabotaged.app.otlp_http_url, body)
        assert status == 200
        assert ExportTraceServiceResponse.FromString(answer).partial_success.rejected_spans == 2
        assert sorted(r["user_id"] for r in sabotaged.rows()) == ["good-0", "good-1", "good-2"]

    def test_a_bug_reading_a_resource_rejects_its_spans_only(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A bug while reading one resource's attributes rejects that resource's spans; another
        resource's spans in the same request are stored."""
        real = mapping._resource_names

        def names(attributes: Any) -> Any:
            if any(kv.key == "service.name" and kv.value.string_value == "explode" for kv in attributes):
                raise RuntimeError("injected resource bug")
            return real(attributes)

        monkeypatch.setattr(mapping, "_resource_names", names)
        svc = Service(tmp_path / "um.duckdb")
        svc.start()
        try:
            good = request([span(chat(user="kept"))])
            bad = request([span(chat(user="lost")), span(chat(user="lost-too"))], {"service.name": "explode"})
            good.resource_spans.extend(bad.resource_spans)
            response = raw_export(svc.target, good.SerializeToString())
            assert response.partial_success.rejected_spans == 2
            assert "injected resource bug" in response.partial_success.error_message
            assert [r["user_id"] for r in svc.rows()] == ["kept"]
        finally:
            svc.stop()


class TestAttributeBound:
    def test_a_span_with_a_huge_attribute_list_is_read_up_to_the_bound(self, tmp_path: Path) -> None:
        """200,000 attributes: the first max_span_attributes are read, the rest ignored and counted."""
        svc = Service(tmp_path / "um.duckdb", max_span_attributes=100, metrics_refresh_seconds=0)
        app = svc.start()
        attrs = chat(user="first")
        attrs |= {f"junk.{i}": "x" for i in range(200_000)}
        attrs["property.after_the_bound"] = "never read"
        response = raw_export(svc.target, request([span(attrs)]).SerializeToString())
        assert not response.HasField("partial_success")
        assert counter_total(
            app.api_url, "user_metrics_limit_cuts", limit="max_span_attributes"
        ) == 200_001 - 100 + len(chat(user="first"))
        (row,) = svc.rows()
        assert (row["user_id"], row["properties"]) == ("first", {})

    def test_the_json_decoder_keeps_the_bound_too(self, tmp_path: Path) -> None:
        """OTLP/JSON: the attributes beyond the bound are left out before the message is built
        (that costs more than mapping), and counted just the same."""
        svc = Service(tmp_path / "um.duckdb", max_span_attributes=10, metrics_refresh_seconds=0)
        app = svc.start()
        attrs = chat(user="json") | {f"junk.{i}": "x" for i in range(50_000)}
        resource = {"service.name": "svc"} | {f"r.{i}": i for i in range(20)}
        document = to_otlp_json(request([span(attrs)], resource))
        status, _, _ = post(app.otlp_http_url, json.dumps(document).encode(), content_type="application/json")
        assert status == 200
        cut = counter_total(app.api_url, "user_metrics_limit_cuts", limit="max_span_attributes")
        assert cut == len(attrs) - 10 + 21 - 10
        (row,) = svc.rows()
        assert row["user_id"] == "json"

    def test_resource_attributes_are_bounded_too(self) -> None:
        """The resource's attribute list is cut the same way, and the cut counted."""
        conv = compile_conventions(max_span_attributes=3)
        resource = {"service.name": "svc", "a": 1, "b": 2, "user.id": "too-late"}
        llm = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m", "gen_ai.usage.input_tokens": 1}
        mapped = map_request(request([span(llm)], resource), conv, now_unix_nano=time.time_ns())
        assert mapped.dropped_attributes == 1
        assert mapped.records[0].user_id is None


class TestFairness:
    def test_waiters_are_served_in_the_order_they_came(self) -> None:
        """With one slot taken, later arrivals get it in arrival order."""
        slots = FairSlots(1)
        slots.acquire()
        order: list[int] = []
        threads = []
        for i in range(5):
            thread = threading.Thread(target=lambda i=i: (slots.acquire(), order.append(i), slots.release()))
            thread.start()
            threads.append(thread)
            while len(slots._line) < i + 1:  # wait until it queues, so arrival order is known
                time.sleep(0.001)
        slots.release()
        for thread in threads:
            thread.join(30)
        assert order == [0, 1, 2, 3, 4]

    def test_turn_hands_the_slot_to_the_first_waiter(self) -> None:
        """A holder that calls turn() while someone waits runs again only after that waiter."""
        slots = FairSlots(1)
        slots.acquire()
        events: list[str] = []
        waiter = threading.Thread(target=lambda: (slots.acquire(), events.append("small"), slots.release()))
        waiter.start()
        while not slots._line:
            time.sleep(0.001)
        slots.turn()
        events.append("big resumed")
        slots.release()
        waiter.join(30)
        assert events == ["small", "big resumed"]

    def test_turn_without_waiters_keeps_the_slot(self) -> None:
        """Nobody waiting: turn() returns at once and the slot is still held."""
        slots = FairSlots(2)
        slots.acquire()
        slots.turn()
        assert slots._free == 1

    def test_the_mapper_pauses_every_few_hundred_spans(self) -> None:
        """map_request calls its pause hook once per PAUSE_EVERY spans read and LLM spans mapped."""
        calls = []
        spans = [span(chat(user=f"u{i}")) for i in range(PAUSE_EVERY * 2)]
        map_request(
            request(spans), compile_conventions(), now_unix_nano=time.time_ns(), pause=lambda: calls.append(1)
        )
        assert len(calls) == 4

    def test_a_big_export_is_written_in_parts(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """An export of more than WRITE_PART_ROWS LLM spans reaches the store in several writes,
        each committed before the next; every span is stored once."""
        monkeypatch.setattr(ingest, "WRITE_PART_ROWS", 100)
        svc = Service(tmp_path / "um.duckdb")
        app = svc.start()
        writes: list[int] = []
        real_write = store.Store.write

        def write(self: store.Store, table: pa.Table, *more: Any) -> Any:
            writes.append(table.num_rows)
            return real_write(self, table, *more)

        monkeypatch.setattr(store.Store, "write", write)
        response = raw_export(
            svc.target, request([span(chat(user=f"u{i}")) for i in range(250)]).SerializeToString()
        )
        assert not response.HasField("partial_success")
        assert writes == [100, 100, 50]
        assert app.stats.spans_stored == 250
        assert len(svc.rows()) == 250
