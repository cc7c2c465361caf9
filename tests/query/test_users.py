"""query/users.py against a real service holding known spans: the users page, one user, recent requests."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import duckdb
import pytest
from query_data import UNPRICED, USERS, in_window, per_user
from query_service import END, START, TRUTHS, WINDOWS, check_user

from user_metrics.errors import InvalidInput, NotFound
from user_metrics.query.properties import property_keys as query_property_keys
from user_metrics.query.results import SORTABLE_USER_FIELDS
from user_metrics.query.users import recent_requests as query_recent_requests
from user_metrics.query.users import user as query_user
from user_metrics.query.users import users as query_users


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
            ({"since": "the day before"}, "since"),
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
