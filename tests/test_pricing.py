"""Pricing: reported cost wins, genai-prices computes exactly, the operator's file overrides, unknown is unpriced."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import pytest
from genai_prices import Usage, calc_price

from user_metrics.mapping import RequestRecord
from user_metrics.pricing import PriceFileError, Pricer, load_price_file, nanos_from_atto

START = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp() * 1e9)
BLANK = RequestRecord(*([None] * len(RequestRecord._fields)))


def record(model: str, provider: str | None = "openai", **tokens: int | None) -> RequestRecord:
    return BLANK._replace(
        provider=provider, response_model=model, start_time_unix_nano=START, properties={}, **tokens
    )


def nanos(usd: Decimal) -> int:
    return int(usd.quantize(Decimal("1e-9"), rounding=ROUND_HALF_EVEN).scaleb(9))


class TestComputed:
    @pytest.mark.parametrize(
        ("provider", "model"),
        [
            ("openai", "gpt-4o-mini-2024-07-18"),
            ("openai", "o3"),
            ("anthropic", "claude-3-5-sonnet-20241022"),
            ("gcp.gemini", "gemini-2.5-pro"),  # tiered by prompt size
            ("azure.ai.openai", "gpt-4o"),
        ],
    )
    def test_matches_calc_price_to_the_nano_dollar(self, provider: str, model: str) -> None:
        """Bulk pricing equals genai-prices' calc_price on random usages, every bucket priced as such."""
        rng = random.Random(7)
        pricer = Pricer()
        records = []
        for _ in range(200):
            inp = rng.randint(0, 400_000)
            cr = rng.randint(0, inp)
            cw = rng.randint(0, inp - cr)
            out = rng.randint(0, 20_000)
            rs = rng.randint(0, out)
            records.append(
                record(
                    model,
                    provider,
                    input_tokens=inp,
                    output_tokens=out,
                    cache_read_tokens=cr,
                    cache_write_tokens=cw,
                    reasoning_tokens=rs,
                )
            )
        costs, sources = pricer.price(records)
        assert set(sources) == {"computed"}
        ids = {"gcp.gemini": "google", "azure.ai.openai": "azure"}
        for r, cost in zip(records[:60], costs, strict=False):
            usage = Usage(
                input_tokens=r.input_tokens,
                output_tokens=r.output_tokens,
                cache_read_tokens=r.cache_read_tokens,
                cache_write_tokens=r.cache_write_tokens,
                output_reasoning_tokens=r.reasoning_tokens,
            )
            truth = calc_price(
                usage,
                model,
                provider_id=ids.get(provider, provider),
                genai_request_timestamp=datetime.fromtimestamp(START / 1e9, UTC),
            )
            assert cost == nanos(truth.total_price)

    def test_cache_read_is_cheaper_than_uncached_input(self) -> None:
        """Cached input tokens are priced at the cache-read rate, not the input rate."""
        (plain, cached), _ = Pricer().price(
            [
                record("gpt-4o", input_tokens=1_000_000),
                record("gpt-4o", input_tokens=1_000_000, cache_read_tokens=1_000_000),
            ]
        )
        assert (plain, cached) == (2_500_000_000, 1_250_000_000)

    def test_unknown_provider_falls_back_to_the_model_name(self) -> None:
        """A provider genai-prices does not know still prices a model it does know."""
        (cost,), (source,) = Pricer().price([record("gpt-4o", provider="my-gateway", input_tokens=1_000_000)])
        assert (cost, source) == (2_500_000_000, "computed")


class TestSources:
    def test_reported_cost_wins(self) -> None:
        """A cost on the span is stored as reported, rounded to the nano-dollar."""
        r = record("gpt-4o", input_tokens=10)._replace(
            cost_usd=Decimal("0.1234567891"), cost_source="reported"
        )
        assert Pricer().price([r]) == ([123456789], ["reported"])

    def test_unknown_model_is_unpriced_not_zero(self) -> None:
        """An unknown model has no cost (NULL) and is marked unpriced."""
        assert Pricer().price([record("no-such-model-xyz", input_tokens=10)]) == ([None], ["unpriced"])

    def test_no_token_counts_is_no_usage(self) -> None:
        """A call without token counts (stream without usage) is no_usage."""
        assert Pricer().price([record("gpt-4o")]) == ([None], ["no_usage"])

    def test_rounding_is_half_even(self) -> None:
        """Atto-dollars round half to even at the nano-dollar."""
        assert [nanos_from_atto(x) for x in (1_500_000_000, 2_500_000_000, 2_500_000_001, 999_999_999)] == [
            2,
            2,
            3,
            1,
        ]


class TestPriceFile:
    def test_custom_model_and_override(self, tmp_path: Path) -> None:
        """The operator's file adds a model and overrides a known one (cost_source custom)."""
        path = tmp_path / "prices.toml"
        path.write_text(
            '[[model]]\nname = "acme-large"\ninput_mtok = 1.5\noutput_mtok = 6\ncache_read_mtok = 0.15\n'
            '[[model]]\nname = "gpt-4o"\nprovider = "openai"\ninput_mtok = 1\noutput_mtok = 2\n'
        )
        pricer = Pricer(load_price_file(path))
        costs, sources = pricer.price(
            [
                record(
                    "acme-large",
                    provider=None,
                    input_tokens=2_000_000,
                    cache_read_tokens=1_000_000,
                    output_tokens=1_000_000,
                ),
                record("GPT-4o", input_tokens=1_000_000, output_tokens=1_000_000),
                record("gpt-4o-mini", input_tokens=1_000_000),
            ]
        )
        assert costs[:2] == [(1_500_000_000 + 150_000_000 + 6_000_000_000), 3_000_000_000]
        assert sources == ["custom", "custom", "computed"]

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("[[model]]\ninput_mtok = 1\noutput_mtok = 1\n", "'name'"),
            ('[[model]]\nname = "m"\noutput_mtok = 1\n', "'input_mtok' is required"),
            ('[[model]]\nname = "m"\ninput_mtok = -1\noutput_mtok = 1\n', "non-negative"),
            ('[[model]]\nname = "m"\ninput_mtok = 1\noutput_mtok = 1\nprice = 3\n', "unknown keys"),
            ("not toml [", "price file"),
        ],
    )
    def test_bad_price_file_is_a_clear_error(self, tmp_path: Path, text: str, message: str) -> None:
        """A price file that cannot be used names the problem."""
        path = tmp_path / "prices.toml"
        path.write_text(text)
        with pytest.raises(PriceFileError, match=message):
            load_price_file(path)
