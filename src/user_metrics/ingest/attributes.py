"""Reading span attributes: the conventions compiled for lookups, one pass over an attribute list,
and the conversion of the values that win.

``compile_conventions`` indexes ``conventions.FIELDS`` by attribute key once at start-up.
``scan_attributes`` keeps the attributes of one span (or resource) that the index knows; ``Scan``
converts a field's sources on demand, best first. A value that is there but cannot be read (a
negative token count, a cost that is not a number) raises ``MappingError``.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from user_metrics.ingest import conventions as c
from user_metrics.ingest import operator_keys

# Sanity bounds of one request, far above any real one. They keep every sum the store and its
# rollups make (BIGINT tokens, DECIMAL(18,9) cost, the cost computed from tokens) from overflowing.
MAX_COST_USD = Decimal(1_000_000)
MAX_TOKENS = 10**10


class MappingError(ValueError):
    """A span is an LLM call but one of its attributes cannot be read."""


@dataclass(frozen=True)
class _Target:
    field: str
    rank: int
    json_key: str | None
    json_default: Any


@dataclass(frozen=True)
class Conventions:
    """The conventions table compiled for lookups, plus the operator's choices."""

    by_key: dict[str, tuple[_Target, ...]]
    property_prefixes: tuple[str, ...]
    bare_property_keys: dict[str, tuple[str, int]]  # key -> (property name, rank)
    property_json_keys: frozenset[str]
    max_value_length: int
    max_properties: int
    max_span_attributes: int


def compile_conventions(
    bare_property_keys: Iterable[object] = (),
    max_value_length: int = 4096,
    max_properties: int = 64,
    max_span_attributes: int = 1024,
    *,
    user_id_keys: Iterable[object] = (),
    session_id_keys: Iterable[object] = (),
    property_prefixes: Iterable[object] = (),
) -> Conventions:
    """Index ``conventions.FIELDS``, with the operator's own keys (``operator_keys.py``: the
    ``[conventions]`` settings), by attribute key. Done once at start-up; a list that cannot be
    used raises ``SettingsError``."""
    fields, meanings = operator_keys.merged_fields(user_id_keys, session_id_keys)
    prefixes = operator_keys.merged_prefixes(property_prefixes)
    bare = operator_keys.bare_keys(bare_property_keys, meanings, prefixes)
    by_key: dict[str, list[_Target]] = {}
    for field_name, sources in fields.items():
        for rank, source in enumerate(sources):
            by_key.setdefault(source.key, []).append(
                _Target(field_name, rank, source.json_key, source.json_default)
            )
    return Conventions(
        by_key={k: tuple(v) for k, v in by_key.items()},
        property_prefixes=prefixes,
        bare_property_keys=bare,
        property_json_keys=frozenset(c.PROPERTY_JSON_KEYS),
        max_value_length=max_value_length,
        max_properties=max_properties,
        max_span_attributes=max_span_attributes,
    )


# The longest Python literal read (a usage object is a few hundred characters).
MAX_LITERAL_CHARS = 8192


def _python_literal(text: str) -> Any:
    """The value of a Python literal (``conventions.PYTHON_LITERAL_KEYS``), else None. Only
    literals are evaluated (``ast.literal_eval``: no names, no calls), and only short ones."""
    if len(text) > MAX_LITERAL_CHARS:
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


# ---- reading AnyValue -------------------------------------------------------------------------


def any_value(value: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as a plain Python value (None when unset)."""
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "int_value":
        return value.int_value
    if which is None:
        return None
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which)


def as_text(value: Any) -> str | None:
    if isinstance(value, list):  # http.request.header.* are string arrays
        value = value[0] if value else None
    if value is None or isinstance(value, (dict, bytes)):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    text = value if isinstance(value, str) else str(value)
    if text.startswith(c.REDACTED_VALUE_PREFIXES):
        return None  # a value the library withheld (Logfire's scrubbing) is no value
    return text or None


def _as_count(value: Any, key: str) -> int:
    if isinstance(value, bool):
        raise MappingError(f"{key} is not a token count: {value!r}")
    if isinstance(value, int):
        count = value
    elif isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise MappingError(f"{key} is not a whole token count: {value!r}")
        count = int(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise MappingError(f"{key} is not a number: {value[:64]!r}") from None
        if not math.isfinite(number) or number != int(number):
            raise MappingError(f"{key} is not a whole token count: {value[:64]!r}")
        count = int(number)
    else:
        raise MappingError(f"{key} is not a token count: {str(value)[:64]}")
    if count < 0:
        raise MappingError(f"{key} is negative: {count}")
    if count > MAX_TOKENS:
        raise MappingError(f"{key} is too large for one request: {count}")
    return count


def as_cost(value: Any, key: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise MappingError(f"{key} is not a cost: {str(value)[:64]}")
    try:
        cost = Decimal(str(value).strip())
    except InvalidOperation:
        raise MappingError(f"{key} is not a number: {str(value)[:64]!r}") from None
    if not cost.is_finite() or cost < 0 or cost > MAX_COST_USD:
        raise MappingError(f"{key} is not a cost in USD: {str(value)[:64]}")
    return cost


def as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


_SURROGATE = re.compile("[\ud800-\udfff]")  # json.loads joins valid pairs: what is left is lone


def _without_surrogates(value: Any) -> Any:
    """A decoded JSON value with lone surrogates (from ``\\ud800`` escapes) replaced by U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_without_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_without_surrogates(k): _without_surrogates(v) for k, v in value.items()}
    return value


# ---- scanning one attribute list ---------------------------------------------------------------


class Scan:
    """The convention hits of one attribute list; values converted on demand."""

    __slots__ = ("hits", "prefixed", "bare", "json_cache", "dropped", "unread")

    def __init__(self) -> None:
        self.hits: dict[str, list[tuple[_Target, str, AnyValue]]] = {}
        self.prefixed: list[tuple[str, AnyValue]] = []
        self.bare: list[tuple[str, AnyValue]] = []
        self.json_cache: dict[str, Any] = {}
        self.dropped = 0  # attributes beyond the limit, not read
        self.unread: list[str] = []  # keys no convention reads, for the coverage report

    def has(self, field_name: str) -> bool:
        return field_name in self.hits

    def raw(self, field_name: str) -> Iterable[tuple[str, Any]]:
        """(source key, Python value) of each present source of a field, best first."""
        candidates = self.hits.get(field_name)
        if not candidates:
            return
        if len(candidates) > 1:
            candidates.sort(key=lambda hit: hit[0].rank)
        for target, key, value in candidates:
            json_key = target.json_key
            if json_key is None:
                yield key, any_value(value)
                continue
            decoded = self._json(key, value)
            if isinstance(decoded, dict):
                found = _json_get(decoded, json_key)
                if found is not _MISSING:
                    yield f"{key}[{json_key}]", found
                elif target.json_default is not None:
                    yield f"{key}[{json_key}]", target.json_default

    def _json(self, key: str, value: AnyValue) -> Any:
        if key not in self.json_cache:
            decoded: Any = None
            if value.WhichOneof("value") == "string_value":
                text = value.string_value
                try:
                    decoded = json.loads(text)
                except (ValueError, RecursionError):  # not JSON, or nested too deep to be ours
                    decoded = _python_literal(text) if key in c.PYTHON_LITERAL_KEYS else None
                if "\\u" in text:  # JSON escapes can spell lone surrogates, which cannot be stored
                    decoded = _without_surrogates(decoded)
            elif value.WhichOneof("value") == "kvlist_value":
                decoded = any_value(value)
            self.json_cache[key] = decoded
        return self.json_cache[key]

    def _single(self, field_name: str) -> tuple[bool, Any]:
        """(True, value) when the field has one plain source: the common case, without a generator."""
        candidates = self.hits.get(field_name)
        if candidates is None:
            return True, None
        if len(candidates) == 1:
            target, _key, value = candidates[0]
            if target.json_key is None:
                return True, any_value(value)
        return False, None

    def first(self, field_name: str, convert: Callable[[Any], Any]) -> Any:
        """The first source of a field that ``convert`` turns into something other than None."""
        simple, value = self._single(field_name)
        if simple:
            return convert(value)
        for _key, value in self.raw(field_name):
            converted = convert(value)
            if converted is not None:
                return converted
        return None

    def text(self, field_name: str) -> str | None:
        if field_name not in self.hits:  # most fields of most spans: no call deeper
            return None
        return self.first(field_name, as_text)  # type: ignore[no-any-return]

    def count(self, field_name: str) -> int | None:
        simple, value = self._single(field_name)
        if simple and (value is None or (type(value) is int and 0 <= value <= MAX_TOKENS)):
            return value  # the common case; anything else gets _as_count's checks and messages
        for key, value in self.raw(field_name):
            if value is None or value == "":
                continue
            return _as_count(value, key)
        return None

    def properties(self, conv: Conventions) -> dict[str, str]:
        """Custom properties of this attribute list (names lower-cased, earliest source wins)."""
        found: dict[str, tuple[int, str]] = {}
        prefixes = conv.property_prefixes
        for key, value in self.prefixed:
            for rank, prefix in enumerate(prefixes):
                if key.startswith(prefix):
                    name = key[len(prefix) :].lower()
                    library = c.LIBRARY_PROPERTY_NAMES.get(prefix, ())
                    if name and name not in c.PROPERTY_EXCLUDED and name not in library:
                        item = any_value(value)
                        if prefix in c.JSON_VALUED_PROPERTY_PREFIXES:
                            item = _json_string(item)
                        _offer(found, name, rank, item)
                    break
        json_rank = len(prefixes)
        for key, value in self.bare:
            if key in conv.property_json_keys:
                decoded = self._json(key, value)
                if isinstance(decoded, dict):
                    library = c.LIBRARY_PROPERTY_NAMES.get(key, ())
                    for name, item in decoded.items():
                        if not isinstance(item, (dict, list)) and name not in library:
                            _offer(found, str(name).lower(), json_rank, item)
            else:
                name, rank = conv.bare_property_keys[key]
                _offer(found, name, rank, any_value(value))
        return {name: text for name, (_rank, text) in found.items()}


_MISSING = object()


def _json_get(decoded: dict[str, Any], json_key: str) -> Any:
    """``decoded[json_key]``, or the value at its dotted path in nested objects, else _MISSING."""
    if json_key in decoded:
        return decoded[json_key]
    if "." not in json_key:
        return _MISSING
    item: Any = decoded
    for part in json_key.split("."):
        if not isinstance(item, dict) or part not in item:
            return _MISSING
        item = item[part]
    return item


def _json_string(value: Any) -> Any:
    """A JSON-encoded string value (``"free"`` with its quotes) decoded; anything else as it is."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        if isinstance(decoded, str):
            return _without_surrogates(decoded) if "\\u" in value else decoded
    return value


def _offer(found: dict[str, tuple[int, str]], name: str, rank: int, value: Any) -> None:
    if isinstance(value, list) and len(value) == 1 and not isinstance(value[0], (list, dict)):
        value = value[0]  # http.request.header.* values are one-element string arrays
    if isinstance(value, list):
        text: str | None = json.dumps(value, ensure_ascii=False, default=str)
    else:
        text = as_text(value)
    if text is None:
        return
    current = found.get(name)
    if current is None or rank < current[0]:
        found[name] = (rank, text)


def scan_attributes(attributes: Sequence[Any], conv: Conventions) -> Scan:
    """One pass over an attribute list: keep the keys the conventions know.

    Only the first ``conv.max_span_attributes`` attributes are read (``Scan.dropped`` says how
    many more there were), so one span cannot make a request arbitrarily slow to map.
    """
    scan = Scan()
    if len(attributes) > conv.max_span_attributes:
        scan.dropped = len(attributes) - conv.max_span_attributes
        attributes = attributes[: conv.max_span_attributes]
    hits = scan.hits
    get = conv.by_key.get
    prefixes = conv.property_prefixes
    bare = conv.bare_property_keys
    json_keys = conv.property_json_keys
    unread = scan.unread
    for kv in attributes:
        key = kv.key
        targets = get(key)
        if targets is not None:
            value = kv.value
            for target in targets:
                bucket = hits.get(target.field)
                if bucket is None:
                    hits[target.field] = [(target, key, value)]
                else:
                    bucket.append((target, key, value))
            if key in json_keys:
                scan.bare.append((key, value))
        elif key.startswith(prefixes):
            scan.prefixed.append((key, kv.value))
        elif key in bare or key in json_keys:
            scan.bare.append((key, kv.value))
        else:
            unread.append(key)
    return scan
