"""What the query functions answer, and its one JSON form (HTTP API, CLI ``--format json``, client).

Money is ``Decimal`` in Python and a decimal string in JSON (``"12.345678901"``), so no reader
ever sees a rounded cost. Instants are timezone-aware UTC datetimes in Python and ISO-8601 with
``Z`` in JSON, in every zone a query is asked in: a window's ``since`` and ``until`` are the UTC
instants its local calendar period starts and ends; ``Timeseries.tz`` names the zone its
buckets follow.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any


@dataclasses.dataclass(frozen=True)
class ModelUsage:
    """One model a user called in the window."""

    provider: str | None
    model: str | None  # the model asked for, else the one that answered
    requests: int
    cost_usd: Decimal | None
    unpriced_requests: int


@dataclasses.dataclass(frozen=True)
class UserStats:
    """The per-user fields of the design, the same names in every reader."""

    user_id: str | None  # None: the requests that named no user, never mixed into a real user
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    total_tokens: int
    cost_usd: Decimal | None  # None when no request in the window had a known price
    unpriced_requests: int
    first_active: datetime | None
    last_active: datetime | None
    active_days: int
    avg_requests_per_active_day: float | None
    avg_tokens_per_request: float | None
    avg_latency_ms: float | None
    p50_latency_ms: float | None
    p95_latency_ms: float | None
    error_rate: float | None  # errors / requests; None when the user made no request in the window
    models: tuple[ModelUsage, ...]
    # Profitability (query/revenue.py): None while no revenue source (plan prices, imported
    # records) is configured; margin = revenue - cost; ratio = margin / revenue (None at 0 revenue).
    revenue_usd: Decimal | None = None
    margin_usd: Decimal | None = None
    margin_ratio: float | None = None


USER_FIELDS = tuple(f.name for f in dataclasses.fields(UserStats))
PROFIT_FIELDS = ("revenue_usd", "margin_usd", "margin_ratio")
SORTABLE_USER_FIELDS = tuple(name for name in USER_FIELDS if name != "models")


@dataclasses.dataclass(frozen=True)
class UserPage:
    """One page of users, ``total`` counting every user in the window (the null user included)."""

    users: tuple[UserStats, ...]
    total: int
    since: datetime
    until: datetime


@dataclasses.dataclass(frozen=True)
class Point:
    """One bucket of a time series; ``start`` is the instant the bucket starts (UTC), which is
    a whole hour, midnight, Monday or first of the month on the clock of the series' ``tz``."""

    start: datetime
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost_usd: Decimal
    unpriced_requests: int


@dataclasses.dataclass(frozen=True)
class Timeseries:
    """Buckets from the one holding ``since`` to the one holding the end, empty ones included;
    ``bucket`` hour, day, week or month of the IANA zone ``tz``."""

    user_id: str | None
    bucket: str
    since: datetime
    until: datetime
    points: tuple[Point, ...]
    tz: str = "UTC"


@dataclasses.dataclass(frozen=True)
class PropertyValue:
    """The users, requests and cost of one value of a property (``value`` None: not set)."""

    value: str | None
    users: int
    requests: int
    cost_usd: Decimal
    avg_cost_per_user: Decimal
    unpriced_requests: int
    most_costly_user: str | None
    most_costly_user_cost_usd: Decimal
    least_costly_user: str | None
    least_costly_user_cost_usd: Decimal
    revenue_usd: Decimal | None = None
    margin_usd: Decimal | None = None
    margin_ratio: float | None = None


# How many values a property breakdown answers unless asked otherwise, and at most. Here, not in
# query/properties.py, so that the reading CLI knows them without importing DuckDB.
DEFAULT_VALUES = 1000
MAX_VALUES = 10_000


@dataclasses.dataclass(frozen=True)
class PropertyBreakdown:
    """The costliest values of a property in the window, at most the ``limit`` asked for."""

    key: str
    since: datetime
    until: datetime
    values: tuple[PropertyValue, ...]
    total_values: int  # every value in the window (requests without the property are one)
    truncated: bool  # True when values holds fewer than total_values


@dataclasses.dataclass(frozen=True)
class PropertyKeys:
    """Every custom property key recorded so far, in name order."""

    keys: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class RequestRecord:
    """One stored LLM request, as the ``requests`` table holds it."""

    start_time: datetime
    trace_id: str
    span_id: str
    duration_ms: float | None
    session_id: str | None
    service_name: str | None
    environment: str | None
    operation: str | None
    provider: str | None
    model: str | None  # the response model, else the requested one
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost_usd: Decimal | None  # None: no known price
    status: str
    error_type: str | None
    streaming: bool | None
    properties: dict[str, str]


@dataclasses.dataclass(frozen=True)
class RecentRequests:
    """A user's latest requests in the window, newest first."""

    user_id: str | None
    since: datetime
    until: datetime
    requests: tuple[RequestRecord, ...]


@dataclasses.dataclass(frozen=True)
class Totals:
    """The whole application in the window."""

    since: datetime
    until: datetime
    users: int  # distinct user ids; requests without one are not a user
    anonymous_requests: int
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    total_tokens: int
    cost_usd: Decimal
    unpriced_requests: int
    avg_latency_ms: float | None
    revenue_usd: Decimal | None = None
    margin_usd: Decimal | None = None
    margin_ratio: float | None = None


@dataclasses.dataclass(frozen=True)
class Anomaly:
    """One unusual figure of one user: what was seen, against what, and how far off."""

    user_id: str
    metric: str  # requests, cost_usd, tokens_per_request or error_rate
    method: str  # own_history (robust z-score) or population (over its 99.9th percentile)
    observed: float
    baseline: float  # the user's median per bucket, or the population's 99.9th percentile
    score: float  # robust z-score, or observed / baseline
    history_buckets: int  # the user's active buckets in the history


@dataclasses.dataclass(frozen=True)
class Anomalies:
    """The findings for one window, most unusual first."""

    since: datetime
    until: datetime
    history_since: datetime
    bucket_hours: int
    findings: tuple[Anomaly, ...]


@dataclasses.dataclass(frozen=True)
class ScopeCoverage:
    """The stored requests of one service and instrumentation scope in the window, and their shares."""

    service_name: str | None
    scope_name: str | None  # None: stored before schema 9, or the span's scope had no name
    scope_version: str | None
    requests: int
    with_user: int
    with_session: int
    with_cost: int  # cost known (reported or priced)
    user_share: float  # with_user / requests
    session_share: float
    cost_share: float


@dataclasses.dataclass(frozen=True)
class KeyCount:
    """An attribute key (or span name) and how often it was seen."""

    key: str
    count: int


@dataclasses.dataclass(frozen=True)
class ScopeKeys:
    """What the running service saw of one service and scope since it started (not windowed)."""

    service_name: str | None
    scope_name: str | None
    scope_version: str | None
    llm_spans: int  # LLM spans mapped to records (re-sent ones again)
    llm_like_skipped: int  # spans not counted that look like LLM calls
    skipped_span_names: tuple[KeyCount, ...]  # their names, most frequent first
    skipped_keys: tuple[KeyCount, ...]  # their attribute keys (spans having each), most frequent first
    unread_keys: tuple[KeyCount, ...]  # keys on LLM spans no convention reads, most frequent first


@dataclasses.dataclass(frozen=True)
class Coverage:
    """Per service and scope: the stored requests' shares in the window, and the live key report.

    ``live`` is False when the database file was read instead of the running service: then only
    the stored shares are known and ``spans`` is empty.
    """

    since: datetime
    until: datetime
    scopes: tuple[ScopeCoverage, ...]  # most requests first
    live: bool
    live_since: datetime | None  # when the service began counting spans (its start)
    spans: tuple[ScopeKeys, ...]  # most skipped LLM-looking spans, then unread keys, first


@dataclasses.dataclass(frozen=True)
class StatementLine:
    """One line item of a statement: a model's bucket (``statements.py`` lists the buckets)."""

    model: str | None  # the model asked for, else the one that answered
    provider: str | None
    bucket: str
    count: int  # tokens (unit "mtok"), else requests
    unit: str  # "mtok": unit_price_usd is per million tokens; "request": per request
    unit_price_usd: Decimal | None  # amount / count; None on lines that are not priced per unit
    unit_price_basis: str | None  # "exact": every request at this one rate; "average": they differ
    amount_usd: Decimal | None  # None: unpriced, no usage


@dataclasses.dataclass(frozen=True)
class UserStatement:
    """One user's month: line items whose amounts sum to cost_usd (users()' cost), revenue, margin."""

    user_id: str | None
    requests: int
    lines: tuple[StatementLine, ...]
    cost_usd: Decimal | None  # None when no request had a known cost, as in users()
    revenue_usd: Decimal | None  # None while no revenue source exists
    margin_usd: Decimal | None


@dataclasses.dataclass(frozen=True)
class StatementTotals:
    """Every user of the month, not only the page: cost_usd is totals()' cost of the window."""

    users: int  # users listed in the month (the null user and revenue-only users included)
    requests: int
    cost_usd: Decimal
    revenue_usd: Decimal | None
    margin_usd: Decimal | None


@dataclasses.dataclass(frozen=True)
class Statement:
    """A month's statement, one page of its users (sorted by user id, the null user last)."""

    month: str
    tz: str
    since: datetime
    until: datetime
    users: tuple[UserStatement, ...]
    offset: int
    limit: int
    totals: StatementTotals


@dataclasses.dataclass(frozen=True)
class SqlResult:
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    truncated: bool


def to_json(value: Any) -> Any:
    """A result as JSON-ready data: dicts, lists, strings for money and instants."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, datetime):
        return format_instant(value)
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or infinity
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)  # DuckDB's other types (UUID, intervals, dates) as their text


def decimal_text(value: Decimal) -> str:
    """Money as exact text in plain notation: ``"0.000000150"``, never ``"1.50E-7"``."""
    return format(value, "f")


def format_instant(value: datetime) -> str:
    if value.tzinfo is None:
        return value.isoformat()
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def from_json(cls: type, data: Any) -> Any:
    """The inverse of ``to_json`` for the result types above."""
    return _convert(cls, data)


def _convert(kind: Any, data: Any) -> Any:
    if data is None:
        return None
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(kind) if a is not type(None)]
        return _convert(inner, data)
    if origin is tuple:
        args = typing.get_args(kind)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v) for v in data)
        return tuple(data)
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        return kind(**{f.name: _convert(hints[f.name], data[f.name]) for f in dataclasses.fields(kind)})
    if kind is Decimal:
        return Decimal(data)
    if kind is datetime:
        return _parse_instant(data)
    if kind is float and isinstance(data, int):
        return float(data)
    return data
