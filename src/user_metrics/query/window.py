"""Query arguments shared by every reader: the time window and the filters, parsed and checked once."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from user_metrics.errors import InvalidInput

# What a window's ends may be given as (``parse_instant``).
Instant = str | datetime | date | None
DEFAULT_SINCE = timedelta(days=30)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_instant(value: str | datetime | date | None, now: datetime, name: str) -> datetime | None:
    """A duration back from now (``90m``, ``24h``, ``30d``) or an ISO-8601 instant, as UTC.

    Instants without an offset are read as UTC; a bare date is its UTC midnight.
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    text = str(value).strip()
    if match := _DURATION.match(text):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
        try:
            return now - timedelta(seconds=seconds)
        except OverflowError:
            raise InvalidInput(f"{name}: {text!r} reaches before year 1") from None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"{name}: {text!r} is neither a duration like 30d, 24h or 90m nor an ISO-8601 instant "
            "like 2026-11-01T00:00:00Z"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@dataclass(frozen=True)
class Window:
    """The half-open interval [since, until) in UTC, in microseconds too."""

    since: datetime
    until: datetime

    @classmethod
    def parse(
        cls, since: str | datetime | date | None, until: str | datetime | date | None, now: datetime
    ) -> Window:
        end = parse_instant(until, now, "until") or now
        start = parse_instant(since, now, "since") or end - DEFAULT_SINCE
        if start >= end:
            raise InvalidInput(f"since ({start.isoformat()}) must be before until ({end.isoformat()})")
        return cls(start, end)

    @property
    def since_us(self) -> int:
        return _micros(self.since)

    @property
    def until_us(self) -> int:
        return _micros(self.until)


def _micros(value: datetime) -> int:
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)


@dataclass(frozen=True)
class Filters:
    """Which requests count: every given condition must hold."""

    properties: tuple[tuple[str, str], ...] = ()
    model: str | None = None
    service: str | None = None
    environment: str | None = None

    @classmethod
    def of(
        cls,
        properties: Mapping[str, str] | Iterable[str] | Iterable[tuple[str, str]] | None = None,
        model: str | None = None,
        service: str | None = None,
        environment: str | None = None,
    ) -> Filters:
        """Accepts properties as a mapping, ``("plan", "pro")`` pairs or ``"plan=pro"`` strings."""
        pairs: list[tuple[str, str]] = []
        items = properties.items() if isinstance(properties, Mapping) else (properties or ())
        for item in items:
            if isinstance(item, str):
                key, sep, value = item.partition("=")
                if not sep or not key.strip():
                    raise InvalidInput(f"property: {item!r} must be KEY=VALUE, e.g. plan=premium")
                item = (key, value)
            key, value = item
            # Property names are stored lower-cased (the mapper does it), so a filter is too.
            pairs.append((str(key).strip().lower(), str(value)))
        return cls(tuple(pairs), model or None, service or None, environment or None)

    def predicate(self, params: dict[str, object]) -> str:
        """A SQL condition over the columns ``requests`` and ``dims`` share.

        A model matches the request model or the response model, ignoring case: ``gpt-4o`` finds
        the requests that asked for it and those that a model of that name answered.
        """
        conditions = ["TRUE"]
        if self.model is not None:
            params["f_model"] = self.model
            conditions.append(
                "(lower(request_model) = lower($f_model) OR lower(response_model) = lower($f_model))"
            )
        for column, value in (("service_name", self.service), ("environment", self.environment)):
            if value is not None:
                params[f"f_{column}"] = value
                conditions.append(f"{column} = $f_{column}")
        for i, (key, value) in enumerate(self.properties):
            params[f"f_pk{i}"] = key
            params[f"f_pv{i}"] = value
            conditions.append(f"properties[$f_pk{i}] = $f_pv{i}")
        return " AND ".join(conditions)

    @property
    def active(self) -> bool:
        return bool(self.properties or self.model or self.service or self.environment)
