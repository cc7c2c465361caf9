"""How setting values arrive: text from flags and the environment, and the TOML config file with
its ``[tables]``, converted to each setting's type. ``settings.py`` declares the settings and
decides which origin wins.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

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
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
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
