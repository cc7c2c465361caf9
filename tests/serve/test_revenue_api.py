"""Revenue in through a running service: POST /api/v1/revenue (CSV, JSON), all or nothing,
idempotent by id, through the store's writer; GET lists what is stored; plan prices at start."""

from __future__ import annotations

import http.client
import json
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import duckdb
import pytest
from conftest import INGEST, READ, Service

from user_metrics.client import RemoteClient, connect
from user_metrics.errors import BadRows, InvalidInput, TooLarge, Unauthenticated
from user_metrics.query.revenue_records import RevenueImport

GOOD = (
    "id,user_id,amount,at,period_start,period_end\n"
    "r1,alice,20.00,,2026-11-01T00:00:00Z,2026-12-01T00:00:00Z\n"
    "r2,bob,-5.5,2026-11-03T10:00:00Z,,\n"
)
STRIPE = (
    "id,Customer,Amount Paid,Period Start (UTC),Period End (UTC),Currency,Status\n"
    "in_1,cus_A,20.00,2026-11-01 00:00:00,2026-12-01 00:00:00,usd,paid\n"
    "in_2,cus_B,2400.00,2026-11-01 00:00:00,2027-11-01 00:00:00,usd,paid\n"
)
STRIPE_MAP = {
    "user_id": "Customer",
    "amount": "Amount Paid",
    "period_start": "Period Start (UTC)",
    "period_end": "Period End (UTC)",
}


def stored(db: Path) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(
            "SELECT id, user_id, amount_usd, start_us, end_us, source FROM revenue ORDER BY id"
        ).fetchall()


def post(url: str, path: str, body: bytes, content_type: str, token: str | None = None) -> tuple[int, Any]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(str(parts.hostname), parts.port, timeout=30)
    headers = {"Content-Type": content_type} if content_type else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request("POST", path, body, headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.fixture
def served(tmp_path: Path) -> Any:
    svc = Service(tmp_path / "um.duckdb")
    app = svc.start()
    yield svc, RemoteClient(app.api_url)
    svc.stop()


class TestImport:
    def test_csv_then_the_same_file_again_changes_nothing(self, served: Any) -> None:
        """The first import stores every row; the second finds them all there (counts say so)."""
        svc, client = served
        assert client.import_revenue(GOOD) == RevenueImport(imported=2, unchanged=0)
        assert client.import_revenue(GOOD) == RevenueImport(imported=0, unchanged=2)
        page = client.revenue_records()
        assert [(r.id, r.user_id, r.amount_usd) for r in page.records] == [
            ("r1", "alice", Decimal("20.000000000")),
            ("r2", "bob", Decimal("-5.500000000")),
        ]
        assert page.records[1].start == page.records[1].end  # an instant
        svc.stop()
        rows = stored(svc.db)
        assert [(r[0], r[3] < r[4], r[5]) for r in rows] == [("r1", True, "http"), ("r2", False, "http")]

    def test_json_rows_from_python_with_decimals(self, served: Any) -> None:
        """A list of dicts goes as JSON; Decimal amounts keep their digits."""
        svc, client = served
        rows = [
            {"id": "j1", "user_id": "carol", "amount": Decimal("0.000000001"), "at": "2026-11-04T00:00:00Z"}
        ]
        assert client.import_revenue(rows, source="crm") == RevenueImport(1, 0)
        svc.stop()
        assert stored(svc.db)[0][2] == Decimal("0.000000001") and stored(svc.db)[0][5] == "crm"

    def test_a_stripe_export_with_a_mapping(self, served: Any) -> None:
        svc, client = served
        assert client.import_revenue(STRIPE, mapping=STRIPE_MAP) == RevenueImport(2, 0)
        assert {r.user_id for r in client.revenue_records().records} == {"cus_A", "cus_B"}

    def test_one_bad_row_among_good_ones_imports_nothing(self, served: Any) -> None:
        """400 lists every bad row with its number; not even the good rows are stored."""
        svc, client = served
        text = GOOD + "r3,carol,ten,2026-11-05T00:00:00Z,,\nr4,,1,2026-11-05T00:00:00Z,,\n"
        with pytest.raises(BadRows) as caught:
            client.import_revenue(text)
        assert caught.value.count == 2
        assert caught.value.problems[0].startswith("row 4: amount:")
        assert caught.value.problems[1].startswith("row 5: user_id: empty")
        status, answer = post(svc.app.api_url, "/api/v1/revenue", text.encode(), "text/csv")
        assert status == 400 and answer["bad_rows"] == 2 and len(answer["errors"]) == 2
        assert client.revenue_records().total == 0

    def test_a_conflicting_reimport_is_refused_whole(self, served: Any) -> None:
        """The same id with another amount is a bad row naming what was stored; nothing changes."""
        svc, client = served
        client.import_revenue(GOOD)
        changed = GOOD.replace("20.00", "25.00") + "r9,dave,1,2026-11-06T00:00:00Z,,\n"
        with pytest.raises(BadRows) as caught:
            client.import_revenue(changed)
        (problem,) = caught.value.problems
        assert problem.startswith(
            "row 2: record 'r1' was imported before with user 'alice', amount 20.000000000"
        )
        assert "this row has user 'alice', amount 25.00 USD" in problem
        assert [r.id for r in client.revenue_records().records] == ["r1", "r2"]  # no r9

    def test_bare_dates_are_read_in_the_requests_zone(self, served: Any) -> None:
        svc, client = served
        text = "id,user_id,amount,period_start,period_end\nk,u,30,2026-11-01,2026-12-01\n"
        client.import_revenue(text, tz="Asia/Kolkata")
        (record,) = client.revenue_records().records
        assert record.start.isoformat() == "2026-10-31T18:30:00+00:00"

    def test_format_from_content_type_or_parameter_and_bad_parameters(self, served: Any) -> None:
        svc, client = served
        url = svc.app.api_url
        body = json.dumps([{"id": "x", "user_id": "u", "amount": 1, "at": 1793491200}]).encode()
        assert post(url, "/api/v1/revenue", body, "application/json") == (
            200,
            {"imported": 1, "unchanged": 0},
        )
        assert post(url, "/api/v1/revenue?format=json", body, "") == (200, {"imported": 0, "unchanged": 1})
        status, answer = post(url, "/api/v1/revenue", b"a,b\n", "application/xml")
        assert status == 415 and "text/csv or application/json" in answer["error"]
        status, answer = post(url, "/api/v1/revenue?mapping=x", body, "application/json")
        assert status == 400 and "takes format, map, tz, source" in answer["error"]
        status, answer = post(
            url, f"/api/v1/revenue?map={quote('customer=Customer')}", body, "application/json"
        )
        assert status == 400 and "map: unknown field 'customer'" in answer["error"]
        with pytest.raises(InvalidInput, match="tz: unknown time zone"):
            client.import_revenue(GOOD, tz="Nowhere/Land")

    def test_other_methods_are_refused(self, served: Any) -> None:
        svc, _ = served
        parts = urlsplit(svc.app.api_url)
        conn = http.client.HTTPConnection(str(parts.hostname), parts.port, timeout=30)
        try:
            conn.request("DELETE", "/api/v1/revenue")
            response = conn.getresponse()
            response.read()
        finally:
            conn.close()
        assert response.status == 405 and response.getheader("Allow") == "GET, HEAD, POST"

    def test_the_body_bound_of_the_api(self, served: Any) -> None:
        svc, client = served
        with pytest.raises(TooLarge):
            client.import_revenue("user_id,amount,at\n" + "u,1,2026-11-01\n" * 80_000)


class TestList:
    def test_by_user_window_and_page(self, served: Any) -> None:
        """Records touching [since, until): a period overlapping it, an instant inside it."""
        svc, client = served
        client.import_revenue(GOOD)
        assert [r.id for r in client.revenue_records(user="bob").records] == ["r2"]
        assert [r.id for r in client.revenue_records(since="2026-11-04", until="2026-11-05").records] == [
            "r1"
        ]
        assert [r.id for r in client.revenue_records(since="2026-12-01").records] == []
        page = client.revenue_records(limit=1, offset=1)
        assert (page.total, [r.id for r in page.records]) == (2, ["r2"])
        with pytest.raises(InvalidInput, match="limit: must be a whole number from 1 to 1000"):
            client.revenue_records(limit=5000)


class TestAuth:
    def test_reading_takes_a_read_token_and_importing_an_ingest_token(self, tmp_path: Path) -> None:
        """Listing records is a read (read_tokens); importing them is a write: it takes one of the
        ingest_tokens, and a read token is refused (401) with nothing stored."""
        svc = Service(tmp_path / "um.duckdb", read_tokens=(READ,), ingest_tokens=(INGEST,))
        app = svc.start()
        try:
            for token in (None, READ):
                with pytest.raises(Unauthenticated):
                    RemoteClient(app.api_url, token=token).import_revenue(GOOD)
            with pytest.raises(Unauthenticated):
                RemoteClient(app.api_url).revenue_records()
            with pytest.raises(Unauthenticated):
                RemoteClient(app.api_url, token=INGEST).revenue_records()
            assert RemoteClient(app.api_url, token=READ).revenue_records().total == 0
            assert RemoteClient(app.api_url, token=INGEST).import_revenue(GOOD) == RevenueImport(2, 0)
            assert RemoteClient(app.api_url, token=READ).revenue_records().total == 2
        finally:
            svc.stop()


class TestPlanPricesAtStart:
    def test_each_start_writes_the_settings_prices_replacing_the_last(self, tmp_path: Path) -> None:
        """Readers see the operator's prices with nothing but the connection; a restart replaces them."""
        db = tmp_path / "um.duckdb"
        svc = Service(db, plan_property="plan", plan_prices=("free=0", "pro=20/month", "team=2400/year"))
        svc.start()
        svc.stop()
        with duckdb.connect(str(db), read_only=True) as con:
            rows = con.execute("SELECT * FROM plan_prices ORDER BY value").fetchall()
        assert rows == [
            ("plan", "free", Decimal("0"), "month"),
            ("plan", "pro", Decimal("20"), "month"),
            ("plan", "team", Decimal("2400"), "year"),
        ]
        svc = Service(db)  # no prices now: the table is emptied
        svc.start()
        svc.stop()
        with connect(db) as client:
            assert client.sql("SELECT count(*) AS n FROM plan_prices").rows == ((0,),)


class TestLocalFile:
    def test_connect_path_imports_with_the_stores_writer(self, tmp_path: Path) -> None:
        """No server: the file is written by the store's writer, then read again."""
        svc = Service(tmp_path / "um.duckdb")
        svc.start()
        svc.stop()
        with connect(svc.db) as client:
            assert client.import_revenue(GOOD, source="good.csv") == RevenueImport(2, 0)
            assert client.import_revenue(GOOD) == RevenueImport(0, 2)
            assert client.revenue_records().total == 2
            with pytest.raises(BadRows):
                client.import_revenue(GOOD.replace("-5.5", "-6"))
            assert client.revenue_records(user="bob").records[0].amount_usd == Decimal("-5.5")
        assert [r[5] for r in stored(svc.db)] == ["good.csv", "good.csv"]


def test_csv_exports_never_hand_a_spreadsheet_a_formula(served: Any) -> None:
    """User ids come from end users: in the statement CSV (HTTP) and the revenue list CSV (CLI)
    one that starts like a formula (=, +, -, @) is prefixed with ', so a spreadsheet shows it as
    text; negative amounts stay numbers."""
    import csv
    import io
    import subprocess
    import sys

    svc, client = served
    evil = ['=HYPERLINK("http://example.invalid","x")', "@SUM(A1)", "-cmd", "+1+2"]
    rows = "".join(
        f'r{i},"{u.replace(chr(34), chr(34) * 2)}",-5,2026-11-20T00:00:00Z\n' for i, u in enumerate(evil)
    )
    client.import_revenue("id,user_id,amount,at\n" + rows)
    parts = urlsplit(svc.app.api_url)
    conn = http.client.HTTPConnection(str(parts.hostname), parts.port, timeout=30)
    conn.request("GET", "/api/v1/statements?month=2026-11&format=csv")
    text = conn.getresponse().read().decode()
    conn.close()
    listed = subprocess.run(
        [
            sys.executable,
            "-m",
            "user_metrics",
            "revenue",
            "list",
            "--url",
            svc.app.api_url,
            "--format",
            "csv",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for body, column in ((text, "user_id"), (listed, "user_id")):
        table = list(csv.DictReader(io.StringIO(body)))
        ids = {r[column] for r in table if r[column]}
        assert ids == {"'" + u for u in evil}
    amounts = {r["amount_usd"] for r in csv.DictReader(io.StringIO(text)) if r["row"] == "revenue"}
    assert amounts == {"-5.000000000"}


def test_without_ingest_tokens_an_import_takes_a_read_token(tmp_path: Path) -> None:
    """Read tokens alone (ingest open) still guard the import: never less guarded than a read."""
    svc = Service(tmp_path / "um.duckdb", read_tokens=(READ,))
    app = svc.start()
    try:
        with pytest.raises(Unauthenticated):
            RemoteClient(app.api_url).import_revenue(GOOD)
        assert RemoteClient(app.api_url, token=READ).import_revenue(GOOD) == RevenueImport(2, 0)
    finally:
        svc.stop()
