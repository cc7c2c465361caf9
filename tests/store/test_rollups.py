"""store/rollups.py: the aggregates stay exactly the sum of the stored rows (replays, old schemas, compaction)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from conftest import Service
from query_data import in_window, per_user, requests_for
from query_service import END, START, TRUTHS, WINDOWS, check_user

import user_metrics
from user_metrics.query.totals import totals as query_totals
from user_metrics.query.users import users as query_users
from user_metrics.store.writer import Store


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
