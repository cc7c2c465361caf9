"""How setting values arrive: text from flags and the environment, and the TOML config file with
its ``[tables]``, converted to each setting's type, and checks of values that need a library
(time zone names). ``settings.py`` declares the settings and decides which origin wins.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from user_metrics.errors import SettingsError

_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def convert(name: str, kind: type, value: Any, origin: str, split_text: bool = True) -> Any:
    """``value`` as a ``kind`` (list, bool, float, int or str); ``origin`` says where it came from.

    A list may be given as comma-separated text (flags, the environment, the config file's top
    level) unless ``split_text`` is false: then it must be a real list (the config file's tables).
    """
    if kind is list:
        if isinstance(value, str) and split_text:
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise SettingsError(f"{name} ({origin}) must be a list of strings, got {_shown(value)}")
        return tuple(value)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOLEANS:
            return _BOOLEANS[value.strip().lower()]
        raise SettingsError(f"{name} ({origin}) must be true or false, got {value!r}")
    if kind is float:
        if isinstance(value, bool):
            raise SettingsError(f"{name} ({origin}) must be a number")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise SettingsError(f"{name} ({origin}) must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise SettingsError(f"{name} ({origin}) must be a finite number, got {value!r}")
        return number
    if kind is int:
        if isinstance(value, bool):
            raise SettingsError(f"{name} ({origin}) must be a whole number")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise SettingsError(f"{name} ({origin}) must be a whole number, got {value!r}") from None
    if not isinstance(value, str):
        raise SettingsError(f"{name} ({origin}) must be a string, got {value!r}")
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def read_config_file(
    path: str | Path, tables: Mapping[str, str], top_level_too: Collection[str] = ()
) -> dict[str, tuple[Any, str]]:
    """The TOML config file as setting name -> (value, the table it was written in, '' for none).

    ``tables`` maps every setting to the table it belongs in ('' for the top level);
    ``top_level_too`` names settings of a table that may still be written at the top level, where
    they used to be. Unknown keys, a setting in the wrong place and one given twice are errors.
    """
    try:
        # Decimal: a TOML number such as a plan price keeps its exact text (float settings take it too).
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"), parse_float=Decimal)
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path} is not valid TOML: {exc}") from exc
    names = {table for table in tables.values() if table}
    top = {n for n, table in tables.items() if not table or n in top_level_too}
    unknown = sorted(set(data) - names - set(tables))
    if unknown:
        raise SettingsError(
            f"config file {path}: unknown settings {unknown}; known: {sorted(top)}, and the tables "
            f"{sorted(names)}"
        )
    found: dict[str, tuple[Any, str]] = {}
    for key, value in data.items():
        if key in names:
            if not isinstance(value, dict):
                raise SettingsError(f"config file {path}: [{key}] must be a table, got {_shown(value)}")
            known = sorted(n for n, table in tables.items() if table == key)
            unknown = sorted(set(value) - set(known))
            if unknown:
                raise SettingsError(
                    f"config file {path}: unknown settings in [{key}]: {unknown}; known: {known}"
                )
            entries = [(name, (item, key)) for name, item in value.items()]
        elif key in top:
            entries = [(key, (value, ""))]
        else:
            raise SettingsError(f"config file {path}: {key} belongs in the [{tables[key]}] table")
        for name, entry in entries:
            if name in found:
                raise SettingsError(
                    f"config file {path}: {name} is given twice, at the top level and in [{tables[name]}]"
                )
            found[name] = entry
    return found


# Plan prices: bounds of one price, and the units it may be given per.
PRICE_UNITS = ("month", "year")
MAX_PRICE = Decimal("1000000")  # USD per month or year, excluded
_PRICE = re.compile(r"([0-9]+(?:\.[0-9]{1,9})?)(?:/(month|year))?")


@dataclass(frozen=True)
class PlanPrice:
    """The recurring price of one value of the plan property: ``amount`` USD per ``per``."""

    value: str
    amount: Decimal
    per: str


def price_entries(name: str, value: Any, origin: str) -> Any:
    """The ``[billing.plan_prices]`` table of the config file as ``VALUE=PRICE`` entries; other
    forms (a list of entries, text from a flag or the environment) pass unchanged."""
    if not isinstance(value, dict):
        return value
    entries = []
    for key, price in value.items():
        if isinstance(price, bool) or not isinstance(price, str | int | Decimal):
            raise SettingsError(
                f"{name} ({origin}): the price of {key!r} must be text or a number, got {price!r}"
            )
        entries.append(f"{key}={price}")
    return entries


def plan_prices(entries: Collection[str]) -> tuple[PlanPrice, ...]:
    """``VALUE=AMOUNT/month`` or ``VALUE=AMOUNT/year`` entries (a bare amount is per month) as
    plan prices; an amount is an exact decimal of at most 9 decimals, from 0 to below 1,000,000."""
    prices: dict[str, PlanPrice] = {}
    for entry in entries:
        value, sep, price = entry.partition("=")
        value, price = value.strip(), price.strip().replace(" ", "")
        match = _PRICE.fullmatch(price)
        if not sep or not value:
            raise SettingsError(
                f"plan_prices: each entry is VALUE=AMOUNT/month or VALUE=AMOUNT/year, got {entry!r}"
            )
        if match is None:
            raise SettingsError(
                f"plan_prices: the price of {value!r} must be a non-negative decimal of at most 9 "
                f"decimals per month or year, e.g. 20/month or 240.00/year, got {price!r}"
            )
        try:
            amount = Decimal(match.group(1))
        except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
            raise SettingsError(f"plan_prices: {price!r} is not a decimal") from None
        if amount >= MAX_PRICE:
            raise SettingsError(
                f"plan_prices: the price of {value!r} must be below {MAX_PRICE}, got {amount}"
            )
        if value in prices:
            raise SettingsError(f"plan_prices: {value!r} is given twice")
        prices[value] = PlanPrice(value, amount, match.group(2) or "month")
    return tuple(prices.values())


def check_zone(name: str, setting: str) -> None:
    """``name`` must be an IANA time zone (as the query layer's ``calendar.zone`` reads it)."""
    try:
        if not name.strip() or len(name) > 64:
            raise ValueError(name)
        ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise SettingsError(
            f"{setting} must be an IANA time zone name such as UTC, Europe/Paris or Asia/Kolkata, "
            f"got {name!r}"
        ) from None
