"""The operator's price file: TOML ``[[model]]`` tables that add models or override known ones."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Any

from user_metrics.ingest.price_tables import Coefficients, PriceTable, linear
from user_metrics.settings import SettingsError

_MTOK = 1_000_000
# Bounds of one price. The largest keeps every cost the mapper's token bounds allow (10**10 of
# each kind) far inside DECIMAL(18,9); the finest keeps the integer arithmetic small.
MAX_PRICE_USD = Decimal(10_000)
MAX_DECIMAL_PLACES = 30

_KEYS = frozenset(
    {"name", "provider", "input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok"}
    | {"reasoning_mtok", "request"}
)


class PriceFileError(SettingsError):
    """The operator's price file cannot be used (a settings error: the command line says so and exits 2)."""


@dataclass(frozen=True)
class CustomPrice:
    """One model priced by the operator.

    ``model`` is lower-cased; ``provider`` is as written, lower-cased (None: any provider);
    ``where`` names the entry in messages.
    """

    model: str
    provider: str | None
    table: PriceTable
    where: str


def load_price_file(path: str | Path) -> list[CustomPrice]:
    """Read an operator price file (TOML, ``[[model]]`` tables, USD per million tokens)."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PriceFileError(f"price file {path}: {exc}") from exc
    entries = data.get("model", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise PriceFileError(f"price file {path}: expected [[model]] tables")
    return [_entry(entry, f"price file {path}, model #{i}") for i, entry in enumerate(entries, 1)]


def _entry(entry: dict[str, Any], where: str) -> CustomPrice:
    name = entry.get("name")
    named = isinstance(name, str) and bool(name.strip())
    if named:
        where = f"{where} ({name!r})"
    unknown = set(entry) - _KEYS
    if unknown:
        raise PriceFileError(f"{where}: unknown keys {sorted(unknown)}")
    if not isinstance(name, str) or not named:
        raise PriceFileError(f"{where}: 'name' (the model name) is required")
    provider = entry.get("provider")
    if provider is not None and (not isinstance(provider, str) or not provider.strip()):
        raise PriceFileError(f"{where}: 'provider' must be a provider name")

    def usd(key: str, default: Fraction | None = None) -> Fraction:
        value = entry.get(key)
        if value is None:
            if default is None:
                raise PriceFileError(f"{where}: '{key}' is required")
            return default
        return _usd(value, f"{where}: '{key}'")

    inp = usd("input_mtok")
    out = usd("output_mtok")
    cr = usd("cache_read_mtok", inp)
    cw = usd("cache_write_mtok", inp)
    rs = usd("reasoning_mtok", out)
    coefficients = Coefficients.exact(
        base=usd("request", Fraction(0)),
        input=inp / _MTOK,
        cache_read=(cr - inp) / _MTOK,
        cache_write=(cw - inp) / _MTOK,
        output=out / _MTOK,
        reasoning=(rs - out) / _MTOK,
    )
    return CustomPrice(
        model=name.strip().lower(),
        provider=provider.strip().lower() if provider is not None else None,
        table=linear(coefficients),
        where=where,
    )


def _usd(value: object, what: str) -> Fraction:
    """A price as written (TOML integer, float or string), exactly as its decimal text reads."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise PriceFileError(f"{what} must be a number")
    try:
        # str() of a float is its shortest decimal text: 0.3333333333333333 stays that number.
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise PriceFileError(f"{what} must be a number, got {str(value)[:64]!r}") from None
    if not number.is_finite() or number < 0:
        raise PriceFileError(f"{what} must be a non-negative number, got {str(value)[:64]!r}")
    if number > MAX_PRICE_USD:
        raise PriceFileError(f"{what} is over {MAX_PRICE_USD} USD, got {number}")
    _sign, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)  # finite
    trailing_zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    if number and -(exponent + trailing_zeros) > MAX_DECIMAL_PLACES:  # 1.50000 has one place
        raise PriceFileError(f"{what} has more than {MAX_DECIMAL_PLACES} decimal places")
    return Fraction(number)
