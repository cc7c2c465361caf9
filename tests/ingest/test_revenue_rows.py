"""Revenue rows in: CSV and JSON parsed into validated records, every bad row named, nothing guessed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from user_metrics.errors import BadRows, InvalidInput, TooLarge
from user_metrics.ingest import revenue_rows
from user_metrics.ingest.revenue_rows import derived_id, parse_revenue


def us(text: str) -> int:
    """Epoch micros of an ISO-8601 instant with its offset."""
    moment = datetime.fromisoformat(text).astimezone(UTC)
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)).days * 86_400_000_000 + (
        moment - datetime(1970, 1, 1, tzinfo=UTC)
    ).seconds * 1_000_000


# The columns of a Stripe invoice export, as the dashboard names them (amounts in dollars).
STRIPE = (
    "id,Customer,Customer Email,Amount Paid,Period Start (UTC),Period End (UTC),Currency,Status\n"
    "in_1,cus_A,a@example.com,20.00,2026-11-01 00:00:00,2026-12-01 00:00:00,usd,paid\n"
    'in_2,cus_B,b@example.com,"2,400.00",2026-11-01 00:00:00,2027-11-01 00:00:00,usd,paid\n'
)
STRIPE_MAP = {
    "user_id": "Customer",
    "amount": "Amount Paid",
    "period_start": "Period Start (UTC)",
    "period_end": "Period End (UTC)",
}


def bad(data: str | list[object], **kwargs: object) -> list[str]:
    with pytest.raises(BadRows) as caught:
        parse_revenue(data, **kwargs)  # type: ignore[arg-type]
    assert caught.value.count == len(caught.value.problems)
    return caught.value.problems


class TestGoodRows:
    def test_csv_periods_and_instants(self) -> None:
        """A period is [start, end) in epoch micros; an instant has end = start; amounts are exact."""
        records = parse_revenue(
            "id,user_id,amount,at,period_start,period_end\n"
            "a,u1,19.99,,2026-11-01T00:00:00Z,2026-12-01T00:00:00Z\n"
            "b,u2,0.000000001,2026-11-05T12:00:00+01:00,,\n"
        )
        assert [(r.row, r.id, r.user_id, r.amount) for r in records] == [
            (2, "a", "u1", Decimal("19.99")),
            (3, "b", "u2", Decimal("0.000000001")),
        ]
        assert (records[0].start_us, records[0].end_us) == (
            us("2026-11-01T00:00:00+00:00"),
            us("2026-12-01T00:00:00+00:00"),
        )
        assert records[1].start_us == records[1].end_us == us("2026-11-05T11:00:00+00:00")

    def test_json_list_and_records_object_with_exact_numbers(self) -> None:
        """JSON numbers are read from their text (no float): 0.1 stays 0.1; {"records": [...]} too."""
        rows = [{"id": "j", "user_id": "u", "amount": 0.1, "at": 1_793_491_200}]
        for text in (json.dumps(rows), json.dumps({"records": rows})):
            (record,) = parse_revenue(text)
            assert record.amount == Decimal("0.1")
            assert record.row == 1  # JSON rows count from 1
            assert record.start_us == us("2026-11-01T00:00:00+00:00")

    def test_negative_amounts_are_refunds(self) -> None:
        """A negative amount (a refund, a credit) is a record like any other."""
        (record,) = parse_revenue("user_id,amount,at\nu,-12.50,2026-11-02T00:00:00Z\n")
        assert record.amount == Decimal("-12.50")

    def test_unix_timestamps_in_seconds_with_fraction(self) -> None:
        (record,) = parse_revenue("user_id,amount,at\nu,1,1793491200.25\n")
        assert record.start_us == us("2026-11-01T00:00:00+00:00") + 250_000

    def test_a_stripe_export_imports_with_a_mapping(self) -> None:
        """The export's own columns, mapped (matched without regard to case); extra columns ignored."""
        records = parse_revenue(STRIPE.replace('"2,400.00"', "2400.00"), mapping=STRIPE_MAP)
        assert [(r.id, r.user_id, r.amount) for r in records] == [
            ("in_1", "cus_A", Decimal("20.00")),
            ("in_2", "cus_B", Decimal("2400.00")),
        ]
        assert records[1].end_us == us("2027-11-01T00:00:00+00:00")

    def test_bare_dates_and_naive_times_are_read_in_the_zone(self) -> None:
        """A bare date is the start of that day in ``tz``; a naive time is read there too."""
        text = "user_id,amount,period_start,period_end\nu,30,2026-11-01,2026-12-01\n"
        (record,) = parse_revenue(text, tz="Asia/Kolkata")
        assert record.start_us == us("2026-11-01T00:00:00+05:30")
        assert record.end_us == us("2026-12-01T00:00:00+05:30")
        (record,) = parse_revenue("user_id,amount,at\nu,1,2026-07-01 09:15\n", tz="Asia/Kathmandu")
        assert record.start_us == us("2026-07-01T09:15:00+05:45")
        (utc,) = parse_revenue(text)  # no zone: UTC
        assert utc.start_us == us("2026-11-01T00:00:00+00:00")

    def test_a_missing_id_is_derived_from_the_content(self) -> None:
        """The same row gets the same id every time (a re-import changes nothing), another row another."""
        text = "user_id,amount,at\nu,5,2026-11-01T00:00:00Z\nu,5.0,2026-11-01T00:00:01Z\n"
        first, second = parse_revenue(text)
        assert first.id == derived_id("u", Decimal("5"), first.start_us, first.end_us)
        assert first.id.startswith("derived:") and first.id != second.id
        assert [r.id for r in parse_revenue(text)] == [first.id, second.id]
        # 5 and 5.000 are the same amount: the same id.
        assert derived_id("u", Decimal("5.000"), 1, 1) == derived_id("u", Decimal("5"), 1, 1)

    def test_a_quoted_line_break_stays_in_its_field_and_rows_keep_their_lines(self) -> None:
        """Row numbers are the line a row begins on; a line separator inside quotes is no new row."""
        text = 'id,user_id,amount,at\n"a\nb",u,1,2026-11-01\n"c\u2028d",u,2,2026-11-01\n'
        records = parse_revenue(text)
        assert [(r.row, r.id) for r in records] == [(2, "a\nb"), (4, "c\u2028d")]

    def test_a_byte_order_mark_and_blank_lines_are_no_rows(self) -> None:
        records = parse_revenue(b"\xef\xbb\xbfuser_id,amount,at\n\nu,1,2026-11-01\n\n")
        assert [r.row for r in records] == [3]  # the line of the file where the row is


class TestBadRows:
    def test_every_bad_row_is_named_with_its_reason(self) -> None:
        """One good row among bad ones: nothing is returned, each bad row is listed (CSV header = row 1)."""
        problems = bad(
            "id,user_id,amount,at,currency\n"
            "ok,u,1,2026-11-01,usd\n"
            "b1,u,1e3,2026-11-01,usd\n"
            "b2,,1,2026-11-01,usd\n"
            "b3,u,1,yesterday,usd\n"
            "b4,u,1,2026-11-01,eur\n"
            "b5,u,1.0000000001,2026-11-01,usd\n"
            "b6,u,1000000000,2026-11-01,usd\n"
            "b7,u,$5,2026-11-01,usd\n"
        )
        assert [p.split(":")[0] for p in problems] == [f"row {n}" for n in range(3, 10)]
        assert "exponents" in problems[0]
        assert "user_id: empty" in problems[1]
        assert "not an instant" in problems[2]
        assert "only USD" in problems[3] and "'eur'" in problems[3]
        assert "at most 9 decimals" in problems[4]
        assert "below 1,000,000,000" in problems[5]
        assert "no symbols" in problems[6]

    def test_periods_must_end_after_they_start_and_have_both_ends(self) -> None:
        problems = bad(
            "user_id,amount,at,period_start,period_end\n"
            "u,1,,2026-11-02,2026-11-01\n"
            "u,1,,2026-11-02,2026-11-02\n"
            "u,1,,2026-11-02,\n"
            "u,1,2026-11-01,2026-11-02,2026-11-03\n"
            "u,1,,,\n"
        )
        assert "must come after" in problems[0] and "must come after" in problems[1]
        assert "period_end: empty" in problems[2]
        assert "not both" in problems[3]
        assert "no instant" in problems[4]

    def test_times_daylight_saving_skips_or_repeats_are_refused(self) -> None:
        """A naive time that does not exist, or exists twice, in the zone is not guessed."""
        problems = bad(
            "user_id,amount,at\nu,1,2026-03-08 02:30\nu,1,2026-11-01 01:30\n", tz="America/New_York"
        )
        assert "does not exist in America/New_York" in problems[0]
        assert "exists twice in America/New_York" in problems[1]
        (record,) = parse_revenue("user_id,amount,at\nu,1,2026-11-01 01:30-04:00\n", tz="America/New_York")
        assert record.start_us == us("2026-11-01T05:30:00+00:00")  # with its offset it is one instant

    def test_milliseconds_and_far_instants_are_refused(self) -> None:
        problems = bad("user_id,amount,at\nu,1,1793491200000\nu,1,1969-12-31T00:00:00Z\nu,1,1.0000001\n")
        assert "milliseconds" in problems[0]
        assert "1970..2999" in problems[1]
        assert "at most 6 decimals" in problems[2]

    def test_the_same_id_twice_and_identical_rows_without_ids(self) -> None:
        problems = bad(
            "id,user_id,amount,at\nx,u,1,2026-11-01\nx,v,2,2026-11-01\n,u,1,2026-11-02\n,u,1,2026-11-02\n"
        )
        assert problems == [
            "row 3: id 'x' is also row 2; each record needs an id of its own",
            "row 5: repeats row 4 (same user, amount and time, no id): give the rows ids",
        ]

    def test_json_rows_that_are_no_objects_or_hold_floats_of_python(self) -> None:
        problems = bad([{"user_id": "u", "amount": 1.5, "at": "2026-11-01"}, "text", {"user_id": "u"}])
        assert "amount: must be text or a number, got float" in problems[0]  # decoded JSON: no floats
        assert "must be an object" in problems[1]
        assert problems[2].startswith("row 3: amount: empty")

    def test_a_ragged_csv_row(self) -> None:
        assert bad("user_id,amount,at\nu,1\n") == ["row 2: has 2 fields, the header 3"]

    def test_errors_are_listed_up_to_the_bound_and_all_counted(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(revenue_rows, "MAX_ERRORS", 3)
        with pytest.raises(BadRows) as caught:
            parse_revenue("user_id,amount,at\n" + "u,x,2026-11-01\n" * 5)
        assert caught.value.count == 5 and len(caught.value.problems) == 3
        assert "5 bad rows, nothing imported" in str(caught.value) and "(and 2 more)" in str(caught.value)


class TestFile:
    def test_missing_columns_are_named_with_the_mapping_hint(self) -> None:
        with pytest.raises(InvalidInput, match=r"lacks user_id \(column 'user_id'\).*--map FIELD=COLUMN"):
            parse_revenue(STRIPE)

    def test_bad_mapping_format_and_zone(self) -> None:
        with pytest.raises(InvalidInput, match="map: unknown field 'customer'"):
            parse_revenue(STRIPE, mapping={"customer": "Customer"})
        with pytest.raises(InvalidInput, match="format: must be csv or json"):
            parse_revenue(STRIPE, fmt="xlsx")
        with pytest.raises(InvalidInput, match="tz: unknown time zone 'Mars/Olympus'"):
            parse_revenue(STRIPE, mapping=STRIPE_MAP, tz="Mars/Olympus")
        with pytest.raises(InvalidInput, match="not JSON"):
            parse_revenue("[{", fmt="json")

    def test_bounds_of_size_rows_and_fields(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A file past MAX_FILE_BYTES or MAX_ROWS is refused whole; a field past MAX_FIELD_CHARS is a bad row."""
        with pytest.raises(TooLarge, match="more than the limit of 1048576"):
            parse_revenue("user_id,amount,at\n" + "x" * revenue_rows.MAX_FILE_BYTES)
        monkeypatch.setattr(revenue_rows, "MAX_ROWS", 2)
        with pytest.raises(TooLarge, match="more than 2 rows"):
            parse_revenue("user_id,amount,at\n" + "u,1,2026-11-01\n" * 3)
        with pytest.raises(TooLarge, match="3 rows, more than the limit of 2"):
            parse_revenue([{"user_id": "u", "amount": "1", "at": "2026-11-01"}] * 3)
        assert parse_revenue("user_id,amount,at\nu,1,2026-11-01\nu,2,2026-11-01\n")
        long_id = "u" * (revenue_rows.MAX_FIELD_CHARS + 1)
        assert bad(f"user_id,amount,at\n{long_id},1,2026-11-01\n") == [
            "row 2: user_id: longer than 1024 characters"
        ]

    def test_thousands_separators_are_refused_not_guessed(self) -> None:
        problems = bad(STRIPE, mapping=STRIPE_MAP)
        assert problems == [
            "row 3: amount: must be a decimal number of USD such as 20.00 or -5 (no symbols, separators "
            "or exponents), got '2,400.00'"
        ]
