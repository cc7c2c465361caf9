"""Revenue records from an operator's file: CSV or JSON rows in, validated records out.

Pure input parsing, like the OTLP receivers' decoding: no I/O, no database. A row holds a user
id, an amount in USD (an exact decimal, negative for refunds and credits) and either an instant
(``at``, a one-off payment) or a service period (``period_start``, ``period_end``: the end is
excluded and must come after the start). The caller maps these field names to the file's own
columns (``mapping``: ours -> theirs, matched without regard to case), so a payment provider's
export imports without editing.

Every bad row is reported with its row number and the reason (the first ``MAX_ERRORS``, all
counted) and then nothing is imported (``BadRows``). Row numbers: in CSV, the line of the file
where the row begins, the header being line 1; in JSON, the position of the object in the list,
from 1. A row without an id gets one derived from its content (``derived_id``), so importing the
same file again changes nothing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from user_metrics.errors import BadRows, InvalidInput, TooLarge

FIELDS = ("id", "user_id", "amount", "at", "period_start", "period_end", "currency")
FORMATS = ("csv", "json")
# Bounds of one import (README, "Importing revenue").
MAX_FILE_BYTES = 1024 * 1024  # the HTTP API's body bound: split larger exports (re-import is harmless)
MAX_ROWS = 10_000
MAX_FIELD_CHARS = 1024
MAX_ERRORS = 100  # bad rows listed; all are counted
MAX_AMOUNT = Decimal(10) ** 9  # |amount| below it: DECIMAL(18, 9)
MAX_DECIMALS = 9
# Instants from 1970-01-01 up to 3000-01-01 (UTC); a Unix timestamp is in seconds.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_AMOUNT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_UNIX = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


@dataclass(frozen=True)
class RevenueRecord:
    """One validated row: [start_us, end_us) in epoch micros (UTC); an instant has end = start."""

    row: int
    id: str
    user_id: str
    amount: Decimal
    start_us: int
    end_us: int


class _Bad(Exception):
    """The reason one row is refused."""


def zone(name: str | None) -> ZoneInfo:
    """The IANA zone ``name`` (None or empty: UTC); InvalidInput naming ``tz`` otherwise."""
    if not name:
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(
            f"tz: unknown time zone {name!r}; give an IANA name such as Europe/Paris"
        ) from None


def parse_mapping(mapping: Mapping[str, str] | None) -> dict[str, str]:
    """Our field name -> the file's column name (lower-cased); unmapped fields keep their names."""
    out = {name: name for name in FIELDS}
    for ours, theirs in (mapping or {}).items():
        if ours not in FIELDS:
            raise InvalidInput(f"map: unknown field {ours!r}; the fields are {', '.join(FIELDS)}")
        if not theirs.strip():
            raise InvalidInput(f"map: the column of {ours!r} is empty")
        out[ours] = theirs.strip().lower()
    return out


def parse_revenue(
    data: bytes | str | list[Any] | dict[str, Any],
    fmt: str | None = None,
    mapping: Mapping[str, str] | None = None,
    tz: str | None = None,
) -> list[RevenueRecord]:
    """The records of ``data`` (CSV or JSON text, or JSON already decoded); ``fmt`` None: JSON
    when the text starts with ``[`` or ``{``. Naive instants and bare dates are read in ``tz``."""
    if fmt is not None and fmt not in FORMATS:
        raise InvalidInput(f"format: must be csv or json, got {fmt!r}")
    columns = parse_mapping(mapping)
    where = zone(tz)
    if isinstance(data, bytes | str):
        size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
        if size > MAX_FILE_BYTES:
            raise TooLarge(f"the revenue file is {size} bytes, more than the limit of {MAX_FILE_BYTES}")
        try:
            text = data.decode("utf-8-sig") if isinstance(data, bytes) else data.removeprefix("\ufeff")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"the revenue file is not UTF-8 text: {exc}") from None
        if fmt is None:
            fmt = "json" if text.lstrip()[:1] in ("[", "{") else "csv"
        rows = _json_rows(_decode_json(text)) if fmt == "json" else _csv_rows(text, columns)
    else:
        if fmt == "csv":
            raise InvalidInput("format: csv needs text, not decoded JSON")
        rows = _json_rows(data)
    return _records(rows, columns, where)


def _decode_json(text: str) -> Any:
    try:
        return json.loads(text, parse_float=Decimal)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"the revenue file is not JSON: {exc}") from None


def _json_rows(data: Any) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(row number, the row's fields by lower-cased name, or why the row is no object)."""
    if isinstance(data, dict) and set(data) == {"records"}:
        data = data["records"]
    if not isinstance(data, list):
        raise InvalidInput('the revenue JSON must be a list of objects, or {"records": [...]}')
    if len(data) > MAX_ROWS:
        raise TooLarge(f"the revenue file has {len(data)} rows, more than the limit of {MAX_ROWS}")
    for number, item in enumerate(data, start=1):
        if not isinstance(item, dict):
            yield number, f"must be an object, got {type(item).__name__}"
            continue
        fields: dict[str, Any] = {}
        for key, value in item.items():
            name = str(key).strip().lower()
            if name in fields:
                yield number, f"key {key!r} is given twice (keys are matched without regard to case)"
                break
            fields[name] = value
        else:
            yield number, fields


def _csv_rows(text: str, columns: Mapping[str, str]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)  # line ends inside quotes kept
    try:
        header = [name.strip().lower() for name in next(reader, [])]
    except csv.Error as exc:
        raise InvalidInput(f"the revenue CSV's header cannot be read: {exc}") from None
    if not header:
        raise InvalidInput("the revenue CSV is empty: it needs a header row naming its columns")
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice:
        raise InvalidInput(f"the revenue CSV names columns twice (case aside): {twice}")
    _check_columns(set(header), columns)
    count = 0
    while True:
        number = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InvalidInput(f"the revenue CSV cannot be read at line {reader.line_num}: {exc}") from None
        if not cells or cells == [""]:
            continue  # a blank line
        count += 1
        if count > MAX_ROWS:
            raise TooLarge(f"the revenue file has more than {MAX_ROWS} rows, the limit")
        if len(cells) != len(header):
            yield number, f"has {len(cells)} fields, the header {len(header)}"
        else:
            yield number, dict(zip(header, cells, strict=True))


def _check_columns(present: set[str], columns: Mapping[str, str]) -> None:
    """The file must have the user, amount and instant or period columns (CSV: in its header)."""
    missing = [
        f"{ours} (column {columns[ours]!r})" for ours in ("user_id", "amount") if columns[ours] not in present
    ]
    has_at = columns["at"] in present
    has_period = columns["period_start"] in present and columns["period_end"] in present
    if not has_at and not has_period:
        missing.append(
            f"at (column {columns['at']!r}) or period_start and period_end "
            f"(columns {columns['period_start']!r}, {columns['period_end']!r})"
        )
    if missing:
        raise InvalidInput(
            f"the revenue file lacks {'; '.join(missing)}; map your columns with "
            "--map FIELD=COLUMN (HTTP: ?map=FIELD=COLUMN)"
        )


def _records(
    rows: Iterator[tuple[int, dict[str, Any] | str]], columns: Mapping[str, str], where: ZoneInfo
) -> list[RevenueRecord]:
    records: list[RevenueRecord] = []
    problems: list[str] = []
    count = 0
    seen: dict[str, int] = {}
    for number, fields in rows:
        try:
            if isinstance(fields, str):
                raise _Bad(fields)
            record = _record(number, fields, columns, where)
            if record.id in seen and record.id == derived_id(*_content(record)):
                raise _Bad(
                    f"repeats row {seen[record.id]} (same user, amount and time, no id): give the rows ids"
                )
            if record.id in seen:
                raise _Bad(
                    f"id {record.id!r} is also row {seen[record.id]}; each record needs an id of its own"
                )
        except _Bad as exc:
            count += 1
            if len(problems) < MAX_ERRORS:
                problems.append(f"row {number}: {exc}")
            continue
        seen[record.id] = number
        records.append(record)
    if count:
        raise BadRows(problems, count)
    return records


def _record(
    number: int, fields: dict[str, Any], columns: Mapping[str, str], where: ZoneInfo
) -> RevenueRecord:
    def get(ours: str) -> str:
        value = fields.get(columns[ours])
        if value is None:
            return ""
        if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
            raise _Bad(f"{ours}: must be text or a number, got {type(value).__name__}")
        text = str(value).strip()
        if len(text) > MAX_FIELD_CHARS:
            raise _Bad(f"{ours}: longer than {MAX_FIELD_CHARS} characters")
        return text

    currency = get("currency")
    if columns["currency"] in fields and currency.upper() != "USD":
        raise _Bad(f"currency: only USD is imported, got {currency or '(empty)'!r}")
    user_id = get("user_id")
    if not user_id:
        raise _Bad(f"user_id: empty (column {columns['user_id']!r})")
    amount = _amount(get("amount"))
    at, start, end = get("at"), get("period_start"), get("period_end")
    if at and (start or end):
        raise _Bad("give at (an instant) or period_start and period_end, not both")
    if at:
        start_us = end_us = _instant("at", at, where)
    elif start and end:
        start_us, end_us = _instant("period_start", start, where), _instant("period_end", end, where)
        if end_us <= start_us:
            raise _Bad(f"period_end ({end}) must come after period_start ({start})")
    elif start or end:
        raise _Bad(f"{'period_end' if start else 'period_start'}: empty; a period needs both ends")
    else:
        raise _Bad("no instant (at) and no period (period_start, period_end)")
    record_id = get("id") or derived_id(user_id, amount, start_us, end_us)
    return RevenueRecord(number, record_id, user_id, amount, start_us, end_us)


def _content(record: RevenueRecord) -> tuple[str, Decimal, int, int]:
    return record.user_id, record.amount, record.start_us, record.end_us


def derived_id(user_id: str, amount: Decimal, start_us: int, end_us: int) -> str:
    """The id of a row without one: ``derived:`` and the first 32 hex digits of the SHA-256 of
    its user id, amount (9 decimals), start and end in epoch micros, joined by newlines."""
    text = "\n".join(
        (user_id, format(amount.quantize(Decimal(1).scaleb(-MAX_DECIMALS)), "f"), str(start_us), str(end_us))
    )
    return "derived:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _amount(text: str) -> Decimal:
    if not text:
        raise _Bad("amount: empty")
    if not _AMOUNT.fullmatch(text):
        raise _Bad(
            "amount: must be a decimal number of USD such as 20.00 or -5 (no symbols, separators or "
            f"exponents), got {text!r}"
        )
    try:
        amount = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        raise _Bad(f"amount: not a decimal: {text!r}") from None
    exponent = amount.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_DECIMALS:
        raise _Bad(f"amount: at most {MAX_DECIMALS} decimals (nano-dollars), got {text!r}")
    if abs(amount) >= MAX_AMOUNT:
        raise _Bad(f"amount: must be below {MAX_AMOUNT:,} USD in size, got {text!r}")
    return amount + 0  # -0 -> 0


def _instant(name: str, text: str, where: ZoneInfo) -> int:
    """Epoch micros of an ISO-8601 instant (offset or Z; else read in ``where``), a bare date
    (its start in ``where``), or a Unix timestamp in seconds."""
    if _UNIX.fullmatch(text):
        seconds = Decimal(text)
        micros = seconds * 1_000_000
        if micros != micros.to_integral_value():
            raise _Bad(f"{name}: a Unix timestamp has at most 6 decimals, got {text!r}")
        try:
            moment = EARLIEST + timedelta(microseconds=int(micros))
        except OverflowError:
            moment = LATEST
        if not EARLIEST <= moment < LATEST:
            raise _Bad(f"{name}: the Unix timestamp {text} is not in 1970..2999 (seconds, not milliseconds?)")
        return int(micros)
    try:
        parsed = (
            datetime.fromisoformat(text)
            if len(text) > 10
            else datetime.combine(date.fromisoformat(text), datetime.min.time())
        )
    except ValueError:
        raise _Bad(
            f"{name}: not an instant: {text!r}; give ISO-8601 (2026-11-01, 2026-11-01T09:30:00Z, "
            "2026-11-01 09:30+01:00) or a Unix timestamp in seconds"
        ) from None
    if parsed.tzinfo is None:
        parsed = _local(name, text, parsed, where)
    moment = parsed.astimezone(UTC)
    if not EARLIEST <= moment < LATEST:
        raise _Bad(f"{name}: {text!r} is not in 1970..2999")
    return (moment - EARLIEST) // _ONE_US


def _local(name: str, text: str, naive: datetime, where: ZoneInfo) -> datetime:
    """A naive time read in ``where``; one that does not exist there, or exists twice (daylight
    saving), is refused rather than guessed."""
    first, second = naive.replace(tzinfo=where, fold=0), naive.replace(tzinfo=where, fold=1)
    if first.utcoffset() != second.utcoffset():
        there = first.astimezone(UTC).astimezone(where).replace(tzinfo=None)
        what = "does not exist" if there != naive else "exists twice"
        raise _Bad(f"{name}: {text!r} {what} in {where.key} (daylight saving); give its UTC offset")
    return first
