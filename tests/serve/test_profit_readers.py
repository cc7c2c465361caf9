"""Revenue and margins in every reader: HTTP JSON, the CLI, and the Python clients on the file and
through a running server. Null without revenue, exact with it, least profitable first."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import duckdb
import pytest
from conftest import Service
from revenue_data import Record, Req, at, expected_revenue, set_revenue, write_requests
from servers import cli

import user_metrics

SINCE, UNTIL = at("2026-11-10"), at("2026-11-20")
WINDOW = ["--since", "2026-11-10T00:00:00Z", "--until", "2026-11-20T00:00:00Z"]
QUERY = "since=2026-11-10T00:00:00Z&until=2026-11-20T00:00:00Z"
REQS = [
    *(Req("alice", at(f"2026-11-1{d}T09:00"), "pro", 100_000_000) for d in range(5)),  # cost 0.5
    Req("bob", at("2026-11-12T10:00"), "free", 200_000_000),  # cost 0.2
    Req("dave", at("2026-11-13T10:00"), "free", 10_000_000),  # cost 0.01, no revenue
    Req(None, at("2026-11-14T10:00"), None, 50_000_000),  # no user id: cost 0.05
    Req("alice", at("2026-11-25T10:00"), "pro", 999_000_000),  # outside the window
]
RECORDS = [
    Record("a-nov", "alice", Decimal("1.00"), at("2026-11-01"), at("2026-12-01")),  # 1/3 in the window
    Record("b-1", "bob", Decimal("0.1"), at("2026-11-15T12:00")),
    Record("ghost-1", "ghost", Decimal("5"), at("2026-11-11")),  # revenue, never a request
]
COST = {"alice": Decimal("0.5"), "bob": Decimal("0.2"), "dave": Decimal("0.01"), None: Decimal("0.05")}
REVENUE = expected_revenue(REQS, [], RECORDS, SINCE, UNTIL)
# least profitable first: alice -0.166666667, bob -0.1, the null user -0.05, dave -0.01, ghost 5
MARGIN = {
    u: REVENUE.get(u or "", Decimal(0)) - COST.get(u, Decimal(0))
    for u in ("alice", "bob", None, "dave", "ghost")
}
ORDER = sorted(MARGIN, key=lambda u: MARGIN[u])


def _service(db: Path, revenue: bool) -> Service:
    write_requests(db, REQS)
    if revenue:
        con = duckdb.connect(str(db))
        set_revenue(con, [], RECORDS)
        con.close()
    svc = Service(db)
    svc.start()
    return svc


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = _service(tmp_path_factory.mktemp("profit") / "um.duckdb", revenue=True)
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = _service(tmp_path_factory.mktemp("bare") / "um.duckdb", revenue=False)
    yield svc
    svc.stop()


def http(svc: Service, path: str) -> Any:
    assert svc.app is not None
    with urlopen(f"{svc.app.api_url}{path}", timeout=30) as response:
        return json.loads(response.read())


def test_the_oracle_agrees_with_the_fixture() -> None:
    assert ORDER == ["alice", "bob", None, "dave", "ghost"]
    assert {
        "alice": Decimal("0.333333333"),
        "bob": Decimal("0.100000000"),
        "ghost": Decimal("5.000000000"),
    } == REVENUE


class TestHttp:
    def test_users_sorted_by_margin_least_profitable_first_with_exact_strings(self, served: Service) -> None:
        """Money is a decimal string (as cost_usd); a user with revenue and no request is listed."""
        page = http(served, f"/api/v1/users?{QUERY}&sort=margin_usd")
        assert [u["user_id"] for u in page["users"]] == ORDER
        assert page["total"] == 5
        for u in page["users"]:
            want = MARGIN[u["user_id"]]
            assert u["margin_usd"] == f"{want:.9f}"
            assert u["revenue_usd"] == f"{REVENUE.get(u['user_id'] or '', Decimal(0)):.9f}"
        ghost = page["users"][-1]
        assert ghost["requests"] == 0 and ghost["cost_usd"] is None and ghost["margin_ratio"] == 1.0
        assert page["users"][3]["margin_ratio"] is None  # dave: no revenue, no ratio
        desc = http(served, f"/api/v1/users?{QUERY}&sort=-margin_usd")
        assert [u["user_id"] for u in desc["users"]] == ORDER[::-1]
        by_ratio = http(served, f"/api/v1/users?{QUERY}&sort=margin_ratio")
        # bob -1, alice -0.5, ghost 1; then the users without revenue (no ratio)
        assert [u["user_id"] for u in by_ratio["users"]][:3] == ["bob", "alice", "ghost"]
        by_revenue = http(served, f"/api/v1/users?{QUERY}&sort=-revenue_usd&limit=2")
        assert [u["user_id"] for u in by_revenue["users"]] == ["ghost", "alice"] and by_revenue["total"] == 5

    def test_one_user_totals_and_property_groups(self, served: Service) -> None:
        alice = http(served, f"/api/v1/users/alice?{QUERY}")
        assert (alice["revenue_usd"], alice["margin_usd"]) == ("0.333333333", "-0.166666667")
        ghost = http(served, f"/api/v1/users/ghost?{QUERY}")
        assert (ghost["requests"], ghost["revenue_usd"], ghost["margin_usd"]) == (
            0,
            "5.000000000",
            "5.000000000",
        )
        totals = http(served, f"/api/v1/totals?{QUERY}")
        assert totals["revenue_usd"] == "5.433333333"
        assert totals["margin_usd"] == f"{Decimal('5.433333333') - sum(COST.values()):.9f}"
        groups = {v["value"]: v for v in http(served, f"/api/v1/properties/plan?{QUERY}")["values"]}
        assert groups["pro"]["revenue_usd"] == "0.333333333"
        assert groups["free"]["revenue_usd"] == "0.100000000"
        assert groups[None]["revenue_usd"] == "5.000000000"  # ghost has no request, so no plan

    def test_without_revenue_the_fields_are_null(self, bare: Service) -> None:
        page = http(bare, f"/api/v1/users?{QUERY}&sort=margin_usd")
        assert page["total"] == 4
        assert all(u[f] is None for u in page["users"] for f in ("revenue_usd", "margin_usd", "margin_ratio"))
        assert http(bare, f"/api/v1/users/alice?{QUERY}")["margin_usd"] is None
        assert http(bare, f"/api/v1/totals?{QUERY}")["revenue_usd"] is None
        values = http(bare, f"/api/v1/properties/plan?{QUERY}")["values"]
        assert all(v["margin_usd"] is None for v in values)


class TestCli:
    def test_the_users_table_shows_margins_sorted_least_profitable_first(self, served: Service) -> None:
        assert served.app is not None
        done = cli("users", "--url", served.app.api_url, *WINDOW, "--sort", "margin_usd")
        assert done.returncode == 0, done.stderr
        header, _, *rows = done.stdout.splitlines()
        assert header.split()[:6] == [
            "user_id",
            "requests",
            "errors",
            "cost_usd",
            "revenue_usd",
            "margin_usd",
        ]
        assert [r.split()[0] for r in rows[:5]] == ["alice", "bob", "(no", "dave", "ghost"]
        assert "-0.166666667" in rows[0] and "0.333333333" in rows[0]

    def test_csv_and_json_are_exact(self, served: Service) -> None:
        assert served.app is not None
        done = cli("users", "--url", served.app.api_url, *WINDOW, "--sort=-margin_usd", "--format", "csv")
        rows = list(csv.DictReader(io.StringIO(done.stdout)))
        assert [(r["user_id"], r["margin_usd"]) for r in rows][0] == ("ghost", "5.000000000")
        done = cli("totals", "--url", served.app.api_url, *WINDOW, "--format", "json")
        assert json.loads(done.stdout)["revenue_usd"] == "5.433333333"

    def test_without_revenue_the_table_has_no_margin_columns(self, bare: Service) -> None:
        assert bare.app is not None
        done = cli("users", "--url", bare.app.api_url, *WINDOW, "--sort=-margin_usd")
        assert done.returncode == 0, done.stderr
        assert "margin_usd" not in done.stdout.splitlines()[0]


def test_python_clients_local_and_remote_agree_exactly(tmp_path: Path) -> None:
    """connect(url=...) while serving and connect(path=...) afterwards: the same Decimals."""
    svc = _service(tmp_path / "um.duckdb", revenue=True)
    assert svc.app is not None
    with user_metrics.connect(url=svc.app.api_url) as remote:
        served = (remote.users(SINCE, UNTIL, sort="margin_usd"), remote.user("ghost", SINCE, UNTIL))
        totals = remote.totals(SINCE, UNTIL)
    svc.stop()
    with user_metrics.connect(path=svc.db) as local:
        assert (local.users(SINCE, UNTIL, sort="margin_usd"), local.user("ghost", SINCE, UNTIL)) == served
        assert local.totals(SINCE, UNTIL) == totals
    page, ghost = served
    assert [u.user_id for u in page.users] == ORDER
    assert [u.margin_usd for u in page.users] == [MARGIN[u] for u in ORDER]
    assert ghost.revenue_usd == Decimal("5.000000000") and ghost.margin_ratio == 1.0
    assert totals.revenue_usd == Decimal("5.433333333")
    assert totals.margin_usd == Decimal("5.433333333") - sum(COST.values())
