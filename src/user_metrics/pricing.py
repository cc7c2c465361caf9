"""Pricing: the cost of each request record, in exact nano-dollars.

A cost the span reported wins (``reported``). Otherwise an operator price file entry
(``custom``) or the bundled genai-prices data (``computed``) prices the usage buckets: uncached
input, cache read, cache write, output and reasoning. An unknown model is ``unpriced`` (NULL
cost); a call with no token counts is ``no_usage``.

genai-prices' ``calc_price`` costs ~120 us a call, so it is never called per span. For each
(provider, model) and the minute a span started (prices can change by date or time of day) the
model's price is resolved once and turned into per-token coefficients, by asking genai-prices
for the price of a few probe usages: a linear price is exactly ``base + sum(coef_i * count_i)``.
Costs are then integer arithmetic in atto-dollars, rounded half-even to nano-dollars, which is
what DECIMAL(18,9) stores. Tiered prices (not linear in the input size) are computed per record
through genai-prices, memoised by usage.
"""

from __future__ import annotations

import threading
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

from genai_prices import Usage
from genai_prices.data_snapshot import get_snapshot
from genai_prices.types import ModelInfo, ModelPrice, Provider, TieredPrices

from user_metrics.mapping import RequestRecord

ATTO_PER_NANO = 10**9
_MTOK = 1_000_000

# gen_ai.provider.name values (and older gen_ai.system ones) -> genai-prices provider ids.
PROVIDER_IDS = {
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "aws.bedrock": "aws",
    "bedrock": "aws",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "vertex_ai": "google",
    "vertexai": "google",
    "gemini": "google",
    "x_ai": "x-ai",
    "xai": "x-ai",
    "mistral_ai": "mistral",
    "mistralai": "mistral",
}


class PriceFileError(ValueError):
    """The operator's price file cannot be used."""


@dataclass(frozen=True)
class Coefficients:
    """A linear price: atto-dollars per request and per token of each bucket.

    Counts are totals in OTel semantics (input includes cache, output includes reasoning), so
    ``cache_read`` is the difference between a cached and an uncached input token.
    """

    base: int
    input: int
    cache_read: int
    cache_write: int
    output: int
    reasoning: int

    def cost_atto(self, inp: int, cr: int, cw: int, out: int, rs: int) -> int:
        return (
            self.base
            + self.input * inp
            + self.cache_read * cr
            + self.cache_write * cw
            + self.output * out
            + self.reasoning * rs
        )


def _atto(usd: Decimal) -> int:
    """An exact USD amount as whole atto-dollars (prices have at most 18 decimals)."""
    scaled = usd.scaleb(18)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"price {usd} has more than 18 decimals")
    return int(scaled)


def nanos_from_atto(atto: int) -> int:
    """Round atto-dollars to nano-dollars, half to even (as Decimal.quantize does)."""
    q, r = divmod(atto, ATTO_PER_NANO)
    if r * 2 > ATTO_PER_NANO or (r * 2 == ATTO_PER_NANO and q % 2 == 1):
        q += 1
    return q


def nanos_from_usd(usd: Decimal) -> int:
    """A USD amount as nano-dollars, rounded half to even."""
    return int(usd.scaleb(9).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


@dataclass(frozen=True)
class CustomPrice:
    """One model priced by the operator (USD per million tokens)."""

    model: str
    provider: str | None
    coefficients: Coefficients


def load_price_file(path: str | Path) -> list[CustomPrice]:
    """Read an operator price file (TOML, ``[[model]]`` tables)."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PriceFileError(f"price file {path}: {exc}") from exc
    entries = data.get("model", [])
    if not isinstance(entries, list):
        raise PriceFileError(f"price file {path}: expected [[model]] tables")
    prices = []
    for i, entry in enumerate(entries, 1):
        where = f"price file {path}, model #{i}"
        known = {"name", "provider", "input_mtok", "output_mtok", "cache_read_mtok"}
        known |= {"cache_write_mtok", "reasoning_mtok", "request"}
        unknown = set(entry) - known
        if unknown:
            raise PriceFileError(f"{where}: unknown keys {sorted(unknown)}")
        if not isinstance(entry.get("name"), str) or not entry["name"]:
            raise PriceFileError(f"{where}: 'name' (the model name) is required")

        def usd(
            key: str, default: Decimal | None = None, *, _entry: Any = entry, _where: str = where
        ) -> Decimal:
            value = _entry.get(key)
            if value is None:
                if default is None:
                    raise PriceFileError(f"{_where}: '{key}' is required")
                return default
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise PriceFileError(f"{_where}: '{key}' must be a number")
            try:
                number = Decimal(str(value))
            except ArithmeticError:
                raise PriceFileError(f"{_where}: '{key}' must be a number") from None
            if not number.is_finite() or number < 0:
                raise PriceFileError(f"{_where}: '{key}' must be a non-negative number")
            return number

        inp = usd("input_mtok")
        out = usd("output_mtok")
        cr = usd("cache_read_mtok", inp)
        cw = usd("cache_write_mtok", inp)
        rs = usd("reasoning_mtok", out)
        per_request = usd("request", Decimal(0))
        prices.append(
            CustomPrice(
                model=entry["name"].lower(),
                provider=entry["provider"].lower() if entry.get("provider") else None,
                coefficients=Coefficients(
                    base=_atto(per_request),
                    input=_atto(inp / _MTOK),
                    cache_read=_atto((cr - inp) / _MTOK),
                    cache_write=_atto((cw - inp) / _MTOK),
                    output=_atto(out / _MTOK),
                    reasoning=_atto((rs - out) / _MTOK),
                ),
            )
        )
    return prices


def _probe(model_price: ModelPrice) -> Coefficients | None:
    """Per-token coefficients of a linear genai-prices price; None when tiered."""
    if any(isinstance(v, TieredPrices) for v in model_price.__dict__.values()):
        return None

    def total(**usage: int) -> Decimal:
        return model_price.calc_price(Usage(**usage))["total_price"]

    m = _MTOK
    base = total()
    with_input = total(input_tokens=m)
    with_output = total(output_tokens=m)
    return Coefficients(
        base=_atto(base),
        input=_atto((with_input - base) / m),
        cache_read=_atto((total(input_tokens=m, cache_read_tokens=m) - with_input) / m),
        cache_write=_atto((total(input_tokens=m, cache_write_tokens=m) - with_input) / m),
        output=_atto((with_output - base) / m),
        reasoning=_atto((total(output_tokens=m, output_reasoning_tokens=m) - with_output) / m),
    )


class Pricer:
    """Prices request records. Thread-safe; caches resolved prices."""

    def __init__(self, custom: Sequence[CustomPrice] = ()) -> None:
        self._custom = {(p.provider, p.model): p.coefficients for p in custom}
        self._snapshot = get_snapshot()
        self._models: dict[tuple[str | None, str], tuple[Provider, ModelInfo] | None] = {}
        self._coefficients: dict[int, Coefficients | None] = {}
        self._by_minute: dict[tuple[str | None, str, int], tuple[str, Any]] = {}
        self._tiered_memo: dict[tuple[Any, ...], int] = {}
        self._lock = threading.Lock()

    def _resolve(self, provider: str | None, model: str, minute: int) -> tuple[str, Any]:
        """(cost_source, how): Coefficients, a tiered (provider, model, price), or None if unpriced."""
        key = (provider, model, minute)
        hit = self._by_minute.get(key)
        if hit is not None:
            return hit
        with self._lock:
            result = self._resolve_locked(provider, model, minute)
            if len(self._by_minute) > 100_000:
                self._by_minute.clear()
            self._by_minute[key] = result
        return result

    def _resolve_locked(self, provider: str | None, model: str, minute: int) -> tuple[str, Any]:
        lowered = model.lower()
        custom = self._custom.get((provider, lowered)) or self._custom.get((None, lowered))
        if custom is not None:
            return ("custom", custom)
        found = self._find_model(provider, lowered)
        if found is None:
            return ("unpriced", None)
        provider_info, model_info = found
        when = datetime.fromtimestamp(minute * 60, UTC)
        model_price = model_info.get_prices(when)
        ident = id(model_price)
        if ident not in self._coefficients:
            self._coefficients[ident] = _probe(model_price)
        coefficients = self._coefficients[ident]
        if coefficients is None:
            return ("computed", (provider_info, model_info, model_price))
        return ("computed", coefficients)

    def _find_model(self, provider: str | None, model: str) -> tuple[Provider, ModelInfo] | None:
        key = (provider, model)
        if key in self._models:
            return self._models[key]
        provider_id = PROVIDER_IDS.get(provider, provider) if provider else None
        found: tuple[Provider, ModelInfo] | None = None
        for candidate in (provider_id, None) if provider_id else (None,):
            try:
                found = self._snapshot.find_provider_model(model, None, candidate, None)
                break
            except LookupError:
                continue
            except ValueError:
                continue
        self._models[key] = found
        return found

    def price(self, records: Sequence[RequestRecord]) -> tuple[list[int | None], list[str]]:
        """(cost in nano-dollars or None, cost_source) for each record."""
        costs: list[int | None] = []
        sources: list[str] = []
        for r in records:
            if r.cost_usd is not None:
                costs.append(nanos_from_usd(r.cost_usd))
                sources.append("reported")
                continue
            if r.input_tokens is None and r.output_tokens is None:
                costs.append(None)
                sources.append("no_usage")
                continue
            model = r.response_model or r.request_model
            if model is None:
                costs.append(None)
                sources.append("unpriced")
                continue
            source, how = self._resolve(r.provider, model, r.start_time_unix_nano // 60_000_000_000)
            if how is None:
                costs.append(None)
                sources.append(source)
                continue
            inp = r.input_tokens or 0
            out = r.output_tokens or 0
            # OTel counts include cache and reasoning; clamp what a library over-reports.
            cr = min(r.cache_read_tokens or 0, inp)
            cw = min(r.cache_write_tokens or 0, inp - cr)
            rs = min(r.reasoning_tokens or 0, out)
            if isinstance(how, Coefficients):
                costs.append(nanos_from_atto(how.cost_atto(inp, cr, cw, out, rs)))
            else:
                costs.append(self._tiered(how, inp, cr, cw, out, rs))
            sources.append(source)
        return costs, sources

    def _tiered(self, how: tuple[Provider, ModelInfo, ModelPrice], *counts: int) -> int:
        key = (id(how[2]), *counts)
        cached = self._tiered_memo.get(key)
        if cached is None:
            inp, cr, cw, out, rs = counts
            usage = Usage(
                input_tokens=inp,
                cache_read_tokens=cr,
                cache_write_tokens=cw,
                output_tokens=out,
                output_reasoning_tokens=rs,
            )
            total = how[2].calc_price(usage)["total_price"]
            cached = nanos_from_usd(total)
            if len(self._tiered_memo) > 100_000:
                self._tiered_memo.clear()
            self._tiered_memo[key] = cached
        return cached
