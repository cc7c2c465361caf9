"""Pricing end to end: spans exported by the OTel SDK to the real service, costs read back from DuckDB."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import Service
from genai_prices import Usage, calc_price
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from otlp import ANTHROPIC_OPENLLMETRY

from user_metrics.ingest.pricing import PriceFileError

START = int(datetime(2026, 11, 20, 12, 0, tzinfo=UTC).timestamp() * 1e9)
WHEN = datetime.fromtimestamp(START / 1e9, UTC)


def export(target: str, spans: list[dict[str, Any]]) -> SpanExportResult:
    """One OTLP/gRPC Export of one LLM span per attribute dict (user ``u<i>`` unless given), by the SDK."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests")
    for i, attrs in enumerate(spans):
        s = tracer.start_span(
            "chat",
            kind=SpanKind.CLIENT,
            start_time=START + i * 10**9,
            attributes={"user.id": f"u{i}", **attrs},
        )
        s.end(end_time=START + i * 10**9 + 250_000_000)
    exporter = OTLPSpanExporter(endpoint=target, insecure=True, timeout=20)
    try:
        return exporter.export(memory.get_finished_spans())
    finally:
        exporter.shutdown()
        provider.shutdown()


def span(
    model: str, provider: str = "openai", inp: int = 0, out: int = 0, cr: int = 0, cw: int = 0, **more: Any
) -> dict[str, Any]:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        "gen_ai.usage.input_tokens": inp,
        "gen_ai.usage.output_tokens": out,
        "gen_ai.usage.cache_read.input_tokens": cr,
        "gen_ai.usage.cache_write.input_tokens": cw,
        **more,
    }


def genai_prices(model: str, provider: str, inp: int, out: int, cr: int = 0, cw: int = 0) -> Decimal:
    """genai-prices' own answer, rounded half to even to the nano-dollar."""
    usage = Usage(input_tokens=inp, output_tokens=out, cache_read_tokens=cr, cache_write_tokens=cw)
    total = calc_price(usage, model, provider_id=provider, genai_request_timestamp=WHEN).total_price
    return total.quantize(Decimal("1e-9"), rounding=ROUND_HALF_EVEN)


def by_user(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["user_id"]: r for r in rows}


@pytest.fixture
def priced(tmp_path: Path) -> Iterator[Service]:
    """The service with a price file, rendering /metrics on every scrape."""
    path = tmp_path / "prices.toml"
    path.write_text(
        '[[model]]\nname = "gpt-4o-mini"\nprovider = "openai"\ninput_mtok = 1\noutput_mtok = 2\n'
        '[[model]]\nname = "gemini-2.5-flash"\nprovider = "google"\ninput_mtok = 0.3333333333333333\n'
        "output_mtok = 3\n"
    )
    svc = Service(tmp_path / "um.duckdb", price_file=str(path), metrics_refresh_seconds=0.0)
    svc.start()
    yield svc
    svc.stop()


class TestExport:
    def test_a_long_decimal_model_in_a_mixed_batch_is_stored_with_every_other_span(
        self, service: Service
    ) -> None:
        """An Export holding a model priced 0.0833... USD/MTok among other users' spans is
        acknowledged and stored whole, each cost equal to genai-prices' answer."""
        spans = [
            span("google/gemini-2.5-flash", "openrouter", inp=120_000, out=900, cw=40_000),
            span("gpt-4o-mini", inp=1200, out=300, cr=200),
            span("Qwen/Qwen3-VL-8B-Instruct", "huggingface_together", inp=777, out=55),
            span("no-such-model-xyz", inp=10, out=10),
        ]
        assert export(service.target, spans) == SpanExportResult.SUCCESS
        rows = by_user(service.rows())
        assert len(rows) == 4
        assert rows["u0"]["cost_usd"] == genai_prices(
            "google/gemini-2.5-flash", "openrouter", 120_000, 900, cw=40_000
        )
        assert rows["u1"]["cost_usd"] == genai_prices("gpt-4o-mini", "openai", 1200, 300, cr=200)
        assert rows["u2"]["cost_usd"] == genai_prices(
            "Qwen/Qwen3-VL-8B-Instruct", "huggingface_together", 777, 55
        )
        got = [(rows[u]["cost_source"], rows[u]["price_provider"]) for u in ("u0", "u1", "u2", "u3")]
        assert got == [
            ("computed", "openrouter"),
            ("computed", "openai"),
            ("computed", "huggingface_together"),
            ("unpriced", None),
        ]
        assert rows["u3"]["cost_usd"] is None

    @pytest.mark.parametrize(
        ("address", "model", "vendor"),
        [
            ("api.deepseek.com", "deepseek-chat", "deepseek"),
            ("api.groq.com", "llama-3.3-70b-versatile", "groq"),
            ("openrouter.ai", "anthropic/claude-3.5-sonnet", "openrouter"),
        ],
    )
    def test_an_openai_client_at_another_vendor_is_priced_and_marked_by_that_vendor(
        self, service: Service, address: str, model: str, vendor: str
    ) -> None:
        """provider says openai, server.address says who answered: that vendor's price, stored as such."""
        spans = [
            span(model, inp=5000, out=700, **{"server.address": address, "server.port": 443}),
            span("no-such-model-xyz", inp=10, out=10, **{"server.address": address}),
        ]
        assert export(service.target, spans) == SpanExportResult.SUCCESS
        rows = by_user(service.rows())
        assert (rows["u0"]["provider"], rows["u0"]["price_provider"]) == ("openai", vendor)
        assert rows["u0"]["cost_usd"] == genai_prices(model, vendor, 5000, 700)
        assert (rows["u1"]["cost_source"], rows["u1"]["cost_usd"], rows["u1"]["price_provider"]) == (
            "unpriced",
            None,
            None,
        )

    def test_anthropic_input_without_cache_is_billed_in_full_and_flagged(self, priced: Service) -> None:
        """Input 12 beside 5000 cache reads and 1000 cache writes is 6012 input tokens, billed as such,
        flagged, and counted on /metrics."""
        anthropic = ANTHROPIC_OPENLLMETRY
        assert (
            export(priced.target, [anthropic, span("gpt-4o", inp=33, out=5, cr=11)])
            == SpanExportResult.SUCCESS
        )
        assert priced.app is not None
        with urllib.request.urlopen(priced.app.api_url + "/metrics", timeout=30) as response:
            metrics = response.read().decode()
        assert "user_metrics_spans_cache_added_to_input_total 1.0" in metrics
        rows = by_user(priced.rows())
        r = rows["u0"]
        assert (r["input_tokens"], r["cache_read_tokens"], r["cache_write_tokens"]) == (6012, 5000, 1000)
        assert r["cache_added_to_input"] is True and rows["u1"]["cache_added_to_input"] is False
        assert r["cost_usd"] == genai_prices(
            "claude-sonnet-4-20250514", "anthropic", 6012, 300, cr=5000, cw=1000
        )
        assert r["price_provider"] == "anthropic"


class TestPriceFile:
    def test_an_override_of_the_alias_applies_to_the_dated_model_openai_answers(
        self, priced: Service
    ) -> None:
        """An entry for gpt-4o-mini prices a span answering gpt-4o-mini-2024-07-18."""
        dated = span(
            "gpt-4o-mini", inp=1_000_000, out=1_000_000, **{"gen_ai.response.model": "gpt-4o-mini-2024-07-18"}
        )
        assert export(priced.target, [dated]) == SpanExportResult.SUCCESS
        (row,) = priced.rows()
        assert (row["cost_usd"], row["cost_source"], row["price_provider"]) == (
            Decimal(3),
            "custom",
            "openai",
        )

    def test_an_entry_for_google_applies_to_gcp_gemini_spans(self, priced: Service) -> None:
        """The entry's `google` and the span's `gcp.gemini` are one provider; its long price is exact."""
        gemini = span("gemini-2.5-flash", "gcp.gemini", inp=3_000_000, out=0)
        assert export(priced.target, [gemini]) == SpanExportResult.SUCCESS
        (row,) = priced.rows()
        assert (row["cost_usd"], row["cost_source"], row["price_provider"]) == (
            Decimal(1),
            "custom",
            "google",
        )

    @pytest.mark.parametrize(
        ("entry", "message"),
        [
            (
                'name = "m"\ninput_mtok = "one"\noutput_mtok = 1',
                r"model #1 \('m'\): 'input_mtok' must be a number",
            ),
            ('name = "m"\nprovider = 42\ninput_mtok = 1\noutput_mtok = 1', r"model #1 \('m'\): 'provider'"),
            ('name = "m"\ninput_mtok = 1e300\noutput_mtok = 1', r"model #1 \('m'\): 'input_mtok' is over"),
        ],
    )
    def test_a_bad_price_value_stops_start_up_with_a_message_naming_the_entry(
        self, tmp_path: Path, entry: str, message: str
    ) -> None:
        """A price the service cannot use is a PriceFileError at start-up, never a bare error."""
        path = tmp_path / "prices.toml"
        path.write_text(f"[[model]]\n{entry}\n")
        with pytest.raises(PriceFileError, match=message):
            Service(tmp_path / "um.duckdb", price_file=str(path)).start()
