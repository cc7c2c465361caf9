"""query/whole_days.py: a window's whole UTC days, cached per user, are exact, follow every commit
(in the very statement that reads them), and stay within their bound."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from conftest import Service
from query_data import DAY0, Truth, build, in_window, per_user, requests_for
from query_service import check_user

from user_metrics.query import scope
from user_metrics.query.cells import PER_USER
from user_metrics.query.properties import by_property
from user_metrics.query.totals import totals
from user_metrics.query.users import users
from user_metrics.query.whole_days import WholeDays, cache_of
from user_metrics.store.rollups import US_PER_DAY

# Ragged at both ends, with the whole UTC days 1 and 2 of the data inside.
SINCE, UNTIL = DAY0 + timedelta(hours=5, minutes=7), DAY0 + timedelta(days=3, hours=13, seconds=1)
FIRST_DAY = int(DAY0.timestamp()) // 86400 + 1


def export(service: Service, truths: list[Truth]) -> None:
    assert service.app is not None
    for req in requests_for(truths):
        result = service.app.ingestor.export(req)
        assert result.rejected_spans == 0, result.error_message


def stored(service: Service, seed: int, count: int) -> tuple[list[Truth], Any]:
    """Store ``count`` spans of ``seed``; their truths and a reader of the store."""
    truths = build(seed=seed, count=count)
    export(service, truths)
    assert service.app is not None
    return truths, service.app.store.reader()


def late(seed: int, count: int = 30) -> list[Truth]:
    """Spans of a new seed, all on the whole day 2 of the window (as late spans would arrive)."""
    return [
        replace(t, start=DAY0 + timedelta(days=2, seconds=i * 97 + 1))
        for i, t in enumerate(build(seed, count))
    ]


def check_page(con: Any, truths: list[Truth]) -> None:
    want = per_user(in_window(truths, SINCE, UNTIL))
    page = users(con, SINCE, UNTIL, limit=100, sort="-active_days")
    assert page.total == len(want)
    for got in page.users:
        check_user(got, want[got.user_id])


class TestExact:
    def test_cached_whole_days_give_every_field_of_every_user(self, service: Service) -> None:
        """The second read takes the cached days; both are the truth."""
        truths, reader = stored(service, 3, 300)
        with reader as con:
            check_page(con, truths)
            check_page(con, truths)
            cache = cache_of(con)
            assert cache is not None and cache.builds == 1 and cache.hits >= 1

    def test_by_property_and_totals_match_the_truth_from_cached_days(self, service: Service) -> None:
        truths, reader = stored(service, 4, 300)
        inside = in_window(truths, SINCE, UNTIL)
        with reader as con:
            for _ in range(2):
                got = {v.value: (v.requests, v.users) for v in by_property(con, "plan", SINCE, UNTIL).values}
                want: dict[str | None, tuple[int, int]] = {}
                for plan in {t.plan for t in inside}:
                    rows = [t for t in inside if t.plan == plan]
                    want[plan] = (len(rows), len({t.user for t in rows if t.user is not None}))
                assert got == want
                t = totals(con, SINCE, UNTIL)
                assert t.requests == len(inside)
                assert t.users == len({x.user for x in inside if x.user is not None})

    def test_a_late_span_on_a_cached_day_counts_in_the_next_read(self, service: Service) -> None:
        """A commit on a cached day changes the day's fingerprint: the entry is built again."""
        truths, reader = stored(service, 5, 200)
        with reader as con:
            check_page(con, truths)
            more = late(seed=6)
            export(service, more)
            check_page(con, truths + more)
            cache = cache_of(con)
            assert cache is not None and cache.builds == 2

    @pytest.mark.parametrize("relation", ["cells", "latency"])
    def test_a_stale_entry_is_not_read_by_a_statement_that_sees_the_commit(
        self, service: Service, relation: str
    ) -> None:
        """A statement built on the entry before the commit reads the day cells (or the day
        latency cells) instead."""
        truths, reader = stored(service, 7, 200)
        with reader as con:
            q = scope.statement(con, SINCE, UNTIL, scope.now, None, None, None, None, whole_days=True)
            assert q.whole is not None
            more = late(seed=8)
            export(service, more)
            if relation == "cells":
                sql = f"SELECT sum(requests) AS n FROM ({q.cells(PER_USER, US_PER_DAY, whole_days=True)})"
            else:
                sql = f"SELECT sum(n) AS n FROM ({q.latency_cells(None)})"
            (row,) = scope.fetch_dicts(con, sql, q.params)
            assert row["n"] == len(in_window(truths + more, SINCE, UNTIL))

    def test_narrowing_keeps_exactly_the_rows_of_the_users_named(self, service: Service) -> None:
        """The per-user index: binary search finds each user's rows, and only theirs."""
        _, reader = stored(service, 15, 300)
        with reader as con:
            q = scope.statement(con, SINCE, UNTIL, scope.now, None, None, None, None, whole_days=True)
            assert q.whole is not None
            everyone = [k for (k,) in con.execute(f"SELECT DISTINCT user_key FROM {q.whole.name}").fetchall()]
            some = sorted(everyone)[1::2] + [10**9]  # every other user, and one with no rows
            narrow = q.whole.narrow(con, some)
            for table, full in ((narrow.name, q.whole.name), (narrow.latency, q.whole.latency)):
                got = sorted(con.execute(f"SELECT * FROM {table}").fetchall())
                want = sorted(
                    con.execute(
                        f"SELECT * FROM {full} WHERE user_key IN ({', '.join(map(str, some))})"
                    ).fetchall()
                )
                assert got == want and got

    def test_reads_during_commits_of_late_spans_are_those_of_their_snapshot(self, service: Service) -> None:
        """Every read equals the stored rows of its own snapshot, while late spans keep coming."""
        export(service, build(seed=9, count=200))
        assert service.app is not None
        stop = threading.Event()

        def write() -> None:
            seed = 100
            while not stop.is_set():
                export(service, late(seed, count=5))
                seed += 1

        writer = threading.Thread(target=write)
        writer.start()
        try:
            with service.app.store.reader() as con:
                for _ in range(15):
                    q = scope.statement(con, SINCE, UNTIL, scope.now, None, None, None, None, whole_days=True)
                    q.params |= {"since": SINCE, "until": UNTIL}
                    cells = q.cells(PER_USER, US_PER_DAY, whole_days=True)
                    (row,) = scope.fetch_dicts(
                        con,
                        f"""SELECT (SELECT sum(requests) FROM ({cells})) AS cells,
                                   (SELECT count(*) FROM requests
                                    WHERE start_time >= $since AND start_time < $until) AS rows""",
                        q.params,
                    )
                    assert row["cells"] == row["rows"]
        finally:
            stop.set()
            writer.join()


class TestBounds:
    def test_an_entry_over_the_bound_is_not_kept_and_queries_stay_exact(self, service: Service) -> None:
        _, reader = stored(service, 10, 100)
        with reader as con:
            cache = WholeDays(max_bytes=1)
            assert cache.ref(con, FIRST_DAY, FIRST_DAY + 2) is None
            assert cache.too_big == 1 and cache.bytes == 0

    def test_the_least_recently_used_entry_is_evicted_and_counted(self, service: Service) -> None:
        _, reader = stored(service, 12, 200)
        with reader as con:
            probe = WholeDays()
            probe.ref(con, FIRST_DAY - 1, FIRST_DAY + 1)
            probe.ref(con, FIRST_DAY, FIRST_DAY + 2)
            cache = WholeDays(max_bytes=probe.bytes - 1)  # room for one of the two
            assert cache.ref(con, FIRST_DAY - 1, FIRST_DAY + 1) is not None
            assert cache.ref(con, FIRST_DAY, FIRST_DAY + 2) is not None
            assert cache.evictions == 1 and cache.bytes <= cache.max_bytes
            cache.ref(con, FIRST_DAY, FIRST_DAY + 2)
            assert cache.hits == 1 and cache.builds == 2

    def test_a_plain_connection_has_no_cache(self, service: Service) -> None:
        import duckdb

        assert cache_of(duckdb.connect()) is None
