"""The cost per bucket: what a computed or custom cost is made of, summing exactly to the cost."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

from conftest import Service, read_requests
from genai_prices.data_snapshot import get_snapshot
from genai_prices.types import ModelPrice, Tier, TieredPrices
from hypothesis import given, settings
from hypothesis import strategies as st
from otlp import ANTHROPIC_OPENLLMETRY, chat, request, span
from test_pricing import model, record, snapshot_with

from user_metrics.ingest.price_tables import SPLIT_BUCKETS, Coefficients, PriceTable, price_table
from user_metrics.ingest.pricing import Pricer, load_price_file
from user_metrics.store.schema import SPLIT_COLUMNS

COUNT = st.integers(0, 10**9)


@st.composite
def coefficients(draw: st.DrawFn) -> Coefficients:
    scale = draw(st.integers(9, 22))
    coef = st.integers(-(10 ** (scale - 3)), 10 ** (scale - 3))
    return Coefficients(scale, *(draw(coef) for _ in range(6)))


@st.composite
def usages(draw: st.DrawFn) -> tuple[int, int, int, int, int]:
    """Totals as the pricer passes them: input includes cache, output includes reasoning."""
    inp, out = draw(COUNT), draw(COUNT)
    cr = draw(st.integers(0, inp))
    cw = draw(st.integers(0, inp - cr))
    rs = draw(st.integers(0, out))
    return inp, cr, cw, out, rs


def exact_buckets(c: Coefficients, inp: int, cr: int, cw: int, out: int, rs: int) -> list[Fraction]:
    """Each bucket's exact amount in nano-dollars, at its full rate."""
    amounts = [
        c.input * (inp - cr - cw),
        (c.input + c.cache_read) * cr,
        (c.input + c.cache_write) * cw,
        c.output * (out - rs),
        (c.output + c.reasoning) * rs,
        c.base,
    ]
    return [Fraction(a, c.divisor) for a in amounts]


class TestSplitArithmetic:
    @settings(max_examples=3000, deadline=None)
    @given(coefficients(), usages())
    def test_buckets_sum_to_the_cost_and_each_is_within_a_nano_of_exact(
        self, c: Coefficients, usage: tuple[int, int, int, int, int]
    ) -> None:
        """For any price (any scale, negative coefficients too) and usage, the buckets sum exactly
        to the record's one rounding, each is its exact amount rounded down or up, and a bucket
        with no tokens costs nothing."""
        split = c.split_nanos(*usage)
        assert len(split) == len(SPLIT_BUCKETS)
        assert sum(split) == c.cost_nanos(*usage)
        inp, cr, cw, out, rs = usage
        counts = (inp - cr - cw, cr, cw, out - rs, rs, 1)
        for got, exact, n in zip(split, exact_buckets(c, *usage), counts, strict=True):
            assert exact - 1 < got < exact + 1
            if n == 0:
                assert got == 0

    def test_the_rounding_goes_to_the_largest_remainder(self) -> None:
        """0.4 + 0.7 nano-dollars is 1: the bucket with the larger remainder (output) gets it."""
        c = Coefficients(10, 0, 4, 0, 0, 7, 0)  # 0.4 and 0.7 nano-dollars a token
        assert c.split_nanos(1, 0, 0, 1, 0) == (0, 0, 0, 1, 0, 0)

    def test_equal_remainders_go_to_the_earlier_bucket(self) -> None:
        """0.5 + 0.5 nano-dollars is 1: ties go to the earlier bucket, every time."""
        c = Coefficients(10, 0, 5, 0, 0, 5, 0)
        assert {c.split_nanos(1, 0, 0, 1, 0) for _ in range(5)} == {(1, 0, 0, 0, 0, 0)}

    def test_half_even_total_is_kept(self) -> None:
        """A lone 2.5 nano-dollars rounds to 2 (half to even), as the cost does."""
        c = Coefficients(10, 0, 25, 0, 0, 0, 0)
        assert c.split_nanos(1, 0, 0, 0, 0) == (2, 0, 0, 0, 0, 0) and c.cost_nanos(1, 0, 0, 0, 0) == 2

    def test_full_rates_per_bucket(self) -> None:
        """Cache read at input + cache_read, cache write at input + cache_write, reasoning at
        output + reasoning: 3/0.30/3.75/15 USD per MTok and 1M tokens of each bucket."""
        c = Coefficients.exact(
            base=Fraction(0),
            input=Fraction(3, 10**6),
            cache_read=Fraction(3, 10**7) - Fraction(3, 10**6),
            cache_write=Fraction(375, 10**8) - Fraction(3, 10**6),
            output=Fraction(15, 10**6),
            reasoning=Fraction(0),
        )
        m = 10**6
        assert c.split_nanos(3 * m, m, m, 2 * m, m) == (
            3 * 10**9,
            3 * 10**8,
            375 * 10**7,
            15 * 10**9,
            15 * 10**9,
            0,
        )

    def test_a_tiered_table_splits_at_the_piece_of_its_input_count(self) -> None:
        """Every bucket of a request above a tier start is at the tier's rate."""
        low = Coefficients(9, 0, 1000, 0, 0, 2000, 0)
        high = Coefficients(9, 0, 3000, 0, 0, 4000, 0)
        table = PriceTable((100,), (low, high))
        assert table.split_nanos(100, 0, 0, 10, 0) == (100_000, 0, 0, 20_000, 0, 0)
        assert table.split_nanos(101, 0, 0, 10, 0) == (303_000, 0, 0, 40_000, 0, 0)


class TestEveryPriceShape:
    def test_every_bundled_price_splits_exactly(self) -> None:
        """Every price genai-prices bundles (flat, tiered, with a request fee, long decimals):
        random usages split into buckets summing exactly to the cost the table computes."""
        rng = random.Random(16)
        tables = 0
        for provider in get_snapshot().providers:
            for info in provider.models:
                prices = info.get_prices(datetime(2026, 11, 20, tzinfo=UTC))
                try:
                    table = price_table(prices)
                except (ValueError, ArithmeticError):
                    continue
                tables += 1
                starts = [0, *table.starts]
                for _ in range(5):
                    inp = rng.choice(starts) + rng.randint(0, 300_000)
                    cr = rng.randint(0, inp)
                    cw = rng.randint(0, inp - cr)
                    out = rng.randint(0, 100_000)
                    usage = (inp, cr, cw, out, rng.randint(0, out))
                    assert sum(table.split_nanos(*usage)) == table.cost_nanos(*usage), info.id
        assert tables > 500

    def test_the_pricer_returns_the_split_of_a_computed_cost(self) -> None:
        """A tiered price through the pricer: cost unchanged, split by bucket, summing to it."""
        tiered = TieredPrices(base=Decimal("1.25"), tiers=[Tier(start=200_000, price=Decimal("2.5"))])
        pricer = Pricer(
            snapshot=snapshot_with(model("t", ModelPrice(input_mtok=tiered, output_mtok=Decimal(10))))
        )
        usage = {"input_tokens": 200_001, "cache_read_tokens": 1, "output_tokens": 7, "reasoning_tokens": 2}
        got = pricer.price([record("t", "acme", **usage)])
        assert got.splits == [(200_000 * 2500, 2500, 0, 5 * 10_000, 2 * 10_000, 0)]
        assert got.costs == [sum(got.splits[0])] == [500_072_500]

    def test_a_custom_price_with_a_request_fee_splits_it_out(self, tmp_path: Path) -> None:
        """A price-file entry with a per-request fee: the fee is its own bucket."""
        p = tmp_path / "prices.toml"
        p.write_text('[[model]]\nname = "m"\ninput_mtok = 2\noutput_mtok = 4\nrequest = 0.001\n')
        got = Pricer(load_price_file(p)).price([record("m", None, input_tokens=10, output_tokens=5)])
        assert got.splits == [(20_000, 0, 0, 20_000, 0, 1_000_000)]
        assert got.costs == [1_040_000] and got.sources == ["custom"]

    def test_reported_unpriced_and_no_usage_have_no_split(self) -> None:
        """Only a price computes a split: a reported cost, an unknown model and no usage have none."""
        reported = record("gpt-4o", input_tokens=10)._replace(cost_usd=Decimal("0.5"), cost_source="reported")
        got = Pricer().price([reported, record("no-such-model-xyz", input_tokens=10), record("gpt-4o")])
        assert got.splits == [None, None, None]


class TestStored:
    def test_stored_buckets_sum_to_cost_usd_and_cache_added_to_input_counts_once(
        self, tmp_path: Path
    ) -> None:
        """The stored columns: a priced row's buckets sum to its cost_usd; an Anthropic span
        counting input without cache (cache added to input) pays its 12 uncached input tokens at
        the input rate and its cache at the cache rates; reported and unpriced rows are NULL."""
        db = tmp_path / "um.duckdb"
        svc = Service(db)
        app = svc.start()
        app.ingestor.export(
            request(
                [
                    span({**ANTHROPIC_OPENLLMETRY, "user.id": "a"}),
                    span(chat(user="b", model="gpt-4o", inp=1000, out=100)),
                    span(chat(user="c", model="no-such-model-xyz")),
                    span(chat(user="d", **{"gen_ai.usage.cost": 0.25})),
                ]
            )
        )
        svc.stop()
        rows = {r["user_id"]: r for r in read_requests(db)}
        anthropic = rows["a"]
        assert anthropic["cache_added_to_input"] is True and anthropic["input_tokens"] == 6012
        claude = get_snapshot().find_provider_model("claude-sonnet-4-20250514", None, "anthropic", None)[1]
        c = price_table(claude.get_prices(datetime.now(UTC))).pieces[0]
        assert anthropic["input_cost_usd"] == Decimal(12 * c.input) / c.divisor / 10**9
        assert (
            anthropic["cache_read_cost_usd"] == Decimal(5000 * (c.input + c.cache_read)) / c.divisor / 10**9
        )
        assert (
            anthropic["cache_write_cost_usd"] == Decimal(1000 * (c.input + c.cache_write)) / c.divisor / 10**9
        )
        for user in ("a", "b"):
            assert sum(rows[user][name] for name in SPLIT_COLUMNS) == rows[user]["cost_usd"]
        for user in ("c", "d"):
            assert rows[user]["cost_source"] in ("unpriced", "reported")
            assert all(rows[user][name] is None for name in SPLIT_COLUMNS)
