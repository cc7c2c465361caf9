"""The query layer against a real service holding known spans; expectations come from query_data."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import Service
from query_data import DAY0, UNPRICED, USERS, build, in_window, per_user, requests_for

import user_metrics
from user_metrics.errors import InvalidInput, NotFound
from user_metrics.query.properties import by_property as query_by_property
from user_metrics.query.properties import property_keys as query_property_keys
from user_metrics.query.results import SORTABLE_USER_FIELDS, UserStats
from user_metrics.query.timeseries import timeseries as query_timeseries
from user_metrics.query.totals import totals as query_totals
from user_metrics.query.users import recent_requests as query_recent_requests
from user_metrics.query.users import user as query_user
from user_metrics.query.users import users as query_users
from user_metrics.store.writer import Store

TRUTHS = build()
START, END = DAY0, DAY0 + timedelta(days=4)
WINDOWS = {
    "whole days": (DAY0, DAY0 + timedelta(days=4)),
    "ragged both ends": (DAY0 + timedelta(hours=5, minutes=7), DAY0 + timedelta(days=3, hours=13, seconds=1)),
    "inside one day": (DAY0 + timedelta(days=1, hours=2), DAY0 + timedelta(days=1, hours=20)),
    "one microsecond before midnight": (
        DAY0 + timedelta(days=1) - timedelta(microseconds=1),
        DAY0 + timedelta(days=1),
    ),
    "from midnight": (DAY0 + timedelta(days=2), DAY0 + timedelta(days=2, hours=1)),
    "ends one microsecond after midnight": (DAY0, DAY0 + timedelta(days=2, microseconds=1)),
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("query") / "um.duckdb")
    app = svc.start()
    for req in requests_for(TRUTHS):
        result = app.ingestor.export(req)
        assert result.rejected_spans == 0, result.error_message
    yield svc
    svc.stop()


@pytest.fixture
def con(served: Service) -> Iterator[duckdb.DuckDBPyConnection]:
    assert served.app is not None
    reader = served.app.store.reader()
    yield reader
    reader.close()


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def check_user(got: UserStats, want: dict[str, Any]) -> None:
    assert got.requests == want["requests"]
    assert got.errors == want["errors"]
    assert got.input_tokens == want["input_tokens"]
    assert got.output_tokens == want["output_tokens"]
    assert got.total_tokens == want["input_tokens"] + want["output_tokens"]
    assert got.cost_usd == want["cost_usd"]
    assert got.unpriced_requests == want["unpriced_requests"]
    assert got.first_active == want["first"] and got.last_active == want["last"]
    assert got.active_days == len(want["days"])
    assert got.avg_requests_per_active_day == pytest.approx(want["requests"] / len(want["days"]))
    assert got.avg_tokens_per_request == pytest.approx(
        (want["input_tokens"] + want["output_tokens"]) / want["requests"]
    )
    assert got.avg_latency_ms == pytest.approx(sum(want["durations"]) / len(want["durations"]))
    assert got.error_rate == pytest.approx(want["errors"] / want["requests"])
    for value, q in ((got.p50_latency_ms, 0.5), (got.p95_latency_ms, 0.95)):
        assert value == pytest.approx(nearest_rank(want["durations"], q), rel=0.045)
    assert {(m.provider, m.model): m.requests for m in got.models} == dict(want["models"])


class TestUsers:
    @pytest.mark.parametrize("name", WINDOWS)
    def test_every_field_of_every_user_matches_the_spans_in_the_window(
        self, con: duckdb.DuckDBPyConnection, name: str
    ) -> None:
        """Whole days come from rollups and ragged edges from rows; together they are exact."""
        since, until = WINDOWS[name]
        want = per_user(in_window(TRUTHS, since, until))
        page = query_users(con, since, until, limit=100)
        assert page.total == len(want)
        assert {u.user_id for u in page.users} == set(want)
        for got in page.users:
            check_user(got, want[got.user_id])

    def test_requests_without_a_user_are_one_row_with_a_null_id(self, con: duckdb.DuckDBPyConnection) -> None:
        """Anonymous requests are counted in their own row, never mixed into a real user."""
        page = query_users(con, START, END)
        anonymous = [u for u in page.users if u.user_id is None]
        assert len(anonymous) == 1
        assert anonymous[0].requests == sum(1 for t in TRUTHS if t.user is None)

    def test_a_user_with_only_unpriced_requests_has_no_cost_rather_than_zero(
        self, con: duckdb.DuckDBPyConnection
    ) -> None:
        """cost_usd is None, not $0, when nothing the user did had a known price."""
        page = query_users(con, START, END, model=UNPRICED)
        assert page.users
        for u in page.users:
            assert u.cost_usd is None and u.unpriced_requests == u.requests

    @pytest.mark.parametrize(
        "filters",
        [
            {"plan": "pro"},
            {"model": "gpt-4o-mini"},
            {"service": "batch-worker"},
            {"environment": "staging"},
            {"plan": "free", "model": "claude-sonnet-4-5", "environment": "prod"},
        ],
    )
    def test_filters_count_only_matching_requests(
        self, con: duckdb.DuckDBPyConnection, filters: dict[str, str]
    ) -> None:
        """Property, model, service and environment filters apply to rollups and edge rows alike."""
        since, until = WINDOWS["ragged both ends"]
        want = per_user(in_window(TRUTHS, since, until, **filters))
        props = {"plan": filters["plan"]} if "plan" in filters else None
        page = query_users(
            con,
            since,
            until,
            properties=props,
            model=filters.get("model"),
            service=filters.get("service"),
            environment=filters.get("environment"),
        )
        assert page.total == len(want)
        for got in page.users:
            check_user(got, want[got.user_id])

    @pytest.mark.parametrize("field", SORTABLE_USER_FIELDS)
    @pytest.mark.parametrize("descending", [True, False])
    def test_sorting_by_any_field_orders_the_users(
        self, con: duckdb.DuckDBPyConnection, field: str, descending: bool
    ) -> None:
        """Rows come in the field's order; users with no value for it come last."""
        page = query_users(con, START, END, sort=("-" if descending else "") + field)
        values = [getattr(u, field) for u in page.users]
        present = [v for v in values if v is not None]
        assert values[: len(present)] == present, "missing values sort last"
        assert present == sorted(present, reverse=descending)
        assert len(page.users) == page.total == len(per_user(TRUTHS))

    def test_pages_cover_every_user_once(self, con: duckdb.DuckDBPyConnection) -> None:
        """limit/offset pages concatenate to the full sorted list; total is the same on every page."""
        full = query_users(con, START, END, sort="-requests").users
        pages = [query_users(con, START, END, sort="-requests", limit=3, offset=o) for o in range(0, 12, 3)]
        assert {p.total for p in pages} == {len(full)}
        assert [u.user_id for p in pages for u in p.users] == [u.user_id for u in full]

    def test_an_offset_past_the_end_gives_an_empty_page_and_the_total(
        self, con: duckdb.DuckDBPyConnection
    ) -> None:
        """Paging past the last user is not an error."""
        page = query_users(con, START, END, offset=1000)
        assert page.users == () and page.total == len(per_user(TRUTHS))

    @pytest.mark.parametrize(
        ("kwargs", "mentions"),
        [
            ({"since": "yesterday"}, "since"),
            ({"until": "2026-13-01"}, "until"),
            ({"since": END, "until": START}, "before"),
            ({"sort": "-nonsense"}, "sort"),
            ({"limit": 0}, "limit"),
            ({"offset": -1}, "offset"),
            ({"properties": ["plan"]}, "KEY=VALUE"),
        ],
    )
    def test_bad_arguments_say_which_and_why(
        self, con: duckdb.DuckDBPyConnection, kwargs: dict[str, Any], mentions: str
    ) -> None:
        """Each bad argument raises InvalidInput naming it."""
        args = {"since": START, "until": END} | kwargs
        with pytest.raises(InvalidInput, match=mentions):
            query_users(con, **args)

    @pytest.mark.parametrize(
        ("search", "want"),
        [
            ("O'BR", {"o'brien"}),
            ("b", {"bob", "o'brien", "a/b?c=d&e#f", "x'); DROP TABLE requests; --"}),
            ("%", set()),  # LIKE wildcards are plain characters
            ("_", set()),
            ("🙂", {"zoë 🙂"}),
            ("nobody", set()),
        ],
    )
    @pytest.mark.parametrize("sort", ["-cost_usd", "user_id", "-p95_latency_ms"])
    def test_search_keeps_the_users_whose_id_contains_the_text(
        self, con: duckdb.DuckDBPyConnection, search: str, want: set[str], sort: str
    ) -> None:
        """Case-insensitive substring of the id, on both sort paths; total counts the matches."""
        page = query_users(con, START, END, search=search, sort=sort)
        assert {u.user_id for u in page.users} == want and page.total == len(want)
        assert query_users(con, START, END, search=search, sort=sort, offset=50).total == len(want)

    def test_a_blank_search_is_no_search(self, con: duckdb.DuckDBPyConnection) -> None:
        """An empty or blank search box lists everyone, the null user included."""
        assert query_users(con, START, END, search="  ").total == len(per_user(TRUTHS))


class TestRecentRequests:
    @pytest.mark.parametrize("user_id", ["alice", "zoë 🙂", None])
    @pytest.mark.parametrize("limit", [1, 7, 1000])
    def test_the_latest_requests_newest_first(
        self, con: duckdb.DuckDBPyConnection, user_id: str | None, limit: int
    ) -> None:
        """Exactly the user's newest `limit` spans in the window, with their own figures."""
        since, until = WINDOWS["ragged both ends"]
        mine = sorted(
            (t for t in in_window(TRUTHS, since, until) if t.user == user_id), key=lambda t: t.start
        )
        want = mine[::-1][:limit]
        got = query_recent_requests(con, user_id, since, until, limit=limit)
        assert got.user_id == user_id and (got.since, got.until) == (since, until)
        assert [r.start_time for r in got.requests] == [t.start for t in want]
        for r, t in zip(got.requests, want, strict=True):
            assert (r.model, r.input_tokens, r.output_tokens, r.total_tokens) == (
                t.model,
                t.input_tokens,
                t.output_tokens,
                t.input_tokens + t.output_tokens,
            )
            assert r.cost_usd == t.cost and r.status == ("error" if t.error else "ok")
            assert r.properties == ({"plan": t.plan} if t.plan else {})
            assert r.service_name == t.service and r.duration_ms == pytest.approx(t.duration_ms)

    def test_filters_apply(self, con: duckdb.DuckDBPyConnection) -> None:
        """A property filter keeps only the matching requests."""
        got = query_recent_requests(con, "alice", START, END, limit=1000, properties=["plan=free"])
        want = [t for t in in_window(TRUTHS, START, END, plan="free") if t.user == "alice"]
        assert len(got.requests) == len(want) > 0
        assert {r.properties["plan"] for r in got.requests} == {"free"}

    def test_bad_limit_and_unknown_user(self, con: duckdb.DuckDBPyConnection) -> None:
        with pytest.raises(InvalidInput, match="limit"):
            query_recent_requests(con, "alice", START, END, limit=0)
        with pytest.raises(InvalidInput, match="limit"):
            query_recent_requests(con, "alice", START, END, limit=1001)
        with pytest.raises(NotFound):
            query_recent_requests(con, "nobody-at-all", START, END)

    def test_property_keys(self, con: duckdb.DuckDBPyConnection) -> None:
        """Every key recorded, here just plan."""
        assert query_property_keys(con).keys == ("plan",)


class TestUser:
    @pytest.mark.parametrize("user_id", USERS)
    def test_one_user_matches_including_odd_ids(self, con: duckdb.DuckDBPyConnection, user_id: str) -> None:
        """Quotes, unicode, spaces, slashes and SQL in ids are just ids."""
        since, until = WINDOWS["ragged both ends"]
        want = per_user(in_window(TRUTHS, since, until))
        check_user(query_user(con, user_id, since, until), want[user_id])

    def test_models_carry_requests_and_exact_cost(self, con: duckdb.DuckDBPyConnection) -> None:
        """The per-model breakdown sums to the user's totals."""
        got = query_user(con, "alice", START, END)
        want: dict[str, Decimal | None] = {}
        for t in in_window(TRUTHS, START, END):
            if t.user == "alice" and t.cost is not None:
                want[t.model] = want.get(t.model, Decimal(0)) + t.cost
        assert {m.model: m.cost_usd for m in got.models if m.cost_usd is not None} == want
        assert sum(m.requests for m in got.models) == got.requests

    def test_an_unknown_user_is_not_found(self, con: duckdb.DuckDBPyConnection) -> None:
        """A user id never seen raises NotFound."""
        with pytest.raises(NotFound):
            query_user(con, "nobody-at-all", START, END)

    def test_a_known_user_with_nothing_in_the_window_has_zeros(self, con: duckdb.DuckDBPyConnection) -> None:
        """Known but idle: zero requests, no cost, no first/last activity."""
        got = query_user(con, "alice", END + timedelta(days=10), END + timedelta(days=11))
        assert (got.requests, got.cost_usd, got.first_active, got.models) == (0, None, None, ())


class TestTimeseries:
    @pytest.mark.parametrize("bucket", ["hour", "day"])
    @pytest.mark.parametrize("user_id", [None, "alice", "zoë 🙂"])
    def test_buckets_hold_exact_counts_and_empty_ones_are_present(
        self, con: duckdb.DuckDBPyConnection, bucket: str, user_id: str | None
    ) -> None:
        """One point per UTC bucket from the one holding since to the one holding until."""
        since, until = WINDOWS["ragged both ends"]
        series = query_timeseries(con, user_id, since, until, bucket=bucket)
        step = timedelta(hours=1) if bucket == "hour" else timedelta(days=1)
        first = since.replace(minute=0, second=0, microsecond=0)
        if bucket == "day":
            first = first.replace(hour=0)
        starts = [p.start for p in series.points]
        assert starts[0] == first and all(b - a == step for a, b in zip(starts, starts[1:], strict=False))
        assert starts[-1] < until <= starts[-1] + step
        for point in series.points:
            lo, hi = max(point.start, since), min(point.start + step, until)
            want = [t for t in in_window(TRUTHS, lo, hi) if user_id is None or t.user == user_id]
            assert point.requests == len(want)
            assert point.errors == sum(t.error for t in want)
            assert point.total_tokens == sum(t.input_tokens + t.output_tokens for t in want)
            assert point.cost_usd == sum((t.cost for t in want if t.cost is not None), Decimal(0))
        assert any(p.requests == 0 for p in series.points) or bucket == "day"

    def test_a_bad_bucket_is_refused(self, con: duckdb.DuckDBPyConnection) -> None:
        """bucket must be hour or day."""
        with pytest.raises(InvalidInput, match="bucket"):
            query_timeseries(con, None, START, END, bucket="week")


class TestByProperty:
    def test_per_value_users_requests_cost_and_extremes(self, con: duckdb.DuckDBPyConnection) -> None:
        """Average cost per user and the costliest and cheapest users, per plan."""
        since, until = WINDOWS["ragged both ends"]
        rows = in_window(TRUTHS, since, until)
        got = {v.value: v for v in query_by_property(con, "plan", since, until).values}
        assert set(got) == {t.plan for t in rows}
        for value, item in got.items():
            mine = [t for t in rows if t.plan == value]
            cost: dict[str | None, Decimal] = {}
            for t in mine:
                cost[t.user] = cost.get(t.user, Decimal(0)) + (t.cost or 0)
            named = {u: c for u, c in cost.items() if u is not None}
            assert item.requests == len(mine)
            assert item.users == len(named)
            assert item.cost_usd == sum(cost.values(), Decimal(0))
            assert item.unpriced_requests == sum(t.cost is None for t in mine)
            if named:
                assert item.avg_cost_per_user == (sum(named.values()) / len(named)).quantize(Decimal("1e-9"))
                assert item.most_costly_user_cost_usd == max(named.values())
                assert cost[item.most_costly_user] == max(named.values())
                assert cost[item.least_costly_user] == min(named.values())

    def test_property_names_are_case_insensitive(self, con: duckdb.DuckDBPyConnection) -> None:
        """Names are stored lower-cased, so PLAN finds plan."""
        assert query_by_property(con, "PLAN", START, END) == query_by_property(con, "plan", START, END)

    def test_a_limit_keeps_the_costliest_values_and_says_how_many_there_were(
        self, con: duckdb.DuckDBPyConnection
    ) -> None:
        """limit=n answers the first n values of the full answer; total_values and truncated tell."""
        full = query_by_property(con, "plan", START, END)
        assert full.total_values == len(full.values) == 4 and not full.truncated  # three plans and unset
        assert [v.cost_usd for v in full.values] == sorted((v.cost_usd for v in full.values), reverse=True)
        for limit in (1, 3):
            cut = query_by_property(con, "plan", START, END, limit=limit)
            assert cut.values == full.values[:limit] and cut.total_values == 4 and cut.truncated
        assert query_by_property(con, "plan", START, END, limit=4) == full
        empty = query_by_property(con, "plan", END + timedelta(days=1), END + timedelta(days=2), limit=1)
        assert (empty.values, empty.total_values, empty.truncated) == ((), 0, False)

    @pytest.mark.parametrize("limit", [0, -1, 10_001])
    def test_a_limit_out_of_range_is_refused(self, con: duckdb.DuckDBPyConnection, limit: int) -> None:
        """limit must be 1 to 10,000."""
        with pytest.raises(InvalidInput, match="limit"):
            query_by_property(con, "plan", START, END, limit=limit)


class TestTotals:
    @pytest.mark.parametrize("name", WINDOWS)
    def test_totals_match_the_spans(self, con: duckdb.DuckDBPyConnection, name: str) -> None:
        """Users, anonymous requests, tokens and cost of the whole application."""
        since, until = WINDOWS[name]
        rows = in_window(TRUTHS, since, until)
        got = query_totals(con, since, until)
        assert got.requests == len(rows)
        assert got.users == len({t.user for t in rows if t.user is not None})
        assert got.anonymous_requests == sum(t.user is None for t in rows)
        assert got.errors == sum(t.error for t in rows)
        assert got.total_tokens == sum(t.input_tokens + t.output_tokens for t in rows)
        assert got.cost_usd == sum((t.cost for t in rows if t.cost is not None), Decimal(0))
        assert got.unpriced_requests == sum(t.cost is None for t in rows)


class TestClients:
    def test_the_file_and_the_server_answer_identically(self, served: Service) -> None:
        """connect(url=...) while serving equals connect(path=...) once the server is stopped."""
        assert served.app is not None
        since, until = WINDOWS["ragged both ends"]
        calls = [
            ("users", (since, until), {"sort": "-requests", "properties": {"plan": "pro"}}),
            ("user", ("zoë 🙂", since, until), {}),
            ("timeseries", ("a/b?c=d&e#f", since, until), {"bucket": "hour"}),
            ("timeseries", (None, since, until), {}),
            ("by_property", ("plan", since, until), {}),
            ("totals", (since, until), {"model": "gpt-4o-mini"}),
            ("users", (since, until), {"search": "B", "sort": "user_id"}),
            ("recent_requests", ("o'brien", since, until), {"limit": 5, "properties": ["plan=pro"]}),
            ("property_keys", (), {}),
        ]
        with user_metrics.connect(url=served.app.api_url) as remote:
            answers = [getattr(remote, name)(*args, **kwargs) for name, args, kwargs in calls]
            sql = remote.sql("SELECT user_id, sum(cost_usd) FROM requests GROUP BY 1 ORDER BY 1")
        served.stop()
        try:
            with user_metrics.connect(path=served.db) as local:
                assert [getattr(local, name)(*args, **kwargs) for name, args, kwargs in calls] == answers
                assert local.sql("SELECT user_id, sum(cost_usd) FROM requests GROUP BY 1 ORDER BY 1") == sql
        finally:
            served.start()

    @pytest.mark.parametrize("name", ["user", "recent_requests"])
    def test_the_server_client_refuses_the_anonymous_user_by_name(self, served: Service, name: str) -> None:
        """The HTTP API has no address for "no user id": a clear InvalidInput, before any request."""
        assert served.app is not None
        with (
            user_metrics.connect(url=served.app.api_url) as remote,
            pytest.raises(InvalidInput, match="by id"),
        ):
            getattr(remote, name)(None)


class TestRollups:
    def test_resent_spans_are_not_counted_twice(self, tmp_path: Path) -> None:
        """A replay mixed with new spans adds only the new ones to the aggregates."""
        first, second = TRUTHS[:150], TRUTHS[150:]
        svc = Service(tmp_path / "um.duckdb")
        app = svc.start()
        try:
            reqs = requests_for(first)
            for req in reqs:
                app.ingestor.export(req)
            for req in reqs + requests_for(second):  # the first batch again, then the rest
                app.ingestor.export(req)
            with app.store.reader() as con:
                got = query_totals(con, START, END)
        finally:
            svc.stop()
        assert got.requests == len(TRUTHS)
        assert got.cost_usd == sum((t.cost for t in TRUTHS if t.cost is not None), Decimal(0))

    def test_a_schema_1_database_gets_its_rollups_on_open(self, tmp_path: Path) -> None:
        """Opening a file written before rollups existed builds them from its requests."""
        db = tmp_path / "old.duckdb"
        svc = Service(db)
        app = svc.start()
        for req in requests_for(TRUTHS):
            app.ingestor.export(req)
        svc.stop()
        con = duckdb.connect(str(db))
        for table in ("rollup_user_day", "rollup_latency_day", "rollup_hour", "dims", "users"):
            con.execute(f"DROP TABLE {table}")
        con.execute("DROP SEQUENCE user_key_seq")
        con.execute("DROP SEQUENCE dims_id_seq")
        con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
        con.close()
        svc.start()
        svc.stop()
        with user_metrics.connect(path=db) as client:
            assert client.totals(START, END).requests == len(TRUTHS)
            want = per_user(in_window(TRUTHS, START, END))
            for got in client.users(START, END).users:
                check_user(got, want[got.user_id])

    def test_a_newer_schema_is_refused(self, tmp_path: Path) -> None:
        """A file from a later version is not silently rewritten."""
        db = tmp_path / "new.duckdb"
        svc = Service(db)
        svc.start()
        svc.stop()
        con = duckdb.connect(str(db))
        con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
        con.close()
        from user_metrics.errors import Unavailable
        from user_metrics.stats import Stats

        with pytest.raises(Unavailable, match="schema version 99"):
            Store(db, Stats())


class TestDecompose:
    @pytest.mark.parametrize("seed", range(20))
    def test_pieces_tile_the_window_exactly(self, seed: int) -> None:
        """Whole days, then whole hours, then raw microseconds: contiguous, no gap, no overlap."""
        import random

        from user_metrics.query.cells import PER_USER, decompose

        rng = random.Random(seed)
        since = rng.randrange(10**15, 2 * 10**15)
        until = (
            since
            + rng.choice([1, 59 * 10**6, 3 * 3600 * 10**6, 86_400 * 10**6, 40 * 86_400 * 10**6])
            + rng.randrange(10**9)
        )
        pieces = decompose(since, until, PER_USER)
        edges = [
            (first * level.unit_us, last * level.unit_us) if level else (first, last)
            for level, first, last in pieces
        ]
        assert edges[0][0] == since and edges[-1][1] == until
        assert all(a[1] == b[0] for a, b in zip(edges, edges[1:], strict=False))
        levels = [level.table if level else "raw" for level, _, _ in pieces]
        assert levels.count("rollup_user_day") <= 1 and levels.count("raw") <= 2
        # Coarsest in the middle: raw only at the ends, hours next to them, days inside.
        rank = [{"raw": 0, "rollup_user_hour": 1, "rollup_user_day": 2}[x] for x in levels]
        top = rank.index(max(rank))
        assert rank[: top + 1] == sorted(rank[: top + 1]) and rank[top:] == sorted(rank[top:], reverse=True)


class TestCompaction:
    def test_merging_fragments_changes_no_answer_and_shrinks_the_rollups(self, tmp_path: Path) -> None:
        """Many small commits leave one rollup row per cell and commit; compaction merges them exactly."""
        from user_metrics.ingest.attributes import compile_conventions
        from user_metrics.ingest.ingestor import Ingestor
        from user_metrics.ingest.pricing import Pricer
        from user_metrics.stats import Stats

        db = tmp_path / "um.duckdb"
        stats = Stats()
        store = Store(db, stats, compact_after_rows=10**9, compact_after_seconds=10**9)
        ingestor = Ingestor(compile_conventions((), 4096), Pricer([]), store, stats)
        for req in requests_for(TRUTHS, per_request=7):  # ~60 commits
            ingestor.export(req)
        since, until = WINDOWS["ragged both ends"]
        with store.reader() as con:
            before = (query_users(con, since, until), query_totals(con, since, until))
            fragmented = con.execute("SELECT count(*) FROM rollup_user_day").fetchone()[0]
            cells = con.execute(
                "SELECT count(*) FROM (SELECT DISTINCT day, user_key, dims_id FROM rollup_user_day)"
            ).fetchone()[0]
        assert fragmented > cells, "small commits should leave several rows for some cells"
        store.close()  # compacts what is left, then checkpoints
        assert stats.compactions == 1 and stats.rollup_rows_merged > 0
        with user_metrics.connect(path=db) as client:
            assert (client.users(since, until), client.totals(since, until)) == before
        con = duckdb.connect(str(db), read_only=True)
        try:
            for table, keys in (
                ("rollup_user_day", "day, user_key, dims_id"),
                ("rollup_user_hour", "hour, user_key, dims_id"),
                ("rollup_hour", "hour, dims_id"),
                ("rollup_latency_day", "day, user_key, dims_id, bucket"),
                ("user_totals", "user_key"),
                ("dims_totals", "dims_id"),
                ("dims_durations", "dims_id, le"),
            ):
                rows, distinct = con.execute(
                    f"SELECT count(*), count(DISTINCT ({keys})) FROM {table}"
                ).fetchone()
                assert rows == distinct, table
        finally:
            con.close()

    def test_the_writer_compacts_as_it_goes(self, tmp_path: Path) -> None:
        """Past compact_after_rows the writer compacts between commits, and answers stay exact."""
        from user_metrics.ingest.attributes import compile_conventions
        from user_metrics.ingest.ingestor import Ingestor
        from user_metrics.ingest.pricing import Pricer
        from user_metrics.stats import Stats

        stats = Stats()
        store = Store(tmp_path / "um.duckdb", stats, compact_after_rows=50)
        ingestor = Ingestor(compile_conventions((), 4096), Pricer([]), store, stats)
        try:
            for req in requests_for(TRUTHS, per_request=10):
                ingestor.export(req)
            assert stats.compactions >= 5
            with store.reader() as con:
                got = query_totals(con, START, END)
            assert got.requests == len(TRUTHS)
            assert got.cost_usd == sum((t.cost for t in TRUTHS if t.cost is not None), Decimal(0))
        finally:
            store.close()


class TestReadingWhileWriting:
    def test_readers_see_whole_commits_while_exports_and_compactions_run(self, tmp_path: Path) -> None:
        """Totals read over HTTP during ingest only grow, by whole exports, and end exact."""
        import threading

        svc = Service(tmp_path / "um.duckdb")
        app = svc.start()
        try:
            reqs = requests_for(TRUTHS, per_request=20)
            sizes = {0}
            for i in range(1, len(reqs) + 1):
                sizes.add(
                    sum(len(ss.spans) for r in reqs[:i] for rs in r.resource_spans for ss in rs.scope_spans)
                )
            done = threading.Event()

            def ingest() -> None:
                for req in reqs:
                    app.ingestor.export(req)
                done.set()

            writer = threading.Thread(target=ingest)
            writer.start()
            seen = []
            with user_metrics.connect(url=app.api_url) as client:
                while not done.is_set():
                    seen.append(client.totals(START, END).requests)
                writer.join()
                seen.append(client.totals(START, END).requests)
        finally:
            svc.stop()
        assert seen == sorted(seen) and seen[-1] == len(TRUTHS)
        assert set(seen) <= sizes, "a reader saw part of an export"
        assert len(set(seen)) >= 3, "the reader should have overlapped the ingest"
