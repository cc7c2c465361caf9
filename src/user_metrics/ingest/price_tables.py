"""Exact prices: a model's price as integer coefficients per token, and cost in nano-dollars.

A linear price is ``base + sum(coef_i * count_i)`` over the usage buckets. genai-prices holds
prices as decimals of any length (``0.08333333333333334`` USD per million tokens), so each
price keeps its coefficients as integers at its own decimal scale (USD x 10**scale): a cost is
integer arithmetic, exact, rounded half to even to the nano-dollar once per record. That is
what DECIMAL(18,9) stores and what ``Decimal.quantize`` does to genai-prices' own answer.

genai-prices' tiered prices charge all tokens of a request at the rate of the highest tier its
input count exceeds, so a tiered price is linear between tier starts: a ``PriceTable`` holds
one set of coefficients per interval of input counts.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from fractions import Fraction
from typing import Any

from genai_prices import Usage
from genai_prices.types import ModelPrice, TieredPrices

NANO_SCALE = 9
_MTOK = 1_000_000
# The buckets of a split cost, in order (``Coefficients.split_nanos``): nano-dollars each.
SPLIT_BUCKETS = ("input", "cache_read", "cache_write", "output", "reasoning", "request")
Split = tuple[int, int, int, int, int, int]


def round_half_even(value: int, divisor: int) -> int:
    """``value / divisor`` rounded half to even (``divisor`` > 0), in integers only."""
    q, r = divmod(value, divisor)
    if r * 2 > divisor or (r * 2 == divisor and q % 2 == 1):
        q += 1
    return q


def nanos_from_usd(usd: Decimal) -> int:
    """A USD amount as nano-dollars, rounded half to even (exactly, whatever its length)."""
    with localcontext() as ctx:
        # Enough digits that neither the shift nor the rounding loses any (28 is the default).
        ctx.prec = max(28, len(usd.as_tuple().digits) + NANO_SCALE + 2)
        return int(usd.scaleb(NANO_SCALE).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def decimal_places(value: Fraction) -> int:
    """How many decimal places ``value`` has (ValueError when it is no finite decimal)."""
    d = value.denominator
    twos = fives = 0
    while d % 2 == 0:
        d //= 2
        twos += 1
    while d % 5 == 0:
        d //= 5
        fives += 1
    if d != 1:
        raise ValueError(f"{value} is not a finite decimal")
    return max(twos, fives)


@dataclass(frozen=True)
class Coefficients:
    """A linear price, exactly: USD x 10**scale per request and per token of each bucket.

    Counts are totals in OTel semantics (input includes cache, output includes reasoning), so
    ``cache_read`` is the difference between a cached and an uncached input token.
    """

    scale: int
    base: int
    input: int
    cache_read: int
    cache_write: int
    output: int
    reasoning: int
    divisor: int = field(init=False, repr=False)  # 10**(scale - 9): one nano-dollar

    def __post_init__(self) -> None:
        object.__setattr__(self, "divisor", 10 ** (self.scale - NANO_SCALE))

    @classmethod
    def exact(
        cls,
        *,
        base: Fraction,
        input: Fraction,  # noqa: A002 - the bucket's name
        cache_read: Fraction,
        cache_write: Fraction,
        output: Fraction,
        reasoning: Fraction,
    ) -> Coefficients:
        """The coefficients of exact USD amounts, at the smallest scale (at least nano) that holds them."""
        values = (base, input, cache_read, cache_write, output, reasoning)
        scale = max(NANO_SCALE, *(decimal_places(v) for v in values))
        unit = 10**scale
        ints = [v * unit for v in values]
        assert all(i.denominator == 1 for i in ints)
        return cls(scale, *(int(i) for i in ints))

    def cost_nanos(self, inp: int, cr: int, cw: int, out: int, rs: int) -> int:
        """The cost of one request in nano-dollars, rounded half to even."""
        total = (
            self.base
            + self.input * inp
            + self.cache_read * cr
            + self.cache_write * cw
            + self.output * out
            + self.reasoning * rs
        )
        return round_half_even(total, self.divisor)

    def split_nanos(self, inp: int, cr: int, cw: int, out: int, rs: int) -> Split:
        """The cost of one request per bucket, in nano-dollars, summing exactly to ``cost_nanos``.

        Buckets (``SPLIT_BUCKETS``): uncached input, cache read, cache write, output without
        reasoning, reasoning, and the per-request fee, each at its full rate (a cache-read token
        at input + cache_read). The record's one rounding (half to even) goes to the buckets by
        largest remainder: each bucket gets its exact amount rounded down, and the nano-dollars
        the rounded total has beyond their sum go one each to the largest remainders (ties: the
        earlier bucket).
        """
        exact = (
            self.input * (inp - cr - cw),
            (self.input + self.cache_read) * cr,
            (self.input + self.cache_write) * cw,
            self.output * (out - rs),
            (self.output + self.reasoning) * rs,
            self.base,
        )
        d = self.divisor
        if d == 1:  # whole nano-dollars: nothing to round
            return exact
        floors = [a // d for a in exact]
        left = round_half_even(sum(exact), d) - sum(floors)
        if left:
            by_remainder = sorted(range(6), key=lambda i: (-(exact[i] - floors[i] * d), i))
            for i in by_remainder[:left]:
                floors[i] += 1
        return tuple(floors)  # type: ignore[return-value]


@dataclass(frozen=True)
class PriceTable:
    """A price linear in pieces: ``pieces[i]`` prices a request whose input count is above
    ``starts[i - 1]`` and at most ``starts[i]`` (one piece and no starts for a linear price)."""

    starts: tuple[int, ...]
    pieces: tuple[Coefficients, ...]

    def cost_nanos(self, inp: int, cr: int, cw: int, out: int, rs: int) -> int:
        """The cost of one request in nano-dollars (input includes cache, output reasoning)."""
        piece = self.pieces[bisect_left(self.starts, inp)] if self.starts else self.pieces[0]
        return piece.cost_nanos(inp, cr, cw, out, rs)

    def split_nanos(self, inp: int, cr: int, cw: int, out: int, rs: int) -> Split:
        """The cost per bucket (``Coefficients.split_nanos``) at the piece ``inp`` falls in."""
        piece = self.pieces[bisect_left(self.starts, inp)] if self.starts else self.pieces[0]
        return piece.split_nanos(inp, cr, cw, out, rs)


def linear(coefficients: Coefficients) -> PriceTable:
    """A table of one linear price."""
    return PriceTable((), (coefficients,))


def price_table(model_price: ModelPrice) -> PriceTable:
    """The exact table of a genai-prices price, from ``calc_price`` on a few probe usages.

    ValueError (or ArithmeticError) when genai-prices cannot price usage with this price.
    """
    prices: dict[str, Any] = dict(vars(model_price))
    tiered = [v for v in prices.values() if isinstance(v, TieredPrices)]
    starts = sorted({tier.start for v in tiered for tier in v.tiers})
    pieces = []
    for i in range(len(starts) + 1):
        inside = 0 if i == 0 else starts[i - 1] + 1  # an input count inside the i-th piece
        flat = {k: _rate(v, inside) if isinstance(v, TieredPrices) else v for k, v in prices.items()}
        pieces.append(_probe(ModelPrice(**flat)))
    return PriceTable(tuple(starts), tuple(pieces))


def _rate(price: TieredPrices, input_count: int) -> Decimal:
    """The rate genai-prices applies to every token of a request with ``input_count`` input tokens."""
    for tier in reversed(price.tiers):  # sorted by start
        if input_count > tier.start:
            return tier.price
    return price.base


def _probe(model_price: ModelPrice) -> Coefficients:
    """Per-token coefficients of a linear price, from its totals at one million tokens a bucket."""

    def total(**usage: int) -> Fraction:
        return Fraction(model_price.calc_price(Usage(**usage))["total_price"])

    m = _MTOK
    base = total()
    with_input = total(input_tokens=m)
    with_output = total(output_tokens=m)
    return Coefficients.exact(
        base=base,
        input=(with_input - base) / m,
        cache_read=(total(input_tokens=m, cache_read_tokens=m) - with_input) / m,
        cache_write=(total(input_tokens=m, cache_write_tokens=m) - with_input) / m,
        output=(with_output - base) / m,
        reasoning=(total(output_tokens=m, output_reasoning_tokens=m) - with_output) / m,
    )
