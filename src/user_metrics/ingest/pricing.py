"""Pricing: the cost of each request record, in exact nano-dollars, and which price list billed it.

A cost the span reported wins (``reported``). Otherwise an operator price file entry
(``custom``) or the bundled genai-prices data (``computed``) prices the usage buckets: uncached
input, cache read, cache write, output and reasoning. An unknown model is ``unpriced`` (NULL
cost); a call with no token counts is ``no_usage``.

Which price applies: the providers to try are the one the span's API address names (an OpenAI
client pointed at DeepSeek, Groq or OpenRouter reports provider ``openai``; genai-prices matches
providers by API URL), then the span's own provider, each spelling normalised to a genai-prices
id by one function, for span and price file alike. For each provider, the response model, then
the request model. The price file is searched first (its provider-less entries last), then
genai-prices, which finally matches the model name alone.

genai-prices' ``calc_price`` costs ~120 us a call, so it is never called per span. For each
(provider, address, models) and the minute a span started (prices can change by date or time of
day) the price is resolved once into an exact ``PriceTable`` (see ``price_tables``); costs are
then integer arithmetic.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from genai_prices.data_snapshot import DataSnapshot, find_provider_by_id, get_snapshot
from genai_prices.types import ModelInfo, ModelPrice, Provider

from user_metrics.ingest.price_file import CustomPrice, PriceFileError, load_price_file
from user_metrics.ingest.price_tables import PriceTable, Split, nanos_from_usd, price_table
from user_metrics.store.records import RequestRecord

__all__ = ["CustomPrice", "PriceFileError", "Prices", "Pricer", "load_price_file", "provider_key"]

log = logging.getLogger(__name__)

# Cache sizes: past these the caches start again (span attributes pick the keys).
_MAX_CACHED = 100_000

# gen_ai.provider.name values (and older gen_ai.system ones) that genai-prices' own matching
# (provider ids, then its provider_match rules) misses or gets wrong -> genai-prices provider ids.
PROVIDER_IDS = {
    "azure.ai.openai": "azure",  # genai-prices would take "openai" from the name
    "az.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "az.ai.inference": "azure",
    "azure_openai": "azure",
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


def provider_key(name: str | None, providers: Sequence[Provider]) -> str | None:
    """The provider a spelling stands for: a genai-prices provider id, else the name lower-cased.

    The one normalisation for span providers and price-file providers alike.
    """
    if name is None:
        return None
    spelled = name.strip().lower()
    if not spelled:
        return None
    if spelled in PROVIDER_IDS:
        return PROVIDER_IDS[spelled]
    found = find_provider_by_id(list(providers), spelled)
    return found.id if found is not None else spelled


def api_url(address: str) -> str | None:
    """The URL genai-prices' ``api_pattern`` expects (``https://host/path``) for a host or URL."""
    text = address.strip()
    try:
        parts = urlsplit(text if "://" in text else f"https://{text}")
        host = parts.hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return None
    return f"https://{host}{parts.path}" if host else None


class Prices(NamedTuple):
    """What ``Pricer.price`` answers, one item per record."""

    costs: list[int | None]  # nano-dollars; None when unknown
    sources: list[str]  # reported, computed, custom, unpriced, no_usage
    providers: list[str | None]  # the provider whose price list billed it (computed, custom)
    # computed and custom: the cost per bucket (``price_tables.SPLIT_BUCKETS``), summing to it
    splits: list[Split | None]


class _Resolved(NamedTuple):
    source: str  # computed, custom or unpriced
    provider: str | None
    # nano-dollars per bucket (``Split``) of (inp, cr, cw, out, rs)
    split: Callable[[int, int, int, int, int], Split] | None


_UNPRICED = _Resolved("unpriced", None, None)


def _priced(source: str, provider: str | None, table: PriceTable) -> _Resolved:
    # A linear price (most) skips the table's piece lookup on the hot path.
    return _Resolved(source, provider, table.pieces[0].split_nanos if not table.starts else table.split_nanos)


class Pricer:
    """Prices request records. Thread-safe; caches resolved prices.

    ``custom``: the operator's price file entries; ``snapshot``: genai-prices' data (by default
    the bundled one).
    """

    def __init__(self, custom: Sequence[CustomPrice] = (), snapshot: DataSnapshot | None = None) -> None:
        self._snapshot = snapshot or get_snapshot()
        self._providers = list(self._snapshot.providers)
        # Which provider's list holds each model (genai-prices falls back to other providers' lists).
        self._owner = {id(m): p.id for p in self._providers for m in p.models}
        self._custom = self._index(custom)
        self._finder = self._new_finder()
        self._keys: dict[str | None, str | None] = {}
        self._urls: dict[str, Provider | None] = {}
        self._tables: dict[int, tuple[ModelPrice, PriceTable | None]] = {}
        self._resolved: dict[tuple[Any, ...], _Resolved] = {}
        self._lock = threading.Lock()

    def _new_finder(self) -> DataSnapshot:
        # genai-prices' DataSnapshot caches every model name and URL it is asked about, for
        # good: lookups go through one of our own, replaced whenever our caches start again.
        return DataSnapshot(providers=self._providers, from_auto_update=False)

    def _index(self, custom: Sequence[CustomPrice]) -> dict[tuple[str | None, str], CustomPrice]:
        """Price-file entries by (normalised provider, model); warns of entries that never apply."""
        index: dict[tuple[str | None, str], CustomPrice] = {}
        for entry in custom:
            key = (provider_key(entry.provider, self._providers), entry.model)
            shadowed = index.get(key)
            if shadowed is not None:
                log.warning(
                    "%s never applies: %s prices the same model for the same provider %s",
                    shadowed.where,
                    entry.where,
                    f"({key[0]})" if key[0] else "(any)",
                )
            index[key] = entry
        return index

    # ---- resolving a price (once per key) ----------------------------------------------------

    def _resolve(self, key: tuple[str | None, str | None, str | None, str | None, int]) -> _Resolved:
        """The price of (provider, address, response model, request model, minute), cached."""
        with self._lock:
            if len(self._resolved) > _MAX_CACHED:
                self._resolved.clear()
                self._keys.clear()
                self._urls.clear()
                self._finder = self._new_finder()
            result = self._resolve_locked(*key)
            self._resolved[key] = result
        return result

    def _resolve_locked(
        self,
        provider: str | None,
        address: str | None,
        response: str | None,
        request: str | None,
        minute: int,
    ) -> _Resolved:
        lowered = tuple(dict.fromkeys(m.lower() for m in (response, request) if m))
        if not lowered:
            return _UNPRICED
        by_url = self._by_url(address) if address else None
        span_key = self._key(provider)
        keys = [k for k in dict.fromkeys((by_url.id if by_url else None, span_key)) if k is not None]
        for k in (*keys, None):
            for model in lowered:
                entry = self._custom.get((k, model))
                if entry is not None:
                    return _priced("custom", k, entry.table)
        found = self._find_model(by_url, span_key, lowered)
        if found is None:
            return _UNPRICED
        model_price = found.get_prices(datetime.fromtimestamp(minute * 60, UTC))
        table = self._table(model_price, found)
        if table is None:
            return _UNPRICED
        return _priced("computed", self._owner.get(id(found)), table)

    def _key(self, provider: str | None) -> str | None:
        if provider not in self._keys:
            self._keys[provider] = provider_key(provider, self._providers)
        return self._keys[provider]

    def _by_url(self, address: str) -> Provider | None:
        if address not in self._urls:
            url = api_url(address)
            found = None
            if url is not None:
                try:
                    found = self._finder.find_provider(None, None, url)
                except LookupError:
                    found = None
            self._urls[address] = found
        return self._urls[address]

    def _find_model(
        self, by_url: Provider | None, span_key: str | None, models: tuple[str, ...]
    ) -> ModelInfo | None:
        """genai-prices' model: the API address's provider, the span's, then the model name alone."""
        finder = self._finder
        attempts: list[tuple[Provider | None, str | None]] = []
        if by_url is not None:
            attempts.append((by_url, None))
        if span_key is not None and (by_url is None or span_key != by_url.id):
            attempts.append((None, span_key))
        attempts.append((None, None))
        for provider, provider_id in attempts:
            for model in models:
                try:
                    return finder.find_provider_model(model, provider, provider_id, None)[1]
                except (LookupError, ValueError):  # not there, or a name genai-prices refuses
                    continue
        return None

    def _table(self, model_price: ModelPrice, model: ModelInfo) -> PriceTable | None:
        cached = self._tables.get(id(model_price))
        if cached is not None and cached[0] is model_price:
            return cached[1]
        try:
            table: PriceTable | None = price_table(model_price)
        except (ValueError, ArithmeticError) as exc:
            log.warning("genai-prices cannot price model %s (%s): it stays unpriced", model.id, exc)
            table = None
        self._tables[id(model_price)] = (model_price, table)  # holding it keeps its id unique
        return table

    # ---- pricing records ---------------------------------------------------------------------

    def price(self, records: Sequence[RequestRecord]) -> Prices:
        """The cost in nano-dollars (or None), cost_source, price provider and cost per bucket
        (None unless a price computed it) of each record."""
        out = Prices([], [], [], [])
        costs, sources, providers, splits = out
        resolved = self._resolved
        for r in records:
            if r.cost_usd is not None:
                costs.append(nanos_from_usd(r.cost_usd))
                sources.append("reported")
                providers.append(None)
                splits.append(None)
                continue
            inp, out_tokens = r.input_tokens, r.output_tokens
            if inp is None and out_tokens is None:
                costs.append(None)
                sources.append("no_usage")
                providers.append(None)
                splits.append(None)
                continue
            key = (
                r.provider,
                r.server_address,
                r.response_model,
                r.request_model,
                r.start_time_unix_nano // 60_000_000_000,  # prices change by date or time of day
            )
            price = resolved.get(key) or self._resolve(key)
            split = price.split
            if split is None:
                costs.append(None)
                sources.append(price.source)
                providers.append(None)
                splits.append(None)
                continue
            inp = inp or 0
            out_tokens = out_tokens or 0
            # OTel counts include cache and reasoning; clamp what a library over-reports.
            cr = min(r.cache_read_tokens or 0, inp)
            cw = min(r.cache_write_tokens or 0, inp - cr)
            rs = min(r.reasoning_tokens or 0, out_tokens)
            parts = split(inp, cr, cw, out_tokens, rs)
            costs.append(sum(parts))
            sources.append(price.source)
            providers.append(price.provider)
            splits.append(parts)
        return out
