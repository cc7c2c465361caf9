"""Query arguments shared by every reader: the time window and the filters, parsed and checked once."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from user_metrics.errors import InvalidInput
from user_metrics.query import calendar

# What a window's ends may be given as (``parse_instant``).
Instant = str | datetime | date | None
DEFAULT_SINCE = timedelta(days=30)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_instant(
    value: str | datetime | date | None, now: datetime, name: str, tz: str | None = None
) -> datetime | None:
    """A duration back from now (``90m``, ``24h``, ``30d``) or an ISO-8601 instant, as UTC.

    Instants without an offset are read in the zone ``tz`` (None: UTC); a bare date is the first
    instant of that local day. A wall time that daylight saving repeats is its first occurrence;
    one it skips is read with the offset before the change (``zoneinfo``'s fold=0).
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return _aware(value, tz).astimezone(UTC)
    if isinstance(value, date):
        return _day_start(value, tz)
    text = str(value).strip()
    if match := _DURATION.match(text):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
        try:
            return now - timedelta(seconds=seconds)
        except OverflowError:
            raise InvalidInput(f"{name}: {text!r} reaches before year 1") from None
    if calendar.is_period(text):
        raise InvalidInput(
            f"{name}: {text!r} names a calendar period; give it as since, without until "
            "(e.g. since=this_month)"
        )
    try:
        if _BARE_DATE.match(text):
            return _day_start(date.fromisoformat(text), tz)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"{name}: {text!r} is neither a duration like 30d, 24h or 90m, a calendar period "
            f"({', '.join(calendar.PERIODS)} or a month like 2026-11) nor an ISO-8601 instant "
            "like 2026-11-01T00:00:00Z"
        ) from None
    return _aware(parsed, tz).astimezone(UTC)


_BARE_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _aware(value: datetime, tz: str | None) -> datetime:
    return value.replace(tzinfo=calendar.zone(tz)) if value.tzinfo is None else value


def _day_start(value: date, tz: str | None) -> datetime:
    return from_micros(calendar.day_start_us(value, calendar.zone(tz)))


@dataclass(frozen=True)
class Window:
    """The half-open interval [since, until) in UTC, in microseconds too, and the zone ``tz`` (an
    IANA name) its calendar days, weeks and months are counted in."""

    since: datetime
    until: datetime
    tz: str = "UTC"

    @classmethod
    def parse(
        cls,
        since: str | datetime | date | None,
        until: str | datetime | date | None,
        now: datetime,
        tz: str | None = None,
    ) -> Window:
        """``since`` may name a calendar period (``calendar.period``: today, yesterday, this_week,
        last_week, this_month, last_month, or a month ``2026-11``) in ``tz``; then ``until`` is
        omitted. Naive instants and bare dates are read in ``tz`` (None: UTC)."""
        key = calendar.zone_name(tz)
        if isinstance(since, str) and calendar.is_period(since):
            if until is not None and until != "":
                raise InvalidInput(
                    f"until: leave it out when since names a calendar period ({since.strip()!r})"
                )
            span = calendar.period(since, now, key)
            assert span is not None
            start, end = span
            if start >= end:  # this_month at the very first instant of the month: nothing yet
                raise InvalidInput(f"since: {since.strip()!r} has not begun yet at {now.isoformat()}")
            return cls(start, end, key)
        end = parse_instant(until, now, "until", key) or now
        start = parse_instant(since, now, "since", key) or end - DEFAULT_SINCE
        if start >= end:
            raise InvalidInput(f"since ({start.isoformat()}) must be before until ({end.isoformat()})")
        return cls(start, end, key)

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
