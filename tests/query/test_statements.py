"""Statements: line items per model and bucket that reconcile to the nano-dollar with users() and
totals() for the same month, in UTC and in Asia/Kolkata; reported, unpriced and pre-split rows."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import Service
from otlp import ANTHROPIC_OPENLLMETRY, chat, request, span
from statement_data import EDGE_USER, END, KOLKATA, MONTH, START, Call, build, serving

from user_metrics.app import App
from user_metrics.errors import InvalidInput, NotFound
from user_metrics.query import statements
from user_metrics.query.results import Statement, from_json, to_json
from user_metrics.query.statements import statement
from user_metrics.query.totals import totals
from user_metrics.query.users import users
from user_metrics.store.schema import PENDING_COLUMNS, SPLIT_COLUMNS

CALLS = build()
LATER = datetime(2026, 12, 20, tzinfo=UTC)
TOKEN_BUCKETS = ("input", "cache_read", "cache_write", "output", "reasoning")
BASE = int(START.timestamp() * 1e9) + 10**12  # in the month, in nanoseconds


@contextmanager
def holding(
    tmp_path: Path, spans: list[Any], **settings: Any
) -> Iterator[tuple[App, duckdb.DuckDBPyConnection]]:
    """A service holding ``spans`` (and the settings given), and a reader of it."""
    svc = Service(tmp_path / "um.duckdb", **settings)
    app = svc.start()
    assert app.ingestor.export(request(spans)).rejected_spans == 0
    con = app.store.reader()
    try:
        yield app, con
    finally:
        con.close()
        svc.stop()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    yield from serving(tmp_path_factory.mktemp("statements") / "um.duckdb", CALLS)


def full(con: duckdb.DuckDBPyConnection, month: str, tz: str | None = None) -> Statement:
    return statement(con, month, tz=tz, limit=10_000, now=lambda: LATER)


def expected_counts(
    calls: list[Call], since: datetime, until: datetime
) -> dict[tuple[str | None, str, str], int]:
    """Tokens per (user, model, bucket) of the priced, unreported calls, from the calls sent."""
    out: dict[tuple[str | None, str, str], int] = defaultdict(int)
    for c in calls:
        if not since <= c.start < until or c.reported or c.inp is None or c.model == "mystery-model-x":
            continue
        for bucket, n in zip(
            TOKEN_BUCKETS,
            (
                c.inp - c.cache_read - c.cache_write,
                c.cache_read,
                c.cache_write,
                c.out - c.reasoning,
                c.reasoning,
            ),
            strict=True,
        ):
            if n:
                out[(c.user, c.model, bucket)] += n
    return out


class TestReconciles:
    @pytest.mark.parametrize("tz", [None, KOLKATA])
    def test_to_the_nano_with_users_and_totals(self, con: duckdb.DuckDBPyConnection, tz: str | None) -> None:
        """Per user the line amounts sum to users()' cost_usd for the same window, the users are
        those users() lists, and the total is the sum over users and totals()' cost."""
        got = full(con, MONTH, tz)
        if tz is None:
            assert (got.since, got.until) == (START, END)
        else:
            assert (got.since, got.until) == (
                datetime(2026, 9, 30, 18, 30, tzinfo=UTC),
                datetime(2026, 10, 31, 18, 30, tzinfo=UTC),
            )
        page = users(con, got.since, got.until, limit=10_000)
        by_id = {u.user_id: u for u in page.users}
        assert [u.user_id for u in got.users] == sorted(by_id, key=lambda u: (u is None, u or ""))
        assert got.totals.users == len(got.users) == page.total
        for u in got.users:
            amounts = [line.amount_usd for line in u.lines if line.amount_usd is not None]
            assert u.cost_usd == by_id[u.user_id].cost_usd
            assert (sum(amounts, Decimal(0)) if amounts else None) == u.cost_usd
            assert u.requests == by_id[u.user_id].requests
        whole = totals(con, got.since, got.until)
        assert (
            got.totals.cost_usd
            == whole.cost_usd
            == sum((u.cost_usd or Decimal(0) for u in got.users), Decimal(0))
        )
        assert got.totals.requests == whole.requests
        assert (got.totals.revenue_usd, got.totals.margin_usd) == (None, None)

    @pytest.mark.parametrize("tz", [None, KOLKATA])
    def test_token_counts_per_bucket_are_the_calls(
        self, con: duckdb.DuckDBPyConnection, tz: str | None
    ) -> None:
        """Each token line counts the tokens of its bucket the calls sent (input without cache,
        output without reasoning)."""
        got = full(con, MONTH, tz)
        lines = {
            (u.user_id, line.model, line.bucket): line.count
            for u in got.users
            for line in u.lines
            if line.bucket in TOKEN_BUCKETS
        }
        assert lines == dict(expected_counts(CALLS, got.since, got.until))

    def test_other_lines_count_requests(self, con: duckdb.DuckDBPyConnection) -> None:
        """Reported costs, unpriced calls and calls without usage are lines counted in requests."""
        got = full(con, MONTH)
        want: dict[tuple[str | None, str, str], int] = defaultdict(int)
        for c in CALLS:
            if START <= c.start < END:
                kind = (
                    "reported"
                    if c.reported
                    else "no_usage"
                    if c.inp is None
                    else "unpriced"
                    if c.model == "mystery-model-x"
                    else None
                )
                if kind:
                    want[(c.user, c.model, kind)] += 1
        lines = {
            (u.user_id, line.model, line.bucket): line.count
            for u in got.users
            for line in u.lines
            if line.bucket in ("reported", "unpriced", "no_usage")
        }
        assert lines == want
        for u in got.users:
            for line in u.lines:
                assert (line.amount_usd is None) == (line.bucket in ("unpriced", "no_usage"))

    def test_one_user_is_that_users_part_of_the_all_users_statement(
        self, con: duckdb.DuckDBPyConnection
    ) -> None:
        """A one-user statement is the same user as in the all-users one; totals are that user's."""
        everyone = {u.user_id: u for u in full(con, MONTH).users}
        one = statement(con, MONTH, "user-03", now=lambda: LATER)
        assert one.users == (everyone["user-03"],)
        assert one.totals.cost_usd == everyone["user-03"].cost_usd and one.totals.users == 1

    @pytest.mark.parametrize("tz", [None, KOLKATA])
    def test_every_user_alone_is_their_part_of_the_whole(
        self, con: duckdb.DuckDBPyConnection, tz: str | None
    ) -> None:
        """Each user's own statement (read from the days the rollups have them on when those are
        few, like edge-user's, active only at the month's edges) is their entry in the whole."""
        whole = full(con, MONTH, tz)
        for u in whole.users:
            if u.user_id is not None:
                assert statement(con, MONTH, u.user_id, tz=tz, now=lambda: LATER).users == (u,)
        edge = {u.user_id: u for u in whole.users}[EDGE_USER]
        assert edge.requests == sum(
            1 for c in CALLS if c.user == EDGE_USER and whole.since <= c.start < whole.until
        )

    def test_pages_cover_every_user_once(self, con: duckdb.DuckDBPyConnection) -> None:
        """Pages of 7 users concatenate to the whole statement; totals are the month's on each."""
        whole = full(con, MONTH)
        pages = [
            statement(con, MONTH, limit=7, offset=o, now=lambda: LATER)
            for o in range(0, whole.totals.users, 7)
        ]
        assert tuple(u for p in pages for u in p.users) == whole.users
        assert all(p.totals == whole.totals for p in pages)

    def test_unit_prices(self, con: duckdb.DuckDBPyConnection) -> None:
        """gpt-4o's input line is at 2.5 USD per million tokens, exactly (a whole nano-dollar rate);
        a unit price is amount / count x 10^6 on every token line."""
        got = full(con, MONTH)
        seen = 0
        for u in got.users:
            for line in u.lines:
                if line.unit == "mtok":
                    assert line.unit_price_usd is not None and line.amount_usd is not None
                    assert abs(line.unit_price_usd * line.count / 1_000_000 - line.amount_usd) < Decimal(
                        "1e-9"
                    )
                if line.model == "gpt-4o" and line.bucket == "input":
                    assert (line.unit_price_usd, line.unit_price_basis) == (Decimal("2.5"), "exact")
                    seen += 1
        assert seen

    def test_json_round_trip(self, con: duckdb.DuckDBPyConnection) -> None:
        got = full(con, MONTH, KOLKATA)
        assert from_json(Statement, to_json(got)) == got


class TestUnitPriceBasis:
    def test_rates_that_differ_make_an_average_unit_price(self, tmp_path: Path) -> None:
        """A price of 0.00025 USD per million tokens (a quarter nano-dollar a token): 10 tokens cost
        2 nano-dollars (2.5 rounded half to even), 13 tokens 3 (3.25): the line is 5 nano-dollars
        for 23 tokens, its unit price the average 5 / 23 x 10^6 nano-dollars, marked "average"; an
        output rate of 2 USD per million tokens is "exact"; a fee of 0.000001 USD a request is a
        "request" line counted in requests."""
        prices = tmp_path / "prices.toml"
        prices.write_text(
            '[[model]]\nname = "m"\ninput_mtok = 0.00025\noutput_mtok = 2\nrequest = 0.000001\n'
        )
        calls = [
            span(chat(user="u", model="m", inp=10, out=1), start=BASE),
            span(chat(user="u", model="m", inp=13, out=2), start=BASE + 10**9),
        ]
        with holding(tmp_path, calls, price_file=str(prices)) as (_, con):
            (user,) = statement(con, MONTH, "u", now=lambda: LATER).users
        lines = {line.bucket: line for line in user.lines}
        assert (lines["input"].count, lines["input"].amount_usd) == (23, Decimal("0.000000005"))
        assert lines["input"].unit_price_basis == "average"
        assert lines["input"].unit_price_usd == Decimal("0.000217391304347826")  # 5/23 x 10^-3, 18 places
        assert (lines["output"].unit_price_usd, lines["output"].unit_price_basis) == (Decimal(2), "exact")
        assert (lines["request"].count, lines["request"].unit, lines["request"].amount_usd) == (
            2,
            "request",
            Decimal("0.000002"),
        )
        assert (lines["request"].unit_price_usd, lines["request"].unit_price_basis) == (
            Decimal("0.000001"),
            "exact",
        )
        assert user.cost_usd == Decimal("0.000008005")  # 5 + 3 x 2000 + 2 x 1000 nano-dollars


class TestCounts:
    def test_counts_are_those_pricing_applied(self, tmp_path: Path) -> None:
        """A reasoning count above the output count is cut to it, as pricing does: o3-mini with 10
        output and 50 reasoning tokens bills 10 reasoning tokens and no other output; an
        Anthropic span counting input without cache (cache added to input) bills its 12
        uncached input tokens as input and its cache as cache_read and cache_write."""
        over = chat(
            user="u", model="o3-mini", inp=100, out=10, **{"gen_ai.usage.reasoning.output_tokens": 50}
        )
        calls = [span(over, start=BASE), span({**ANTHROPIC_OPENLLMETRY, "user.id": "u"}, start=BASE)]
        with holding(tmp_path, calls) as (_, con):
            (user,) = statement(con, MONTH, "u", now=lambda: LATER).users
        counts = {(line.model, line.bucket): line.count for line in user.lines}
        assert counts == {
            ("claude-sonnet-4-20250514", "input"): 12,
            ("claude-sonnet-4-20250514", "cache_read"): 5000,
            ("claude-sonnet-4-20250514", "cache_write"): 1000,
            ("claude-sonnet-4-20250514", "output"): 300,
            ("o3-mini", "input"): 100,
            ("o3-mini", "reasoning"): 10,
        }
        assert sum(line.amount_usd or 0 for line in user.lines) == user.cost_usd


class TestSnapshot:
    def test_rows_committed_while_it_reads_change_nothing(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A statement reads one snapshot: a request committed between its reads (the users'
        costs, then the page's lines) shows neither in the user's cost nor in their lines, which
        still sum to that cost."""
        read_lines = statements._lines
        with holding(tmp_path, [span(chat(user="u", model="gpt-4o", inp=1000, out=100), start=BASE)]) as (
            app,
            con,
        ):

            def lines_after_a_commit(*args: Any) -> Any:
                late = span(chat(user="u", model="gpt-4o", inp=5000, out=100), start=BASE + 10**9)
                assert app.ingestor.export(request([late])).rejected_spans == 0
                return read_lines(*args)

            monkeypatch.setattr(statements, "_lines", lines_after_a_commit)
            (user,) = statement(con, MONTH, now=lambda: LATER).users
        assert user.requests == 1 and user.cost_usd == Decimal("0.0035")
        assert sum(line.amount_usd or 0 for line in user.lines) == user.cost_usd


class TestRevenue:
    def test_revenue_margin_and_revenue_only_users(
        self, con: duckdb.DuckDBPyConnection, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With a revenue source: a user's revenue as the revenue query gives it (0 without any),
        margin = revenue - cost, a user with revenue and no request in the month listed without
        line items, totals summing every user's."""
        keys = dict(con.execute("SELECT user_id, user_key FROM users WHERE user_id IS NOT NULL").fetchall())
        september = full(con, "2026-09")  # only the last hours of September hold requests
        active = {u.user_id for u in september.users}
        quiet = sorted(set(keys) - active)[0]
        (paying, *_) = sorted(u for u in active if u is not None)
        known = {paying: Decimal("20"), quiet: Decimal("-3.5")}
        monkeypatch.setattr(statements, "revenue_by_user_id", lambda c, w, **only: dict(known))
        got = full(con, "2026-09")
        by_id = {u.user_id: u for u in got.users}
        assert set(by_id) == active | {quiet}
        assert (by_id[paying].revenue_usd, by_id[paying].margin_usd) == (
            Decimal(20),
            Decimal(20) - (by_id[paying].cost_usd or 0),
        )
        assert (by_id[quiet].requests, by_id[quiet].lines, by_id[quiet].cost_usd) == (0, (), None)
        assert (by_id[quiet].revenue_usd, by_id[quiet].margin_usd) == (Decimal("-3.5"), Decimal("-3.5"))
        others = [u for u in got.users if u.user_id not in known]
        assert others and all(u.revenue_usd == 0 and u.margin_usd == -(u.cost_usd or 0) for u in others)
        assert got.totals.revenue_usd == Decimal("16.5")
        assert got.totals.margin_usd == Decimal("16.5") - got.totals.cost_usd
        assert got.totals.users == len(got.users) == len(active) + 1


class TestArguments:
    @pytest.mark.parametrize("month", ["2026-13", "2026-00", "2026-1", "november", "", "2026-11-01"])
    def test_a_bad_month_is_refused(self, con: duckdb.DuckDBPyConnection, month: str) -> None:
        with pytest.raises(InvalidInput, match="month"):
            statement(con, month)

    def test_unknown_user_and_zone(self, con: duckdb.DuckDBPyConnection) -> None:
        with pytest.raises(NotFound):
            statement(con, MONTH, "nobody")
        with pytest.raises(InvalidInput, match="tz"):
            statement(con, MONTH, tz="Mars/Olympus")

    def test_a_quiet_month_of_a_known_user_is_empty(self, con: duckdb.DuckDBPyConnection) -> None:
        got = statement(con, "2026-06", "user-03", now=lambda: LATER)
        assert [(u.user_id, u.requests, u.lines, u.cost_usd) for u in got.users] == [("user-03", 0, (), None)]


class TestOldRows:
    def test_rows_of_a_schema_10_file_are_total_lines(self, tmp_path: Path) -> None:
        """A file written before the split (schema 10) upgrades; its priced rows show as one "total"
        line per model, the new rows by bucket, and the statement still reconciles."""
        db = tmp_path / "um.duckdb"
        svc = Service(db)
        app = svc.start()
        old_start = int(datetime(2026, 10, 5, tzinfo=UTC).timestamp() * 1e9)
        app.ingestor.export(
            request([span(chat(user="old", model="gpt-4o", inp=1000, out=100), start=old_start)])
        )
        svc.stop()
        con = duckdb.connect(str(db))
        try:
            con.execute("BEGIN")
            for name in SPLIT_COLUMNS:
                con.execute(f"ALTER TABLE requests DROP COLUMN {name}")
            exclude = ", ".join(SPLIT_COLUMNS)
            con.execute(f"CREATE TABLE pending10 AS SELECT * EXCLUDE ({exclude}) FROM pending")
            con.execute("DROP TABLE pending")
            con.execute("ALTER TABLE pending10 RENAME TO pending")
            con.execute("UPDATE meta SET value = '10' WHERE key = 'schema_version'")
            con.execute("COMMIT")
        finally:
            con.close()
        app = svc.start()
        app.ingestor.export(
            request([span(chat(user="old", model="gpt-4o", inp=1000, out=100), start=old_start + 10**9)])
        )
        svc.stop()
        con = duckdb.connect(str(db), read_only=True)
        try:
            assert [r[0] for r in con.execute("DESCRIBE pending").fetchall()][-len(PENDING_COLUMNS) - 6 :][
                :6
            ] == list(SPLIT_COLUMNS)
            got = statement(con, MONTH, "old", now=lambda: LATER)
            (user,) = got.users
            assert [(line.bucket, line.count) for line in user.lines] == [
                ("input", 1000),
                ("output", 100),
                ("total", 1),
            ]
            assert (
                sum(line.amount_usd or 0 for line in user.lines)
                == user.cost_usd
                == users(con, got.since, got.until).users[0].cost_usd
            )
            # 1000 x 2.5 + 100 x 10 USD per million tokens, each request
            assert user.cost_usd == 2 * Decimal("0.0035")
        finally:
            con.close()
