"""Pricing: reported cost wins, genai-prices computes exactly, the operator's file overrides, unknown is unpriced."""

from __future__ import annotations

import logging
import random
from datetime import UTC, date, datetime, time
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction

import pytest
from genai_prices import Usage, calc_price
from genai_prices.data_snapshot import DataSnapshot, get_snapshot
from genai_prices.types import (
    ClauseEquals,
    ConditionalPrice,
    ModelInfo,
    ModelPrice,
    Provider,
    StartDateConstraint,
    Tier,
    TieredPrices,
    TimeOfDateConstraint,
)

from user_metrics.ingest.price_tables import Coefficients, nanos_from_usd, round_half_even
from user_metrics.ingest.pricing import Pricer, api_url, provider_key
from user_metrics.store.records import RequestRecord

START = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp() * 1e9)
BLANK = RequestRecord(*([None] * 24))
OWNER = {id(m): p.id for p in get_snapshot().providers for m in p.models}


def record(
    model: str, provider: str | None = "openai", *, at: int = START, **fields: object
) -> RequestRecord:
    return BLANK._replace(
        provider=provider, response_model=model, start_time_unix_nano=at, properties={}, **fields
    )


def nanos(usd: Decimal) -> int:
    return int(usd.quantize(Decimal("1e-9"), rounding=ROUND_HALF_EVEN).scaleb(9))


def truth(
    model: str, provider: str | None, when: datetime, *counts: int
) -> tuple[int, str] | tuple[None, None]:
    """genai-prices' own answer (nano-dollars, the provider whose list priced it): its lookup for
    the provider, else by the model name alone, as the pricer falls back."""
    inp, cr, cw, out, rs = counts
    usage = Usage(
        input_tokens=inp,
        cache_read_tokens=cr,
        cache_write_tokens=cw,
        output_tokens=out,
        output_reasoning_tokens=rs,
    )
    for provider_id in (provider, None):
        try:
            price = calc_price(usage, model, provider_id=provider_id, genai_request_timestamp=when)
        except LookupError:
            continue
        return nanos(price.total_price), OWNER[id(price.model)]
    return None, None


def usages(model_price: ModelPrice) -> list[tuple[int, int, int, int, int]]:
    """A few usages: small, cached with reasoning, huge (10**10 a bucket), and both sides of every tier."""
    out = [
        (1000, 0, 0, 500, 0),
        (300_000, 100_000, 50_000, 20_000, 5_000),
        (9_999_999_999, 1_234_567_891, 7_654_321, 9_876_543_210, 12_345),
    ]
    for value in vars(model_price).values():
        if isinstance(value, TieredPrices):
            for tier in value.tiers:
                out += [(tier.start, tier.start // 3, tier.start // 5, 1001, 7), (tier.start + 1, 1, 2, 3, 1)]
    return out


def moments(model: ModelInfo) -> list[datetime]:
    """A fixed time, and one at which each of a model's conditional prices starts."""
    out = [datetime.fromtimestamp(START / 1e9, UTC)]
    if isinstance(model.prices, list):
        for conditional in model.prices:
            constraint = conditional.constraint
            if isinstance(constraint, StartDateConstraint):
                out.append(datetime.combine(constraint.start_date, time(12), UTC))
            elif isinstance(constraint, TimeOfDateConstraint):
                out.append(datetime.combine(date(2026, 11, 20), constraint.start_time).replace(tzinfo=UTC))
    return out


class TestEveryBundledModel:
    def test_every_model_of_every_provider_costs_what_genai_prices_says(self) -> None:
        """Each bundled model (and each of its conditional prices) costs, to the nano-dollar,
        what genai-prices' calc_price answers, and names the list that priced it: long decimals,
        tier edges, cache, reasoning and 10**10-token usages alike."""
        records, expected = [], []
        for provider in get_snapshot().providers:
            for model in provider.models:
                for when in moments(model):
                    at = int(when.timestamp()) * 10**9
                    for counts in usages(model.get_prices(when)):
                        inp, cr, cw, out, rs = counts
                        records.append(
                            record(
                                model.id,
                                provider.id,
                                at=at,
                                input_tokens=inp,
                                cache_read_tokens=cr,
                                cache_write_tokens=cw,
                                output_tokens=out,
                                reasoning_tokens=rs,
                            )
                        )
                        expected.append(truth(model.id, provider.id, when, *counts))
        assert len(records) > 7000
        costs, sources, providers, _ = Pricer().price(records)
        wrong = [
            (r.provider, r.response_model, r.input_tokens, got, want)
            for r, got, want in zip(records, zip(costs, providers, strict=True), expected, strict=True)
            if got != want
        ]
        assert wrong == []
        assert {s for s, (cost, _) in zip(sources, expected, strict=True) if cost is None} == {"unpriced"}
        assert {s for s, (cost, _) in zip(sources, expected, strict=True) if cost is not None} == {"computed"}

    @pytest.mark.parametrize(
        ("provider", "model"),
        [
            ("openrouter", "google/gemini-2.5-flash"),
            ("openrouter", "google/gemini-2.5-flash-lite"),
            ("huggingface_together", "Qwen/Qwen3-VL-8B-Instruct"),
            ("huggingface_together", "deepseek-ai/DeepSeek-V4-Flash-0731"),
            ("huggingface_together", "meta-llama/Llama-3.3-70B-Instruct"),
        ],
    )
    def test_prices_with_long_decimals_are_exact(self, provider: str, model: str) -> None:
        """A price such as 0.08333333333333334 USD/MTok prices every bucket exactly."""
        counts = (123_457, 20_001, 33_333, 4_567, 89)
        inp, cr, cw, out, rs = counts
        r = record(
            model,
            provider,
            input_tokens=inp,
            cache_read_tokens=cr,
            cache_write_tokens=cw,
            output_tokens=out,
            reasoning_tokens=rs,
        )
        cost, want_provider = truth(model, provider, datetime.fromtimestamp(START / 1e9, UTC), *counts)
        assert Pricer().price([r])[:3] == ([cost], ["computed"], [want_provider])


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
        costs, sources, _, _ = Pricer().price(records)
        assert set(sources) == {"computed"}
        ids = {"gcp.gemini": "google", "azure.ai.openai": "azure"}
        when = datetime.fromtimestamp(START / 1e9, UTC)
        for r, cost in zip(records[:60], costs, strict=False):
            counts = (
                r.input_tokens,
                r.cache_read_tokens,
                r.cache_write_tokens,
                r.output_tokens,
                r.reasoning_tokens,
            )
            assert cost == truth(model, ids.get(provider, provider), when, *counts)[0]  # type: ignore[arg-type]

    def test_cache_read_is_cheaper_than_uncached_input(self) -> None:
        """Cached input tokens are priced at the cache-read rate, not the input rate."""
        (plain, cached), _, _, _ = Pricer().price(
            [
                record("gpt-4o", input_tokens=1_000_000),
                record("gpt-4o", input_tokens=1_000_000, cache_read_tokens=1_000_000),
            ]
        )
        assert (plain, cached) == (2_500_000_000, 1_250_000_000)

    def test_unknown_provider_falls_back_to_the_model_name(self) -> None:
        """A provider genai-prices does not know still prices a model it does know, under its list."""
        r = record("gpt-4o", provider="my-gateway", input_tokens=1_000_000)
        assert Pricer().price([r])[:3] == ([2_500_000_000], ["computed"], ["openai"])

    def test_request_model_prices_when_the_response_model_is_unknown(self) -> None:
        """Response model first, then the request model."""
        r = record("acme-private-snapshot-7", input_tokens=1_000_000)._replace(request_model="gpt-4o")
        assert Pricer().price([r])[:3] == ([2_500_000_000], ["computed"], ["openai"])


class TestApiAddress:
    @pytest.mark.parametrize(
        ("address", "model", "provider"),
        [
            ("api.deepseek.com", "deepseek-chat", "deepseek"),
            ("api.groq.com", "llama-3.3-70b-versatile", "groq"),
            ("openrouter.ai", "anthropic/claude-3.5-sonnet", "openrouter"),
            ("https://api.groq.com/openai/v1/", "llama-3.3-70b-versatile", "groq"),  # OpenLLMetry's api_base
            (
                "https://router.huggingface.co/together/v1",
                "Qwen/Qwen3-VL-8B-Instruct",
                "huggingface_together",
            ),
        ],
    )
    def test_openai_client_at_another_vendor_is_priced_by_that_vendor(
        self, address: str, model: str, provider: str
    ) -> None:
        """A span saying provider openai but sent to another vendor's API gets that vendor's price."""
        counts = (10_000, 2_000, 0, 3_000, 0)
        r = record(model, "openai", input_tokens=10_000, cache_read_tokens=2_000, output_tokens=3_000)
        cost, owner = truth(model, provider, datetime.fromtimestamp(START / 1e9, UTC), *counts)
        assert owner == provider
        assert Pricer().price([r._replace(server_address=address)])[:3] == ([cost], ["computed"], [provider])

    def test_address_of_no_known_vendor_falls_back_to_the_span_provider(self) -> None:
        """A local server or gateway names no vendor: the span's provider prices."""
        r = record("gpt-4o", input_tokens=1_000_000, server_address="127.0.0.1")
        assert Pricer().price([r])[:3] == ([2_500_000_000], ["computed"], ["openai"])

    def test_vendor_without_the_model_falls_back_to_the_span_provider(self) -> None:
        """An address naming a vendor whose list lacks the model: the span's provider prices it."""
        r = record("gpt-4o", input_tokens=1_000_000, server_address="api.groq.com")
        assert Pricer().price([r])[:3] == ([2_500_000_000], ["computed"], ["openai"])

    def test_unknown_model_stays_unpriced(self) -> None:
        """An address does not make an unknown model priced."""
        r = record("no-such-model-xyz", input_tokens=10, server_address="api.groq.com")
        assert Pricer().price([r])[:3] == ([None], ["unpriced"], [None])

    @pytest.mark.parametrize(
        ("address", "url"),
        [
            ("api.groq.com", "https://api.groq.com"),
            ("API.Groq.com", "https://api.groq.com"),
            ("http://127.0.0.1:40073/v1/", "https://127.0.0.1/v1/"),
            ("https://user:secret@api.openai.com:443/v1?x=1", "https://api.openai.com/v1"),
            ("https://[::1", None),
            ("", None),
        ],
    )
    def test_api_url_is_what_genai_prices_patterns_expect(self, address: str, url: str | None) -> None:
        """A host or URL becomes https://host/path (no port, credentials or query); nonsense none."""
        assert api_url(address) == url


class TestProviders:
    @pytest.mark.parametrize(
        ("name", "key"),
        [
            ("openai", "openai"),
            ("OpenAI", "openai"),
            (" Anthropic ", "anthropic"),
            ("gcp.gemini", "google"),
            ("gcp.vertex_ai", "google"),
            ("google", "google"),
            ("aws.bedrock", "aws"),
            ("az.ai.openai", "azure"),
            ("azure.ai.openai", "azure"),
            ("x_ai", "x-ai"),
            ("mistral_ai", "mistral"),
            ("together_ai", "together"),  # genai-prices' own provider_match
            ("my-gateway", "my-gateway"),
            ("", None),
            (None, None),
        ],
    )
    def test_spellings_normalise_to_genai_prices_ids(self, name: str | None, key: str | None) -> None:
        """gen_ai.provider.name / gen_ai.system spellings and genai-prices ids meet in one key."""
        assert provider_key(name, get_snapshot().providers) == key


def snapshot_with(*models: ModelInfo) -> DataSnapshot:
    acme = Provider(id="acme", name="Acme", api_pattern=r"https://api\.acme\.example", models=list(models))
    return DataSnapshot(providers=[acme], from_auto_update=False)


def model(name: str, prices: ModelPrice | list[ConditionalPrice]) -> ModelInfo:
    return ModelInfo(id=name, match=ClauseEquals(equals=name), prices=prices)


class TestOddPriceData:
    def test_a_price_genai_prices_cannot_compute_is_unpriced_alone(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A model whose genai-prices price raises is unpriced and logged; the rest are priced."""
        pricer = Pricer(
            snapshot=snapshot_with(
                model("broken", ModelPrice(input_mtok=Decimal("NaN"), output_mtok=Decimal(1))),
                model("fine", ModelPrice(input_mtok=Decimal(2), output_mtok=Decimal(1))),
            )
        )
        with caplog.at_level(logging.WARNING, logger="user_metrics.ingest.pricing"):
            got = pricer.price(
                [record("broken", "acme", input_tokens=5), record("fine", "acme", input_tokens=5)]
            )
        assert got[:3] == ([None, 10_000], ["unpriced", "computed"], [None, "acme"])
        assert "broken" in caplog.text

    def test_tiers_apply_to_every_token_above_their_start(self) -> None:
        """Tier edges: a request of exactly the start pays the base rate, one token more the tier's."""
        tiered = TieredPrices(base=Decimal("1.25"), tiers=[Tier(start=200_000, price=Decimal("2.5"))])
        pricer = Pricer(snapshot=snapshot_with(model("t", ModelPrice(input_mtok=tiered, output_mtok=tiered))))
        got = pricer.price(
            [record("t", "acme", input_tokens=n, output_tokens=1000) for n in (200_000, 200_001)]
        )
        assert got.costs == [(200_000 + 1000) * 1250, (200_001 + 1000) * 2500]

    def test_prices_change_with_the_spans_time(self) -> None:
        """Conditional prices: the one in force at the span's start applies."""
        later = StartDateConstraint(start_date=date(2026, 11, 21))
        prices = [
            ConditionalPrice(prices=ModelPrice(input_mtok=Decimal(1))),
            ConditionalPrice(constraint=later, prices=ModelPrice(input_mtok=Decimal(3))),
        ]
        pricer = Pricer(snapshot=snapshot_with(model("c", prices)))
        day = 86_400 * 10**9
        got = pricer.price(
            [record("c", "acme", at=at, input_tokens=1_000_000) for at in (START, START + day)]
        )
        assert got.costs == [1_000_000_000, 3_000_000_000]


class TestSources:
    def test_reported_cost_wins(self) -> None:
        """A cost on the span is stored as reported, rounded to the nano-dollar; no price list."""
        r = record("gpt-4o", input_tokens=10)._replace(
            cost_usd=Decimal("0.1234567891"), cost_source="reported"
        )
        assert Pricer().price([r]) == ([123456789], ["reported"], [None], [None])

    def test_unknown_model_is_unpriced_not_zero(self) -> None:
        """An unknown model has no cost (NULL) and is marked unpriced."""
        assert Pricer().price([record("no-such-model-xyz", input_tokens=10)]) == (
            [None],
            ["unpriced"],
            [None],
            [None],
        )

    def test_no_token_counts_is_no_usage(self) -> None:
        """A call without token counts (stream without usage) is no_usage."""
        assert Pricer().price([record("gpt-4o")]) == ([None], ["no_usage"], [None], [None])


class TestExactArithmetic:
    def test_rounding_is_half_even(self) -> None:
        """Integers round half to even at the divisor, negative ones too."""
        got = [round_half_even(x, 10) for x in (15, 25, 26, 9, -15, -25)]
        assert got == [2, 2, 3, 1, -2, -2]

    @staticmethod
    def per_mtok(usd: str) -> Coefficients:
        zero = Fraction(0)
        per_token = Fraction(Decimal(usd)) / 1_000_000
        return Coefficients.exact(
            base=zero, input=per_token, cache_read=zero, cache_write=zero, output=zero, reasoning=zero
        )

    def test_coefficients_take_the_scale_their_decimals_need(self) -> None:
        """0.08333333333333334 USD/MTok is 23 decimal places a token: kept exactly."""
        c = self.per_mtok("0.08333333333333334")
        assert c.scale == 23
        assert c.cost_nanos(12, 0, 0, 0, 0) == 1000  # 1000.00000000000008 nano-dollars
        assert c.cost_nanos(3_000_000, 0, 0, 0, 0) == 250_000_000

    def test_halves_are_told_from_just_above_them(self) -> None:
        """Half a nano-dollar rounds to even; 10**-17 of one more rounds up."""
        half = self.per_mtok("0.0000005")  # half a nano-dollar per thousand tokens
        assert [half.cost_nanos(n, 0, 0, 0, 0) for n in (1000, 3000)] == [0, 2]
        above = self.per_mtok("0.00000050000000000000001")
        assert above.cost_nanos(1000, 0, 0, 0, 0) == 1

    def test_long_reported_costs_round_exactly(self) -> None:
        """A reported cost longer than Decimal's 28 digits is rounded, not truncated by the context."""
        usd = Decimal("123456.0000000005000000000000000000001")
        assert nanos_from_usd(usd) == 123_456_000_000_001
        assert nanos_from_usd(Decimal("0.0000000025")) == 2
