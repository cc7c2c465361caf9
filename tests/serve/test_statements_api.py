"""Statements through every reader: HTTP JSON and CSV, the Python clients, the CLI (csv, json)."""

from __future__ import annotations

import argparse
import csv
import http.client
import io
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import Service
from servers import cli
from statement_data import KOLKATA, MONTH, START, build, serving

from user_metrics.cli import statement_command
from user_metrics.client import RemoteClient, connect
from user_metrics.query.results import to_json
from user_metrics.query.statement_csv import COLUMNS
from user_metrics.query.statements import statement

CALLS = build(seed=3, count=400)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    yield from serving(tmp_path_factory.mktemp("statements-api") / "um.duckdb", CALLS)


def get(served: Service, path: str) -> tuple[int, str, bytes, http.client.HTTPResponse]:
    assert served.app is not None
    url = urlsplit(served.app.api_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, response.getheader("Content-Type") or "", body, response


def local(served: Service, month: str = MONTH, user: str | None = None, **kwargs: Any) -> Any:
    assert served.app is not None
    con = served.app.store.reader()
    try:
        return statement(con, month, user, **kwargs)
    finally:
        con.close()


def parse_csv(text: str) -> list[dict[str, str]]:
    rows = list(csv.reader(io.StringIO(text)))
    assert tuple(rows[0]) == COLUMNS
    return [dict(zip(COLUMNS, row, strict=True)) for row in rows[1:]]


class TestHttp:
    def test_json_is_the_query_functions_answer(self, served: Service) -> None:
        """GET /api/v1/statements answers the JSON form of statement() for the same arguments."""
        status, kind, body, _ = get(served, f"/api/v1/statements?month={MONTH}&tz={KOLKATA}&limit=5&offset=2")
        assert (status, kind) == (200, "application/json; charset=utf-8")
        assert json.loads(body) == to_json(local(served, tz=KOLKATA, limit=5, offset=2))

    def test_csv_rows_reconcile(self, served: Service) -> None:
        """format=csv: text/csv, one row per line item, each user's cost equal to the sum of its
        line amounts, and the month's totals at the end, with X-Total-Users."""
        status, kind, body, response = get(served, f"/api/v1/statements?month={MONTH}&format=csv")
        assert (status, kind) == (200, "text/csv; charset=utf-8")
        rows = parse_csv(body.decode())
        want = local(served)
        assert response.getheader("X-Total-Users") == str(want.totals.users)
        sums: dict[str, Decimal] = {}
        costs: dict[str, str] = {}
        for row in rows:
            if row["row"] == "line" and row["amount_usd"]:
                sums[row["user_id"]] = sums.get(row["user_id"], Decimal(0)) + Decimal(row["amount_usd"])
            if row["row"] == "cost":
                costs[row["user_id"]] = row["amount_usd"]
        assert {u: Decimal(c) for u, c in costs.items() if c} == sums
        assert [r["row"] for r in rows[-3:]] == ["total_cost", "total_revenue", "total_margin"]
        assert Decimal(rows[-3]["amount_usd"]) == want.totals.cost_usd == sum(sums.values())
        assert rows[-2]["amount_usd"] == rows[-1]["amount_usd"] == ""  # no revenue source: null

    def test_one_user_and_errors(self, served: Service) -> None:
        """user= gives that user's statement; an unknown user is 404; a bad month, zone, format or
        parameter is 400 naming it."""
        status, _, body, _ = get(served, f"/api/v1/statements?month={MONTH}&user=user-01")
        assert status == 200 and [u["user_id"] for u in json.loads(body)["users"]] == ["user-01"]
        assert get(served, f"/api/v1/statements?month={MONTH}&user=nobody")[0] == 404
        for query, name in (
            ("month=2026-13", "month"),
            ("", "month"),
            (f"month={MONTH}&tz=Nowhere/Else", "tz"),
            (f"month={MONTH}&format=xml", "format"),
            (f"month={MONTH}&limit=0", "limit"),
            (f"month={MONTH}&since=30d", "since"),
        ):
            status, _, body, _ = get(served, f"/api/v1/statements?{query}")
            assert status == 400 and json.loads(body)["error"].startswith(name), query


class TestZoneSetting:
    def test_the_timezone_setting_is_the_zone_without_tz(self, tmp_path: Path) -> None:
        """Without tz, a server's statement is in its timezone setting, and so is a file read with
        connect(path, timezone=...); tz= still wins."""
        svc = Service(tmp_path / "um.duckdb", timezone=KOLKATA)
        svc.start()
        try:
            status, _, body, _ = get(svc, f"/api/v1/statements?month={MONTH}")
            assert status == 200 and json.loads(body)["tz"] == KOLKATA
            assert json.loads(body)["since"] == "2026-09-30T18:30:00Z"
            assert json.loads(get(svc, f"/api/v1/statements?month={MONTH}&tz=UTC")[2])["tz"] == "UTC"
        finally:
            svc.stop()
        with connect(tmp_path / "um.duckdb", timezone=KOLKATA) as client:
            assert client.statement(MONTH).tz == KOLKATA
            assert client.statement(MONTH, tz="UTC").since == START


class TestClients:
    def test_remote_client_answers_what_the_function_does(self, served: Service) -> None:
        assert served.app is not None
        with RemoteClient(served.app.api_url) as client:
            assert client.statement(MONTH, tz=KOLKATA) == local(served, tz=KOLKATA)
            assert client.statement(MONTH, "user-02") == local(served, user="user-02")

    def test_the_cli_reads_every_page(self, served: Service, monkeypatch: pytest.MonkeyPatch) -> None:
        """Read page by page (3 users a page here), the CSV and JSON hold every user once."""
        assert served.app is not None
        monkeypatch.setattr(statement_command, "PAGE", 3)
        args = argparse.Namespace(month=MONTH, user=None, tz=None)
        with RemoteClient(served.app.api_url) as client:
            pages = statement_command.statement_pages(client, args)
        whole = local(served, limit=10_000)
        assert len(pages) == -(-whole.totals.users // 3)
        got = json.loads(statement_command.render_statement(pages, "json", None))
        assert got["users"] == to_json(whole)["users"]
        rows = parse_csv(statement_command.render_statement(pages, "csv", None))
        assert [r["user_id"] for r in rows if r["row"] == "cost"] == [u.user_id or "" for u in whole.users]
        assert [r["row"] for r in rows].count("total_cost") == 1


class TestCli:
    def test_csv_and_json(self, served: Service) -> None:
        """`user-metrics statement --month M --format csv|json` against a server."""
        assert served.app is not None
        url = served.app.api_url
        done = cli("statement", "--url", url, "--month", MONTH, "--user", "user-01", "--format", "json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == to_json(local(served, user="user-01", limit=statement_command.PAGE))
        done = cli("statement", "--url", url, "--month", MONTH, "--tz", KOLKATA, "--format", "csv")
        assert done.returncode == 0, done.stderr
        rows = parse_csv(done.stdout)
        assert {r["tz"] for r in rows} == {KOLKATA}
        assert Decimal(rows[-3]["amount_usd"]) == local(served, tz=KOLKATA).totals.cost_usd
        done = cli("statement", "--url", url, "--month", "2026-13")
        assert done.returncode == 2 and "month" in done.stderr
        done = cli("statement", "--url", url, "--month", MONTH, "--user", "nobody")
        assert done.returncode == 1
