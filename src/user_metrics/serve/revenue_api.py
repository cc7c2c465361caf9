"""``/api/v1/revenue``: POST imports revenue records (CSV or JSON body), GET lists the stored ones.

POST takes ``format`` (csv or json; default: from the Content-Type), ``map`` (repeatable,
``FIELD=COLUMN``), ``tz`` and ``source`` (kept with the new records; default ``http``) as query
parameters, and answers ``{"imported": n, "unchanged": m}``
or 400 naming every bad row. The import itself is the server's (``Importer``: parse, then one
transaction of the store's writer); this module only reads the request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import duckdb

from user_metrics.errors import InvalidInput, NotFound, UnsupportedMediaType
from user_metrics.query.revenue_records import DEFAULT_RECORDS, RevenueImport, revenue_records

# (body, format or None, mapping ours -> theirs, tz or None, source) -> (new, unchanged)
Importer = Callable[[bytes, str | None, Mapping[str, str], str | None, str], tuple[int, int]]
_TYPES = {"text/csv": "csv", "application/csv": "csv", "application/json": "json"}
MAX_SOURCE = 256  # characters of the source kept with the records (a file name)
_LIST = ("user", "since", "until", "limit", "offset")


def mapping_of(entries: list[str]) -> dict[str, str]:
    """``FIELD=COLUMN`` entries as field -> column (InvalidInput naming ``map``)."""
    out: dict[str, str] = {}
    for entry in entries:
        ours, sep, theirs = entry.partition("=")
        if not sep or not ours.strip():
            raise InvalidInput(f"map: must be FIELD=COLUMN, e.g. user_id=Customer, got {entry!r}")
        if ours.strip() in out:
            raise InvalidInput(f"map: {ours.strip()!r} is mapped twice")
        out[ours.strip()] = theirs
    return out


def import_request(
    importer: Importer | None, pairs: list[tuple[str, str]], body: bytes, content_type: str
) -> RevenueImport:
    if importer is None:
        raise NotFound("this server does not import revenue")
    maps: list[str] = []
    params: dict[str, str] = {}
    for name, value in pairs:
        if name == "map":
            maps.append(value)
        elif name not in ("format", "tz", "source"):
            raise InvalidInput(f"{name}: unknown parameter; this endpoint takes format, map, tz, source")
        elif name in params:
            raise InvalidInput(f"{name}: given more than once")
        else:
            params[name] = value
    fmt = params.get("format") or _TYPES.get(content_type.split(";")[0].strip().lower())
    if fmt is None:
        raise UnsupportedMediaType(
            f"a revenue import is text/csv or application/json (or give ?format=csv|json), got "
            f"{content_type or 'no Content-Type'!r}"
        )
    source = params.get("source") or "http"
    if len(source) > MAX_SOURCE:
        raise InvalidInput(f"source: at most {MAX_SOURCE} characters")
    new, unchanged = importer(body, fmt, mapping_of(maps), params.get("tz") or None, source)
    return RevenueImport(new, unchanged)


def list_request(pairs: list[tuple[str, str]]) -> Callable[[duckdb.DuckDBPyConnection], Any]:
    params: dict[str, Any] = {}
    for name, value in pairs:
        if name not in _LIST:
            raise InvalidInput(f"{name}: unknown parameter; this endpoint takes {', '.join(_LIST)}")
        if name in params:
            raise InvalidInput(f"{name}: given more than once")
        params[name] = value
    for name, default in (("limit", DEFAULT_RECORDS), ("offset", 0)):
        text = params.get(name)
        if text is not None and not (text.isascii() and text.isdigit()):
            raise InvalidInput(f"{name}: must be a whole number, got {text!r}")
        params[name] = int(text) if text is not None else default
    return lambda con: revenue_records(con, **params)
